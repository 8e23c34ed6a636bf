# SPDX-License-Identifier: BSD-2-Clause
"""A mixed space: what an original Vac 03 factory sends, byte for byte, through our
decoder, client, census and shares; hostile variants refused with the datagram named; our
empty slot, running machine and shutdown times as the original reports them; our responder
and the original answering one query together.

The datagrams below were captured from the original's own responder functions
(makeMachinetypeResponses, makeMachineResponse, makeFactoryResponse of Vac 03.01 under
Python 2.7) answering a query with the cookie sha256("salt" + "vac03.example.org"), on a
state directory in the original's layout: slot 00 a running alpha machine of 2 processors
(allocated_cpu 2), slot 01 empty, slot 02 a beta machine that finished with
"300 No more work". Python 2 sums the processors as floats, hence "running_processors": 2.0.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from vac.machine import heartbeat
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
from vac.machine.finishes import update_finishes
from vac.space import census, client, render, replies
from vac.space import censusdata
from vac.space import messages as m
from vac.space import responder as r

SPACE = "space.example.org"
SALT = "salt"
FACTORY = "vac03.example.org"

MACHINETYPE_STATUS = [  # alpha (a 2-processor machine running), beta (last: an abort)
    (
        b'{"site": "example.org", "daemon_version": "Vac 03.01+pre00 vacd-responder", "vac'
        b'query_version": "VacQuery 01.03", "shutdown_machine": null, "max_wallclock_secon'
        b'ds": 86400, "running_processors": 2.0, "bytes_per_processor": 2147483648, "machi'
        b'netype": "alpha", "space": "space.example.org", "running_hs06": 2.0, "factory": '
        b'"vac03.example.org", "vac_version": "Vac 03.01+pre00 vacd-responder", "shutdown_'
        b'time": null, "time_sent": 1796559482, "fqan": "/atlas/Role=production", "cookie"'
        b': "b35b6f9936be120f1f1ac8c36ad3598313a2e62df2258430aab4e1799f4cc33c", "running_c'
        b'pus": 2.0, "num_before_fizzle": 1, "num_machinetypes": 2, "running_machines": 1,'
        b' "max_processors": 2, "shutdown_message": null, "message_type": "machinetype_sta'
        b'tus"}'),
    (
        b'{"site": "example.org", "daemon_version": "Vac 03.01+pre00 vacd-responder", "vac'
        b'query_version": "VacQuery 01.03", "shutdown_machine": "vac03-02.example.org", "m'
        b'ax_wallclock_seconds": 172800, "running_processors": 0, "bytes_per_processor": 2'
        b'147483648, "machinetype": "beta", "space": "space.example.org", "running_hs06": '
        b'0.0, "factory": "vac03.example.org", "vac_version": "Vac 03.01+pre00 vacd-respon'
        b'der", "shutdown_time": 1796559478, "time_sent": 1796559482, "cookie": "b35b6f993'
        b'6be120f1f1ac8c36ad3598313a2e62df2258430aab4e1799f4cc33c", "running_cpus": 0, "nu'
        b'm_before_fizzle": 0, "num_machinetypes": 2, "running_machines": 0, "max_processo'
        b'rs": 1, "shutdown_message": "300 No more work", "message_type": "machinetype_sta'
        b'tus"}'),
]
MACHINE_STATUS = [  # a running alpha machine, an empty slot, a finished beta one
    (
        b'{"site": "example.org", "daemon_version": "Vac 03.01+pre00 vacd-responder", "vac'
        b'query_version": "VacQuery 01.03", "machine_model": "docker", "created_time": 179'
        b'6559448, "num_processors": 2, "machinetype": "alpha", "uuid": "job-a", "space": '
        b'"space.example.org", "num_cpus": 2, "factory": "vac03.example.org", "machine": "'
        b'vac03-00.example.org", "state": "Running", "vac_version": "Vac 03.01+pre00 vacd-'
        b'responder", "time_sent": 1796559482, "hs06": 2.0, "shutdown_time": null, "num_ma'
        b'chines": 3, "heartbeat_time": 1796559478, "fqan": "/atlas/Role=production", "coo'
        b'kie": "b35b6f9936be120f1f1ac8c36ad3598313a2e62df2258430aab4e1799f4cc33c", "start'
        b'ed_time": 1796559478, "cpu_seconds": 1234, "cpu_percentage": 87.5, "shutdown_mes'
        b'sage": null, "message_type": "machine_status"}'),
    (
        b'{"site": "example.org", "daemon_version": "Vac 03.01+pre00 vacd-responder", "vac'
        b'query_version": "VacQuery 01.03", "machine_model": null, "created_time": null, "'
        b'num_processors": 0, "machinetype": null, "uuid": null, "space": "space.example.o'
        b'rg", "num_cpus": 0, "factory": "vac03.example.org", "machine": "vac03-01.example'
        b'.org", "state": "Shut down", "vac_version": "Vac 03.01+pre00 vacd-responder", "t'
        b'ime_sent": 1796559482, "hs06": 0.0, "shutdown_time": null, "num_machines": 3, "h'
        b'eartbeat_time": null, "cookie": "b35b6f9936be120f1f1ac8c36ad3598313a2e62df225843'
        b'0aab4e1799f4cc33c", "started_time": null, "cpu_seconds": 0, "cpu_percentage": 0,'
        b' "shutdown_message": null, "message_type": "machine_status"}'),
    (
        b'{"site": "example.org", "daemon_version": "Vac 03.01+pre00 vacd-responder", "vac'
        b'query_version": "VacQuery 01.03", "machine_model": "docker", "created_time": 179'
        b'6559448, "num_processors": 1, "machinetype": "beta", "uuid": "job-b", "space": "'
        b'space.example.org", "num_cpus": 1, "factory": "vac03.example.org", "machine": "v'
        b'ac03-02.example.org", "state": "Shut down", "vac_version": "Vac 03.01+pre00 vacd'
        b'-responder", "time_sent": 1796559482, "hs06": 1.0, "shutdown_time": 1796559478, '
        b'"num_machines": 3, "heartbeat_time": 1796559478, "cookie": "b35b6f9936be120f1f1a'
        b'c8c36ad3598313a2e62df2258430aab4e1799f4cc33c", "started_time": 1796559478, "cpu_'
        b'seconds": 0, "cpu_percentage": 0, "shutdown_message": "300 No more work", "messa'
        b'ge_type": "machine_status"}'),
]
FACTORY_STATUS = (
    b'{"load_average": 1.32, "root_disk_avail_inodes": 16355107, "total_cpus": 4, "time_se'
    b'nt": 1796559482, "factory_heartbeat_time": 1796559478, "max_hs06": 4.0, "mjf_heartbe'
    b'at_time": 0, "root_disk_avail_kb": 80477496, "daemon_version": "Vac 03.01+pre00 vacd'
    b'-responder", "vacquery_version": "VacQuery 01.03", "cookie": "b35b6f9936be120f1f1ac8'
    b'c36ad3598313a2e62df2258430aab4e1799f4cc33c", "boot_time": 1796538933, "vac_disk_avai'
    b'l_inodes": 16355107, "total_hs06": 4.0, "max_machines": 4, "running_processors": 2, '
    b'"site": "example.org", "os_issue": "6.18.44-fc-v1300", "swap_used_kb": 0, "running_c'
    b'pus": 2, "running_machines": 1, "space": "space.example.org", "kernel_version": "6.1'
    b'8.44-fc-v1300", "running_hs06": 2.0, "daemon_disk_avail_kb": 80477496, "mem_used_kb"'
    b': 4254064, "factory": "vac03.example.org", "vac_disk_avail_kb": 80477496, "mem_total'
    b'_kb": 24683772, "total_machines": 4, "swap_free_kb": 0, "vac_version": "Vac 03.01+pr'
    b'e00 vacd-responder", "responder_heartbeat_time": 1796559478, "max_processors": 4, "m'
    b'ax_cpus": 4, "daemon_disk_avail_inodes": 16355107, "message_type": "factory_status",'
    b' "metadata_heartbeat_time": 0}')


def decoded(data: bytes, kind: str) -> dict:
    return m.decode_reply(data, SPACE, kind, SALT)


def test_the_originals_machinetype_status_is_accepted_floats_as_integers():
    alpha, beta = (decoded(d, m.MACHINETYPES) for d in MACHINETYPE_STATUS)
    assert alpha["running_processors"] == 2 and type(alpha["running_processors"]) is int
    assert alpha["running_cpus"] == 2 and type(alpha["running_cpus"]) is int
    assert alpha["running_hs06"] == 2.0 and alpha["running_machines"] == 1
    assert alpha["num_before_fizzle"] == 1 and alpha["fqan"] == "/atlas/Role=production"
    assert beta["running_processors"] == 0 and beta["shutdown_message"] == "300 No more work"
    assert beta["shutdown_machine"] == "vac03-02.example.org"


def test_the_originals_machine_and_factory_status_are_accepted():
    running, empty, finished = (decoded(d, m.MACHINES) for d in MACHINE_STATUS)
    assert running["num_processors"] == 2 and running["cpu_percentage"] == 87.5
    assert running["hs06"] == 2.0 and running["state"] == "Running"
    assert (empty["cpu_seconds"], empty["cpu_percentage"], empty["hs06"]) == (0, 0, 0.0)
    assert finished["shutdown_message"] == "300 No more work"
    factory = decoded(FACTORY_STATUS, m.FACTORY)
    assert factory["running_processors"] == 2 and factory["max_processors"] == 4


def test_the_originals_census_counts_in_shares_and_backoff():
    merged = censusdata.merge_census(decoded(d, m.MACHINETYPES) for d in MACHINETYPE_STATUS)
    assert merged["alpha"].running_processors == 2 and merged["alpha"].running_hs06 == 2.0
    assert merged["alpha"].running_machines == 1 and merged["alpha"].num_before_fizzle == 1
    assert merged["beta"].last_abort_time is not None       # its abort backs beta off


def hostile(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1
    return data.replace(old, new)


@pytest.mark.parametrize("old, new, why", [
    (b'"running_cpus": 2.0', b'"running_cpus": 2.5', "running_cpus is not an int: '2.5'"),
    (b'"running_processors": 2.0', b'"running_processors": 1e300',
     "running_processors is not an int"),
    (b'"running_processors": 2.0', b'"running_processors": true',
     "running_processors is not an int: 'True'"),
    (b'"running_machines": 1', b'"running_machines": "1"', "running_machines is not an int"),
    (b'"num_machinetypes": 2', b'"num_machinetypes": 2.5', "num_machinetypes is not an int"),
    (b'"running_hs06": 2.0', b'"running_hs06": Infinity', "not JSON"),
])
def test_a_non_integral_or_hostile_number_is_refused_naming_the_datagram(old, new, why):
    data = hostile(MACHINETYPE_STATUS[0], old, new)
    with pytest.raises(m.MessageError, match=why) as refused:
        decoded(data, m.MACHINETYPES)
    if "JSON" not in why:
        assert str(refused.value).startswith(
            "machinetype_status alpha from vac03.example.org: ")
        assert refused.value.ours


class OriginalFactory:
    """A UDP socket on loopback that answers any query as the original did: the captured
    datagrams, as they are (the client's salt is fixed to the captured cookie's)."""

    def __init__(self, replies):
        self.replies = replies
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping:
            try:
                data, sender = self.sock.recvfrom(1024)
            except socket.timeout:
                continue
            kind = json.loads(data)["message_type"]
            for reply in self.replies[kind]:
                self.sock.sendto(reply, sender)

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def original(monkeypatch):
    monkeypatch.setattr(m, "new_salt", lambda: SALT)
    factory = OriginalFactory({"machinetypes_query": MACHINETYPE_STATUS,
                               "machines_query": MACHINE_STATUS,
                               "factory_query": [FACTORY_STATUS]})
    yield factory
    factory.stop()


def ask(kind, factory):
    return client.query(kind, SPACE, [FACTORY], 5.0,
                        addresses={FACTORY: factory.sock.getsockname()})


def test_vac_machinetype_shows_an_original_factory_with_a_running_machine(original):
    result = ask(m.MACHINETYPES, original)
    assert result.silent() == [] and result.refused == []
    assert sorted(result.replies[FACTORY]) == ["alpha", "beta"]
    lines = render.machinetype_lines(result, "alpha")
    assert lines[-1] == "Total: 1 running alpha machines, 2.0 HS06 on 1 factories"
    machines = ask(m.MACHINES, original)
    assert len(machines.replies[FACTORY]) == 3 and machines.short() == []


def test_the_space_poll_counts_an_original_factory(original, make_config):
    config = make_config(f"""
