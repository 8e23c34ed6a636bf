# SPDX-License-Identifier: BSD-2-Clause
"""APEL records of real Docker machines finished by a real vacd process: every field checked
against the machine's directory, the outgoing queue read back with dirq's QueueSimple, and a
vacd SIGKILLed at each crash point of the record step (VAC_TEST_CRASH_AT) leaves exactly one
record per machine after it is restarted."""
from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
from dirq.QueueSimple import QueueSimple
from docker_engine import IMAGE, engine_ready, sdk
from vacd_process import start_vacd, stop
from waiting import ENGINE_CALL, wait_until

from vac import cli, faults
from vac.accounting import apel, store
from vac.accounting.validate import check_job, check_sync
from vac.machine.directory import MachineDir
from vac.paths import Paths

pytestmark = [pytest.mark.docker]

SPACE = "acct.example.com"
CONF = """
[settings]
backend_timeout_seconds = {engine_call:g}
vac_space = {space}
factory_name = {factory}
state_dir = {state}
host_processors = 2
overload_per_processor = 1000
mb_per_processor = 64
gocdb_sitename = UKI-TEST
hs06_per_processor = 12.5
draining = {draining}

[machinetype acct]
machine_model = docker
root_image = docker://{image}
user_data = {user_data}
target_share = 1
fizzle_seconds = 0
accounting_fqan = /dteam/Role=production
"""

# Burns about a second of CPU, says it succeeded, exits.
PAYLOAD = r"""#!/bin/sh
cd "$JOBOUTPUTS"
timeout 2 sh -c 'while :; do :; done'
echo "200 Success" > shutdown_message
exit 0
"""


class World:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.factory = f"ac{uuid.uuid4().hex[:8]}.example.com"
        self.paths = Paths(str(tmp_path / "state"))
        self.conf = tmp_path / "vac.conf"
        (tmp_path / "user_data").write_text(PAYLOAD)
        self.write(draining="no")

    def write(self, draining: str) -> None:
        self.conf.write_text(CONF.format(engine_call=ENGINE_CALL, space=SPACE, factory=self.factory,
                                         state=self.paths.state_dir, image=IMAGE,
                                         user_data=self.tmp_path / "user_data",
                                         draining=draining))

    def finished_dirs(self):
        found = []
        if not os.path.isdir(self.paths.machines):
            return found
        for name in sorted(os.listdir(self.paths.machines)):
            d = MachineDir(os.path.join(self.paths.machines, name))
            if d.finished is not None:
                found.append(d)
        return found

    def archived(self):
        found = []
        root = self.paths.apel_archive
        if not os.path.isdir(root):
            return found
        for day in sorted(os.listdir(root)):
            for name in sorted(os.listdir(os.path.join(root, day))):
                if not name.startswith("."):
                    with open(os.path.join(root, day, name)) as f:
                        found.append(f.read())
        return found

    def queued(self, jobs_only=True):
        q = QueueSimple(self.paths.apel_outgoing)
        texts = []
        for name in q:
            assert q.lock(name)
            texts.append(q.get(name).decode())
            q.unlock(name)
        return [t for t in texts if t.startswith(apel.JOB_HEADER)] if jobs_only else texts

    def remove_containers(self) -> None:
        api = sdk()
        for c in api.containers(all=True, filters={"label": f"vac.factory={self.factory}"}):
            api.remove_container(c["Id"], force=True)

    def settled(self) -> bool:
        pending = store.pending_dir(self.paths)
        return bool(self.finished_dirs()) and os.path.isdir(pending) and \
            not [n for n in os.listdir(pending) if not n.startswith(".")]


@pytest.fixture
def world(tmp_path):
    engine_ready()
    w = World(tmp_path)
    yield w
    w.remove_containers()


def fields(text):
    return dict(line.split(": ", 1) for line in text.splitlines()[1:] if ": " in line)


