# SPDX-License-Identifier: BSD-2-Clause
"""A request the metadata service does not serve is logged once, naming path and machine, so
the next unknown client is a one-line diagnosis."""
from __future__ import annotations

import logging


from metadatamachines import FACTORY, make_machine

from vac.backends.libvirt import metadata, unserved


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_an_unserved_path_is_logged_once_with_the_machine(paths, caplog):
    make_machine(paths, 3, "uuid-3")
    service = metadata.MetadataService(paths, FACTORY)
    caplog.set_level(logging.INFO)
    assert service.get("169.254.169.3", "/latest/meta-data/instance-id").status == 200
    assert warnings(caplog) == []
    for _ in range(3):
        assert service.get("169.254.169.3", "/openstack/latest/password").status == 404
    lines = warnings(caplog)
    assert len(lines) == 1
    assert "/openstack/latest/password" in lines[0] and "f1-03.example.com" in lines[0]
    assert "169.254.169.3" in lines[0] and "404" in lines[0]
    service.get("10.0.0.1", "/latest/meta-data/")          # not a slot address: 404, named so
    assert "no slot of this factory" in warnings(caplog)[-1]


def test_hostile_paths_are_escaped_cut_and_bounded(caplog):
    caplog.set_level(logging.INFO)
    noted = unserved.Unserved(max_noted=3)
    assert noted.note("GET", "p", "m", "/\x1b[31m" + "a" * 500, 404)
    line = warnings(caplog)[-1]
    assert "\x1b" not in line and "\\x1b" in line and len(line) < 400
    for n in range(10):
        noted.note("GET", "p", "m", f"/x{n}", 404)
    lines = warnings(caplog)
    assert len(lines) == 4 and "further ones are not logged" in lines[-1]