[settings]
vac_space = {SPACE}
factory_name = ours.example.org
factories = ours.example.org {FACTORY}
enable_fake_backend = true
host_processors = 2

[machinetype alpha]
machine_model = fake
target_share = 1

[machinetype beta]
machine_model = fake
target_share = 1
""")

    def query(kind, space, names, timeout, **kw):
        assert names == [FACTORY]
        return client.query(kind, space, names, 5.0,
                            addresses={FACTORY: original.sock.getsockname()})
    poll = census.SpacePoll(query=query)
    poll._start_census = lambda *a: None
    got = poll(config, {}, 1_796_559_500.0)
    assert poll.silent == []
    assert got["alpha"].running_processors == 2 and got["alpha"].running_hs06 == 2.0
    assert got["beta"].shutdown_message == "300 No more work"


def test_a_refused_reply_is_reported_by_the_client(monkeypatch):
    monkeypatch.setattr(m, "new_salt", lambda: SALT)
    bad = hostile(MACHINETYPE_STATUS[0], b'"running_cpus": 2.0', b'"running_cpus": 2.5')
    factory = OriginalFactory({"machinetypes_query": [bad, MACHINETYPE_STATUS[1]]})
    try:
        result = client.query(m.MACHINETYPES, SPACE, [FACTORY], 0.6,
                              addresses={FACTORY: factory.sock.getsockname()})
    finally:
        factory.stop()
    assert result.short() == [(FACTORY, 1, 2)]
    assert result.refused_count >= 1
    assert result.refused[0] == ("from 127.0.0.1: machinetype_status alpha from "
                                 "vac03.example.org: running_cpus is not an int: '2.5'")


def test_our_empty_slot_is_reported_as_the_original_reports_one(make_config):
    config = make_config("""
