# SPDX-License-Identifier: BSD-2-Clause
"""VacQuery 01.03 messages against datagrams written by hand from the original's field
lists (the client's queries, the responder's replies), both ways: what an original Vac 03
client or factory sends is accepted, what we send has the original's fields and version, and
hostile datagrams are rejected."""
from __future__ import annotations

import hashlib
import json

import pytest

from vac.space import messages as m

SPACE = "vac01.example.com"
SALT = "c2FsdHNhbHRzYWx0c2FsdHNhbHRzYWx0c2FsdHNhbHQ="
COOKIE = hashlib.sha256((SALT + "f2.example.com").encode()).hexdigest()


def original_query(**over) -> bytes:
    """A machines query as the original's client sent it (json.dumps of a Python 2 dict)."""
    query = {"vac_version": "Vac 03.00.02 vac", "vacquery_version": "VacQuery 01.03",
             "space": SPACE, "cookie": COOKIE, "method": "machines",
             "message_type": "machines_query"}
    query.update(over)
    return json.dumps({k: v for k, v in query.items() if v is not None}).encode()


def original_machine_status(**over) -> dict:
    reply = {"message_type": "machine_status", "vac_version": "Vac 03.00.02 vacd-responder",
             "daemon_version": "Vac 03.00.02 vacd-responder",
             "vacquery_version": "VacQuery 01.03", "cookie": COOKIE, "space": SPACE,
             "factory": "f2.example.com", "time_sent": 1500000000, "site": "example.com",
             "num_machines": 2, "machine": "f2-00.example.com", "state": "Running",
             "machine_model": "cernvm3", "uuid": "1234-5678", "created_time": 1499990000,
             "started_time": 1499990060, "heartbeat_time": 1499999990, "num_cpus": 8,
             "num_processors": 8, "cpu_seconds": 70000.5, "cpu_percentage": 99.25,
             "hs06": 80.0, "machinetype": "lhcb", "shutdown_message": None,
             "shutdown_time": None, "fqan": "/lhcb/Role=NULL/Capability=NULL"}
    reply.update(over)
    return reply


def test_the_cookie_is_sha256_of_salt_and_factory_name():
    assert m.cookie_for(SALT, "f2.example.com") == COOKIE
    assert len(m.new_salt()) == 44 and m.new_salt() != m.new_salt()


def test_our_queries_have_the_original_fields_and_version():
    for kind, method in ((m.MACHINES, "machines"), (m.FACTORY, "factories")):
        query = json.loads(m.encode(m.make_query(kind, SPACE, COOKIE, "Vac 04.00.00 vac")))
        assert query == {"vac_version": "Vac 04.00.00 vac",
                         "vacquery_version": "VacQuery 01.03", "space": SPACE,
                         "cookie": COOKIE, "message_type": kind, "method": method}
    mt = json.loads(m.encode(m.make_query(m.MACHINETYPES, SPACE, COOKIE, "Vac 04.00.00 x")))
    assert mt["message_type"] == "machinetypes_query" and "method" not in mt


def test_an_original_clients_queries_are_answered_legacy_methods_too():
    assert m.decode_query(original_query(), SPACE) == (m.MACHINES, COOKIE)
    assert m.decode_query(original_query(message_type=None, method="factories"),
                          SPACE) == (m.FACTORY, COOKIE)
    assert m.decode_query(original_query(message_type=None, method="machinetypes"),
                          SPACE) == (m.MACHINETYPES, COOKIE)
    assert m.decode_query(original_query(vacquery_version="VacQuery 01.02",
                                         message_type="factory_query"), SPACE)[0] == m.FACTORY


