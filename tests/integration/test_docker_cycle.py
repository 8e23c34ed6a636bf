# SPDX-License-Identifier: BSD-2-Clause
"""Docker machines through vacd's cycle on the real engine: Factory.run_cycle() with the real
clock and the real BackendPool fills every slot in one cycle (MJF, user_data, limits), finishes
what exits (heartbeat CPU, finishes/, removal, refill), backs off after an OOM kill, leaves
machines alone while the engine is gone, adopts after a SIGKILLed vacd, and removes orphans.

Each test has a factory_name of its own, so left-over or parallel containers never collide;
every container a test makes is removed by label (or id) in its teardown.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from typing import Dict

import pytest
from docker_engine import IMAGE, engine_ready, gone, inspect, sdk
from dockerfactory import MT, SPACE, DockerFactory, all_exited
from socket_proxy import SocketProxy
from vacd_process import cycles_logged, start_vacd, stop
from waiting import Stopwatch, wait_until

from vac.backends.docker import cgroupparent
from vac.host.cgroups import Cgroups
from vac.machine.finishes import last_outcome

pytestmark = [pytest.mark.docker]

# Copies what the machine sees into joboutputs, then runs on.
MJF_PAYLOAD = r"""#!/bin/sh
cd "$JOBOUTPUTS"
echo "##user_data_machine_hostname## ##user_data_uuid## ##user_data_space##" > userdata_values
cat "$MACHINEFEATURES/total_cpu" > total_cpu
cat "$JOBFEATURES/allocated_cpu" > allocated_cpu
cat "$JOBFEATURES/job_id" > job_id
hostname > hostname
exec sleep 300
"""

# Burns about a second of CPU, says it succeeded, exits.
FINISHING_PAYLOAD = r"""#!/bin/sh
cd "$JOBOUTPUTS"
timeout 1 sh -c 'while :; do :; done'
echo "200 Success from ##user_data_machine_hostname##" > shutdown_message
exit 0
"""

OOM_PAYLOAD = "#!/bin/sh\necho before-oom\nhead -c 300m /dev/zero | tail\nexit 0\n"
SLEEP_PAYLOAD = "#!/bin/sh\nexec sleep 300\n"
OOM_MESSAGE = "700 Vac: container killed by the OOM killer (memory limit 16 MiB)"


@pytest.fixture
def dock(tmp_path, make_config):
    engine_ready()
    world = DockerFactory(tmp_path, make_config)
    yield world
    world.remove_all()


# (a) one cycle fills every slot --------------------------------------------------------------

def test_one_cycle_starts_a_container_in_every_slot_with_mjf_user_data_and_limits(dock):
    dock.write(MJF_PAYLOAD, slots=3, mb=64)
    report = dock.cycle()
    names = dock.slots(3)
    assert sorted(report.created) == names and report.errors == []
    found = dock.containers()
    assert sorted(found) == names
    assert all(c["State"] == "running" for c in found.values())

    def out(name: str, key: str) -> str:
        return dock.dir(name).read(f"joboutputs/{key}") or ""

    assert wait_until(lambda: all(out(n, "hostname") for n in names))
    for name in names:
        d = dock.dir(name)
        job_id = d.read("jobfeatures/job_id").strip()
        assert out(name, "total_cpu").strip() == "1"
        assert out(name, "allocated_cpu").strip() == "1"
        assert out(name, "job_id").strip() == job_id      # what the machine read is final
        assert out(name, "hostname").strip() == name
        assert out(name, "userdata_values") == f"{name} {job_id} {SPACE}\n"
        assert d.read("user_data").startswith(f"#!/bin/sh\ncd \"$JOBOUTPUTS\"\necho \"{name} ")
        container_id = d.read_backend_record()["container_id"]
        assert found[name]["Id"] == container_id
        attrs = inspect(container_id)
        hc = attrs["HostConfig"]
        assert attrs["State"]["Running"] is True and attrs["Config"]["Hostname"] == name
        assert hc["CpuShares"] == 1024 * 1
        assert hc["Memory"] == 64 * 1024 * 1024
        assert hc["PidsLimit"] == 200
        assert hc["SecurityOpt"] == ["no-new-privileges"] and hc["Privileged"] is False
        assert attrs["Config"]["Labels"]["vac.machine"] == name
        assert d.started is not None and d.finished is None
    again = dock.cycle()    # our own machines are neither zombies nor touched
    assert again.created == again.finished == again.destroyed == again.zombies == []
    assert {n: c["Id"] for n, c in dock.containers().items()} == \
        {n: c["Id"] for n, c in found.items()}


# (b) a machine that exits is finished and its slot refilled ----------------------------------

def test_exited_machines_are_finished_accounted_removed_and_refilled(dock):
    dock.write(FINISHING_PAYLOAD, slots=2)
    names = dock.slots(2)
    first = dock.cycle()
    assert sorted(first.created) == names
    old = {n: dock.dir(n) for n in names}
    old_ids = {n: d.read_backend_record()["container_id"] for n, d in old.items()}
    parents = [d.read_backend_record()["cgroup_parent"] for d in old.values()]
    assert wait_until(lambda: all_exited(dock, 2)), dock.containers()
    report = dock.cycle()
    assert sorted(report.finished) == names and report.errors == []
    assert report.destroyed == [] and report.zombies == []
    for name, d in old.items():
        assert d.finished is not None
        assert d.shutdown_message == f"200 Success from {name}"
        beat = d.read("heartbeat")                  # whole seconds, as the original wrote
        assert beat.split(" ")[0].strip().isdigit(), beat
        cpu = d.read_backend_record()["cpu_seconds"]  # the unrounded final CPU seconds
        assert cpu > 0.1 and int(beat.split()[0]) == int(cpu), (beat, cpu)
        assert gone(old_ids[name])
    for parent in parents:                    # the machine's own parent, path or slice
        assert cgroupparent.is_ours(parent), parent
        assert cgroupparent.cpu_seconds(parent, Cgroups()) is None, f"{parent} left behind"
    newest = max(old.values(), key=lambda d: (d.created, d.name))
    record = open(dock.load().settings.paths.finish_record(MT)).read().split()
    assert record[:2] == [str(newest.created), MT]
    outcome = last_outcome(dock.load().settings.paths, MT)
    assert outcome is not None and outcome.message.startswith("200 Success")
    assert sorted(report.created) == names                  # refilled in the same cycle
    new_ids = {n: dock.dir(n).read_backend_record()["container_id"] for n in names}
    assert set(new_ids.values()).isdisjoint(old_ids.values())
    assert sorted(dock.containers()) == names


# (c) OOM: a coded 700 message and backoff ----------------------------------------------------

def test_oom_killed_machine_is_finished_with_700_and_its_machinetype_backs_off(dock):
    dock.write(OOM_PAYLOAD, slots=1, mb=16)
    name = dock.slot(0)
    assert dock.cycle().created == [name]
    d = dock.dir(name)
    assert wait_until(lambda: all_exited(dock, 1)), dock.containers()
    report = dock.cycle()
    assert report.finished == [name] and report.created == []
    assert d.finished is not None
    assert d.shutdown_message == OOM_MESSAGE
    assert "before-oom" in d.read("console.log")
    assert "backoff" in report.idle[name], report.idle
    assert dock.containers() == {}
    assert dock.cycle().created == []                      # still backing off


# (d) the engine going away mid-run -----------------------------------------------------------

def test_engine_gone_or_hanging_leaves_machines_alone_then_management_resumes(dock, tmp_path,
                                                                               caplog):
    proxy = SocketProxy(str(tmp_path / "engine.sock"))
    proxy.start()
    try:
        dock.write(SLEEP_PAYLOAD, slots=3, url=f"unix://{proxy.path}", timeout=2,
                   extra_settings="max_creations_per_cycle = 2")
        names = dock.slots(3)
        first = dock.cycle()
        assert sorted(first.created) == names[:2]
        assert "max_creations_per_cycle" in first.idle[names[2]]
        ids = {n: c["Id"] for n, c in dock.containers().items()}
        assert sorted(ids) == names[:2]
        proxy.stop()                                       # the engine vanishes
        unavailable = []                                   # each such cycle's seconds
        for hanging in (False, True):
            if hanging:
                proxy.hanging = True                       # accepts, never answers
                proxy.start()
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                start = time.monotonic()
                report = dock.cycle()
                unavailable.append(time.monotonic() - start)
            assert report.created == report.finished == report.destroyed == [], report
            assert report.zombies == [] and report.errors == [], report
            assert "backend docker unavailable" in report.idle[names[2]], report.idle
            assert "Docker engine not reachable" in report.idle[names[2]]
            assert "backend docker unavailable this cycle" in caplog.text
            summary = json.load(open(dock.load().settings.paths.plan))
            assert sorted(summary["unmanaged"]) == names[:2]
            for name in names[:2]:
                assert dock.dir(name).finished is None
                assert dock.dir(name).shutdown_message is None
            assert not os.path.exists(dock.load().settings.paths.slot_record(names[2]))
            assert {n: c["Id"] for n, c in dock.containers().items()} == ids
            assert all(c["State"] == "running" for c in dock.containers().values())
        proxy.stop()
        proxy.hanging = False
        proxy.start()                                      # the engine is back
        report = dock.cycle()
        assert report.created == [names[2]], report
        assert report.finished == report.destroyed == report.zombies == report.errors == []
        now = {n: c["Id"] for n, c in dock.containers().items()}
        assert {n: now[n] for n in names[:2]} == ids
        assert all(c["State"] == "running" for c in dock.containers().values())
        assert dock.dir(names[0]).heartbeat_time is not None
        # Given up at once: within the backend's 2 s timeout plus three times what a cycle with
        # every machine running takes here now (at least 13 s).
        normal = Stopwatch()
        assert normal.time(dock.cycle).errors == []
        bound = normal.bound(3, 13, plus=2)
        assert max(unavailable) < bound, (unavailable, normal.samples)
    finally:
        proxy.stop()


# (e) vacd SIGKILLed and restarted adopts its machines ----------------------------------------

def test_sigkilled_vacd_restarted_adopts_its_containers(dock, tmp_path):
    dock.write(SLEEP_PAYLOAD, slots=2)
    names = dock.slots(2)
    first_log, second_log = str(tmp_path / "vacd1.log"), str(tmp_path / "vacd2.log")
    vacd = start_vacd(dock.config_file, first_log)
    try:
        assert wait_until(lambda: cycles_logged(first_log)), open(first_log).read()
    finally:
        stop(vacd, signal.SIGKILL)
    assert vacd.returncode == -signal.SIGKILL
    assert "cycle 1: created 2," in cycles_logged(first_log)[0]
    before = {n: inspect(c["Id"]) for n, c in dock.containers().items()}
    assert sorted(before) == names
    dirs = {n: dock.dir(n).path for n in names}
    vacd = start_vacd(dock.config_file, second_log)
    try:
        assert wait_until(lambda: len(cycles_logged(second_log)) >= 3), \
            open(second_log).read()
    finally:
        stop(vacd, signal.SIGTERM)
    assert vacd.returncode == 0, open(second_log).read()
    for line in cycles_logged(second_log):
        assert "created 0, finished 0, destroyed 0, errors 0" in line, line
    text = open(second_log).read()
    assert "zombie" not in text and "ERROR" not in text, text
    after = {n: inspect(c["Id"]) for n, c in dock.containers().items()}
    assert sorted(after) == names                               # no leaks, no duplicates
    for name in names:
        assert after[name]["Id"] == before[name]["Id"]          # the same containers
        assert after[name]["State"]["Running"] is True
        assert after[name]["State"]["StartedAt"] == before[name]["State"]["StartedAt"]
        assert after[name]["RestartCount"] == 0
        assert dock.dir(name).path == dirs[name] and dock.dir(name).finished is None


# (f) orphans carrying our labels are removed, others are left alone --------------------------

def test_orphan_containers_are_removed_and_foreign_ones_left_alone(dock):
    dock.write(SLEEP_PAYLOAD, slots=2)
    names = dock.slots(2)
    api = sdk()

    def run(name: str, labels: Dict[str, str]) -> str:
        ident = api.create_container(IMAGE, command=["sleep", "300"], name=name,
                                     labels=labels)["Id"]
        dock.extra_ids.append(ident)
        api.start(ident)
        return ident

    def ours(name: str) -> Dict[str, str]:
        return {"vac.space": SPACE, "vac.factory": dock.name, "vac.machine": name,
                "vac.machinetype": MT, "vac.created": "1700000000"}

    in_slot = run(names[0], ours(names[0]))             # a slot with no machine directory
    beyond = run(dock.slot(5), ours(dock.slot(5)))      # a slot this factory no longer has
    foreign = run(dock.slot(6), {})                     # unlabelled, named like our slots
    other = {**ours(dock.slot(7)), "vac.factory": f"other-{dock.name}"}
    elsewhere = run(dock.slot(7), other)                # another factory of the space
    report = dock.cycle()
    assert sorted(report.zombies) == sorted([names[0], dock.slot(5)]), report
    assert gone(in_slot) and gone(beyond)
    assert inspect(foreign)["State"]["Running"] is True
    assert inspect(elsewhere)["State"]["Running"] is True
    assert sorted(report.created) == names and report.errors == []
    assert sorted(dock.containers()) == names
    again = dock.cycle()
    assert again.zombies == [] and again.created == [] and again.errors == []
    assert inspect(foreign)["State"]["Running"] is True