[settings]
vac_space = space.example.org
factory_name = ours.example.org
enable_fake_backend = true
host_processors = 1

[machinetype alpha]
machine_model = fake
target_share = 1
""")
    ours = replies.machine_statuses(config)[0]
    original = json.loads(MACHINE_STATUS[1])
    for name in ("cpu_seconds", "cpu_percentage", "hs06", "num_cpus", "num_processors",
                 "state", "machinetype", "uuid", "created_time", "started_time",
                 "heartbeat_time", "shutdown_message", "shutdown_time", "machine_model"):
        assert ours[name] == original[name] and type(ours[name]) is type(original[name]), name


@pytest.mark.parametrize("beat, cpu, percent", [("1234 87.5\n", 1234, 87.5),
                                                ("1234\n", 1234, 0), ("0.0 0.0\n", 0, 0.0)])
def test_our_running_machine_is_typed_as_the_original_types_one(make_config, paths, beat, cpu,
                                                                 percent):
    """Whole CPU seconds as an int, the heartbeat's CPU % as a float, 0 when it has none (the
    original's reading of a heartbeat without a percentage)."""
    config = make_config("""
[settings]
vac_space = space.example.org
factory_name = ours.example.org
enable_fake_backend = true
host_processors = 2

[machinetype alpha]
machine_model = fake
target_share = 1
""")
    slot = "ours-00.example.org"
    write_slot_record(paths, slot, SlotRecord(1796559448, "alpha", "fake"))
    d = MachineDir.create(paths, 1796559448, "alpha", slot)
    d.write("jobfeatures/allocated_cpu", "2")
    d.write_started(1796559478.0)
    d.write(heartbeat.NAME, beat, mtime=1796559478.0)
    ours = replies.machine_statuses(config)[0]
    original = json.loads(MACHINE_STATUS[0])
    assert (ours["cpu_seconds"], ours["cpu_percentage"]) == (cpu, percent)
    assert type(ours["cpu_seconds"]) is int and type(ours["cpu_percentage"]) is type(percent)
    for name in ("hs06", "num_cpus", "num_processors", "state", "created_time",
                 "started_time", "heartbeat_time"):
        assert ours[name] == original[name] and type(ours[name]) is type(original[name]), name


