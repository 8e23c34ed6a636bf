# SPDX-License-Identifier: BSD-2-Clause
"""vac doctor's own-name check: the factory's name resolves to an address its
responder listens on, by vacquery_address; what it resolves to and what is local injected."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from vac.ops.checks import FAIL, OK, WARN
from vac.ops.namecheck import is_local, own_name

LOCAL = {"192.0.2.1", "2001:db8::1"}


def check(bind, records):
    settings = SimpleNamespace(factory_name="f1.example.com", vacquery_port=995,
                               vacquery_address=bind, factories=["f1", "f2.example.com"])
    table = dict(records, **{"192.0.2.1": ["192.0.2.1"], "2001:db8::1": ["2001:db8::1"]})

    def resolver(name, port):
        return [(a, port) for a in table.get(name, [])]
    return own_name(settings, resolver, lambda a: a in LOCAL)[0]


@pytest.mark.parametrize("bind,records,status", [
    ("", {"f1.example.com": ["2001:db8::1", "192.0.2.1"]}, OK),
    ("0.0.0.0", {"f1.example.com": ["192.0.2.1"]}, OK),
    ("0.0.0.0", {"f1.example.com": ["2001:db8::1", "192.0.2.1"]}, WARN),
    ("::", {"f1.example.com": ["192.0.2.1"]}, FAIL),
    ("2001:db8::1", {"f1.example.com": ["2001:db8::1"]}, OK),
    ("192.0.2.1", {"f1.example.com": ["2001:db8::1"]}, FAIL),
    ("", {"f1.example.com": ["198.51.100.7"]}, FAIL),       # not this host's address
    ("", {}, FAIL),                                          # does not resolve
])
def test_the_own_name_check(bind, records, status):
    found = check(bind, records)
    assert found.status == status, found.line()
    assert found.name == "own-name" and "f1.example.com" in found.detail


def test_loopback_is_local_and_a_documentation_address_is_not():
    assert is_local("127.0.0.1")
    assert not is_local("198.51.100.7")


def test_a_factory_alone_in_its_space_is_asked_by_no_one():
    settings = SimpleNamespace(factory_name="f1.example.com", vacquery_port=995,
                               vacquery_address="", factories=["f1.example.com"])
    found = own_name(settings, lambda name, port: [], lambda a: False)[0]
    assert found.status == OK and "no other factory" in found.detail