def check_records_match_machines(w: World, finished) -> None:
    texts = w.archived()
    by_id = {fields(t)["LocalJobId"]: t for t in texts}
    assert len(by_id) == len(texts) == len(finished), texts
    assert sorted(w.queued()) == sorted(texts)            # each record queued exactly once
    for d in finished:
        text = by_id[d.job_id]
        f = check_job(text, now=d.finished)               # the loader's rules hold
        assert f == fields(text)
        assert f["Site"] == "UKI-TEST"
        assert f["SubmitHost"] == f"{SPACE}/vac-{w.factory}"
        assert f["LocalUserId"] == w.factory and f["Queue"] == "acct"
        assert f["GlobalUserName"] == "/DC=com/DC=example/DC=acct"
        assert f["FQAN"] == "/dteam/Role=production"
        assert int(f["StartTime"]) == int(d.started)
        assert int(f["EndTime"]) == int(d.heartbeat_time) >= int(d.started)
        assert int(f["WallDuration"]) == int(d.heartbeat_time) - int(d.started)
        assert d.read_backend_record()["cpu_seconds"] > 0.1   # the payload burned CPU
        assert int(f["CpuDuration"]) == int(d.cpu_seconds) <= int(f["WallDuration"]) + 1
        assert f["Processors"] == "1" and f["NodeCount"] == "1"
        assert f["MemoryReal"] == f["MemoryVirtual"] == str(64 * 1024)
        assert f["ServiceLevelType"] == "HEPSPEC" and float(f["ServiceLevel"]) == 12.5
        assert f["InfrastructureDescription"] == "APEL-VAC"
        assert d.shutdown_message == "200 Success"
    for text in texts:
        assert apel.field_value(text, "LocalJobId") in {d.job_id for d in finished}


def run_until_settled(w: World, log_path: str, draining: str = "yes") -> None:
    """Restart vacd (creating nothing new) until every finished machine is settled."""
    w.write(draining=draining)
    vacd = start_vacd(str(w.conf), log_path)
    try:
        assert wait_until(w.settled), open(log_path).read()
    finally:
        stop(vacd, signal.SIGTERM)
    assert vacd.returncode == 0, open(log_path).read()


def test_records_of_finished_docker_machines_field_by_field_and_queued_once(world, tmp_path):
    log_path = str(tmp_path / "vacd.log")
    vacd = start_vacd(str(world.conf), log_path)
    try:
        assert wait_until(lambda: len(world.finished_dirs()) >= 2 and world.settled()), \
            open(log_path).read()
        world.write(draining="yes")
        assert wait_until(lambda: not [n for n in sdk().containers(
            all=True, filters={"label": f"vac.factory={world.factory}"})] and world.settled(),
            60), open(log_path).read()
    finally:
        stop(vacd, signal.SIGTERM)
    assert vacd.returncode == 0
    finished = world.finished_dirs()
    check_records_match_machines(world, finished)
    # vac apel-sync: the month's sync record counts exactly these job records
    months = {time.strftime("%Y%m", time.gmtime(d.heartbeat_time)) for d in finished}
    jobs = len(world.queued())
    assert cli.main(["--config", str(world.conf), "apel-sync", *sorted(months)]) == 0
    syncs = [t for t in world.queued(False) if t.startswith(apel.SYNC_HEADER)]
    assert len(syncs) == len(months)
    assert sum(int(r["NumberOfJobs"]) for t in syncs for r in check_sync(t)) == jobs


@pytest.mark.parametrize("point", ["after-finished", "after-archive", "before-queue"])
def test_vacd_sigkilled_in_the_record_step_gives_one_record_after_restart(
        world, tmp_path, monkeypatch, point):
    first_log = str(tmp_path / "first.log")
    monkeypatch.setenv(faults.CRASH_ENV, "apel:" + point)
    vacd = start_vacd(str(world.conf), first_log)
    try:
        vacd.wait(timeout=60)
    finally:
        stop(vacd, signal.SIGKILL)
    monkeypatch.delenv(faults.CRASH_ENV)
    text = open(first_log).read()
    assert vacd.returncode == -signal.SIGKILL, text
    assert f"fault injection: SIGKILL at apel:{point}" in text
    killed_with = len(world.archived())
    assert killed_with == (0 if point == "after-finished" else 1)
    assert QueueSimple(world.paths.apel_outgoing).count() == 0
    run_until_settled(world, str(tmp_path / "second.log"))
    world.remove_containers()
    check_records_match_machines(world, world.finished_dirs())