def test_a_mixed_space_our_responder_and_the_original_counted_together(original, make_config,
                                                                       paths):
    """Our responder (real socket, its own thread, a running alpha machine on disk) and a
    factory answering as the original: one query each, every reply decoded, the census sums
    both, the original's abort of beta is there, and `vac machinetype` totals both."""
    config = make_config(f"""
[settings]
vac_space = {SPACE}
factory_name = ours.example.org
enable_fake_backend = true
host_processors = 2

[machinetype alpha]
machine_model = fake
target_share = 1

[machinetype beta]
machine_model = fake
target_share = 1
""")
    slot = "ours-00.example.org"
    d = MachineDir.create(paths, 1796559448, "alpha", slot)
    write_slot_record(paths, slot, SlotRecord(d.created, "alpha", "fake"))
    d.write_started()                     # the wall clock: running, heartbeat fresh
    d.write_first_heartbeat()
    ours = r.Responder(lambda: config, address="127.0.0.1", port=0)
    ours.start()
    try:
        assert ours.bound.wait(30)
        where = {FACTORY: original.sock.getsockname(),
                 "ours.example.org": ("127.0.0.1", ours.bound_port)}
        types = client.query(m.MACHINETYPES, SPACE, sorted(where), 10.0, addresses=where)
        machines = client.query(m.MACHINES, SPACE, sorted(where), 10.0, addresses=where)
    finally:
        ours.stop()
    assert types.silent() == [] and types.refused == [] and types.short() == []
    merged = censusdata.merge_census(reply for f in types.replies.values()
                                     for reply in f.values())
    assert merged["alpha"].running_machines == 2 and merged["alpha"].running_processors == 3
    assert merged["beta"].last_abort_time is not None
    assert render.machinetype_lines(types, "alpha")[-1] == (
        "Total: 2 running alpha machines, 3.0 HS06 on 2 factories")
    assert machines.short() == [] and len(machines.replies[FACTORY]) == 3
    assert len(machines.replies["ours.example.org"]) == 2