@pytest.mark.parametrize("data, why", [
    (original_query(space="other.example.com"), "space"),
    (original_query(cookie=None), "cookie"),
    (original_query(cookie="x" * 64), "cookie"),
    (original_query(cookie=12345), "cookie"),
    (original_query(vacquery_version="VacQuery 02.00"), "vacquery_version"),
    (original_query(vacquery_version=None), "vacquery_version"),
    (original_query(message_type="reboot_query"), "message_type"),
    (original_query(message_type=None, method="shell"), "message_type"),
    (b"\xff\xfe garbage", "JSON"),
    (b"[1, 2, 3]", "object"),
    (b'{"cookie": NaN}', "JSON"),
    (b"{" * 600, "JSON"),
    (original_query(vac_version="x" * 1100), "limit"),
])
def test_hostile_queries_are_rejected(data, why):
    with pytest.raises(m.MessageError, match=why):
        m.decode_query(data, SPACE)


def test_an_original_factorys_machine_status_is_accepted_as_sent():
    reply = original_machine_status()
    assert m.decode_reply(json.dumps(reply).encode(), SPACE, m.MACHINES, SALT) == reply


def test_an_original_machinetype_status_is_accepted():
    reply = {"message_type": "machinetype_status", "vac_version": "Vac 03.00.02 vacd-responder",
             "vacquery_version": "VacQuery 01.03", "cookie": COOKIE, "space": SPACE,
             "factory": "f2.example.com", "time_sent": 1500000000, "site": "example.com",
             "num_machinetypes": 1, "machinetype": "lhcb", "bytes_per_processor": 2147483648,
             "running_hs06": 80.0, "running_machines": 1, "running_cpus": 8,
             "running_processors": 8, "num_before_fizzle": 0,
             "shutdown_message": "300 No more work", "shutdown_time": 1499999000,
             "shutdown_machine": "f2-01.example.com", "max_wallclock_seconds": 172800,
             "max_processors": 8}
    got = m.decode_reply(json.dumps(reply).encode(), SPACE, m.MACHINETYPES, SALT)
    assert got["shutdown_message"] == "300 No more work"


@pytest.mark.parametrize("change, why", [
    ({"cookie": "0" * 64}, "cookie"),
    ({"factory": "f3.example.com"}, "cookie"),      # the cookie names f2, not f3
    ({"space": "x.example.com"}, "space"),
    ({"message_type": "factory_status"}, "message_type"),
    ({"num_machines": "2"}, "num_machines"),
    ({"num_machines": 0}, "out of range"),
    ({"num_machines": 10 ** 6}, "out of range"),
    ({"cpu_seconds": True}, "cpu_seconds"),
    ({"hs06": "80"}, "hs06"),
    ({"state": ["Running"]}, "state"),
    ({"shutdown_message": "x" * 2000}, "shutdown_message"),
    ({"machine": None}, "machine"),
])
def test_replies_of_the_wrong_kind_cookie_or_types_are_rejected(change, why):
    reply = original_machine_status(**change)
    with pytest.raises(m.MessageError, match=why):
        m.decode_reply(json.dumps(reply).encode(), SPACE, m.MACHINES, SALT)


def test_a_reply_missing_a_required_field_is_rejected():
    reply = original_machine_status()
    del reply["heartbeat_time"]
    with pytest.raises(m.MessageError, match="without heartbeat_time"):
        m.decode_reply(json.dumps(reply).encode(), SPACE, m.MACHINES, SALT)


def test_encode_refuses_what_a_client_would_not_read():
    with pytest.raises(m.MessageError, match="exceeds"):
        m.encode({"message_type": "machine_status", "pad": "x" * m.REPLY_LIMIT})


def test_our_reply_header_has_every_common_field_of_the_original():
    header = m.reply_header(m.FACTORY, COOKIE, SPACE, "f1.example.com", "example.com",
                            m.version_string("04.00.00", "vacd-responder"), 1500000000)
    assert set(header) == set(m.COMMON_FIELDS)
    assert header["message_type"] == "factory_status"
    assert header["vacquery_version"] == "VacQuery 01.03"
    assert header["vac_version"] == header["daemon_version"] == "Vac 04.00.00 vacd-responder"