def original_shutdown_time(directory: MachineDir):
    """The shutdown_time the original sends for a machine that finished with a coded message
    (makeMachineResponse through its VacSlot, makeMachinetypeResponses through finishes/):
    int(st_ctime) of its joboutputs/shutdown_message."""
    return int(os.stat(directory.file("joboutputs/shutdown_message")).st_ctime)


@pytest.mark.parametrize("dated", [1_600_000_000, 9_999_999_999])   # back and ahead
def test_a_message_whose_mtime_is_not_its_ctime_is_timed_as_the_original_times_it(
        make_config, paths, dated):
    """A guest dated its shutdown_message (its mtime) away from when it landed (its ctime):
    machine_status and machinetype_status send the ctime's second, as the original does."""
    config = make_config("""
[settings]
vac_space = space.example.org
factory_name = ours.example.org
enable_fake_backend = true
host_processors = 1

[machinetype beta]
machine_model = fake
target_share = 1
""")
    slot, created = "ours-00.example.org", int(time.time()) - 7200
    write_slot_record(paths, slot, SlotRecord(created, "beta", "fake"))
    d = MachineDir.create(paths, created, "beta", slot)
    d.write_started()
    d.write("joboutputs/shutdown_message", "300 No more work", mtime=dated)
    d.write("finished", "")
    update_finishes(paths, d)
    st = os.lstat(d.file("joboutputs/shutdown_message"))
    assert int(st.st_mtime) == dated != int(st.st_ctime)
    machine = replies.machine_statuses(config)[0]
    beta = replies.machinetype_statuses(config, time.time())[0]
    assert (machine["state"], machine["shutdown_message"]) == ("Shut down", "300 No more work")
    assert machine["shutdown_time"] == original_shutdown_time(d)
    assert (beta["machinetype"], beta["shutdown_message"]) == ("beta", "300 No more work")
    assert beta["shutdown_time"] == original_shutdown_time(d)
    assert beta["shutdown_machine"] == slot
