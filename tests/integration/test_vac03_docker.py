# SPDX-License-Identifier: BSD-2-Clause
"""Switching a running Vac 03 factory (Docker): containers the original started are adopted.

The state directory is written in the original's layout (tests/integration/vac03_state.py) and
its containers are started with the original's own `docker run` argv (no
labels, --name and --hostname the machine's FQDN, the machine directory bound in). Then a real
vacd runs on that state. The running one must be adopted (backend.json says so), kept running
and heartbeated with whole CPU seconds, then finished with its own shutdown_message, accounted
(APEL record) and removed when its payload ends, and its slot refilled; a container Vac 03 left
behind for a finished machine is removed so its slot is refilled; an unlabelled container that
merely has a slot-like name is left alone.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import time

import pytest
from docker_engine import IMAGE, engine_ready, gone, inspect, sdk
from dockerfactory import MT, DockerFactory
from vac03_state import machine_dir, mark_finished, mark_started
from vacd_process import cycles_logged, start_vacd, stop
from waiting import wait_until

from vac.machine.slots import machine_name

pytestmark = [pytest.mark.docker]

# Burns CPU first (so a heartbeat while it runs sees it), then waits for the test's `go`.
ADOPTED_PAYLOAD = r"""#!/bin/sh
cd /var/spool/joboutputs
# Burns 2 s of CPU (its own user+system ticks), however long a busy host makes that take.
while :; do read -r s < /proc/$$/stat; set -- $s; [ $((${14} + ${15})) -ge 200 ] && break; done
while [ ! -e go ]; do sleep 0.2; done
echo "200 Success from vac03" > shutdown_message
exit 0
"""
NEW_PAYLOAD = "#!/bin/sh\nexec sleep 300\n"


def vac03_docker_run(path: str, name: str, processors: int = 1, mb: int = 64) -> str:
    """Start a container exactly as Vac 03 did; returns the ID from the first line."""
    argv = ["docker", "run", "--detach", "--cpu-shares", str(1024 * processors),
            "--memory-reservation", str(processors * mb * 1048576),
            "-v", f"{path}/joboutputs:/var/spool/joboutputs",
            "-v", f"{path}/user_data:/user_data:ro",
            "-v", f"{path}/machinefeatures:/etc/machinefeatures:ro",
            "-v", f"{path}/jobfeatures:/etc/jobfeatures:ro",
            "--name", name, "--hostname", name, IMAGE, "/user_data"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.splitlines()[0].strip()


def record(path: str) -> dict:
    try:
        with open(os.path.join(path, "backend.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def slot_created(state: str, name: str) -> int:
    with open(os.path.join(state, "slots", name)) as f:
        return int(f.read().split()[0])


@pytest.fixture
def dock(tmp_path, make_config):
    engine_ready()
    world = DockerFactory(tmp_path, make_config)
    yield world
    world.remove_all()


def test_vacd_adopts_vac03_containers_finishes_accounts_and_refills(dock, tmp_path):
    dock.write(NEW_PAYLOAD, slots=2, extra_mt="fizzle_seconds = 1")
    state, factory = dock.state, dock.name
    s0, s1 = machine_name(factory, 0), machine_name(factory, 1)
    running = machine_dir(state, s0, MT, "docker", ADOPTED_PAYLOAD)
    cid0 = vac03_docker_run(running, s0)
    dock.extra_ids.append(cid0)
    mark_started(running, cid0)                       # HEAD: job_id = the container ID
    left = machine_dir(state, s1, MT, "docker", "#!/bin/sh\nexit 0\n",
                       created=int(time.time()) - 100)
    cid1 = vac03_docker_run(left, s1)
    dock.extra_ids.append(cid1)
    mark_started(left, cid1)
    assert wait_until(lambda: inspect(cid1)["State"]["Status"] == "exited")
    mark_finished(left, "200 Success")                # finished, its container not removed
    decoy_name = machine_name(factory, 5)             # a slot-like name, not one of 2 slots
    decoy = sdk().create_container(IMAGE, ["sleep", "300"], name=decoy_name,
                                   hostname=decoy_name)["Id"]
    dock.extra_ids.append(decoy)
    sdk().start(decoy)
    log_path = str(tmp_path / "vacd.log")
    vacd = start_vacd(dock.config_file, log_path)
    try:
        assert wait_until(lambda: record(running).get("adopted") == "vac03"), \
            open(log_path).read()
        assert record(running)["container_id"] == cid0
        assert wait_until(lambda: os.path.exists(os.path.join(running, "heartbeat")) and
                          open(os.path.join(running, "heartbeat")).read() != "0.0 0.0")
        # Slot 1: the container Vac 03 left is removed and a machine of ours replaces it.
        assert wait_until(lambda: s1 in dock.containers() and gone(cid1)), \
            open(log_path).read()
        assert slot_created(state, s1) > int(os.path.basename(left).split("_")[0])
        assert inspect(cid0)["State"]["Running"] is True  # adopted, not killed
        seen = len(cycles_logged(log_path))               # a few more cycles: still running
        assert wait_until(lambda: len(cycles_logged(log_path)) >= seen + 3), \
            open(log_path).read()
        assert inspect(cid0)["State"]["Running"] is True
        beat_file = os.path.join(running, "heartbeat")

        def burnt_cpu() -> bool:      # the payload's 2 s of CPU, seen by a later cycle
            first = open(beat_file).read().split(" ")[0].strip()
            return first.isdigit() and int(first) >= 1
        assert wait_until(burnt_cpu), open(beat_file).read()
        stop(vacd, signal.SIGTERM)                        # a restarted vacd keeps it too
        assert vacd.returncode == 0, open(log_path).read()
        with open(log_path) as f:
            first_log = f.read()
        vacd = start_vacd(dock.config_file, log_path)
        assert wait_until(lambda: len(cycles_logged(log_path)) >= 3), open(log_path).read()
        assert inspect(cid0)["State"]["Running"] is True
        assert record(running)["container_id"] == cid0
        open(os.path.join(running, "joboutputs", "go"), "w").close()
        assert wait_until(lambda: os.path.exists(os.path.join(running, "finished"))), \
            open(log_path).read()
        assert wait_until(lambda: gone(cid0))
        assert wait_until(lambda: s0 in dock.containers()), open(log_path).read()
        assert wait_until(lambda: apel_records(state, cid0)), open(log_path).read()
    finally:
        stop(vacd, signal.SIGTERM)
    text = open(log_path).read()
    assert vacd.returncode == 0, text
    assert "adopted container" in first_log and "ERROR" not in first_log, first_log
    with open(os.path.join(running, "joboutputs", "shutdown_message")) as f:
        assert f.read().strip() == "200 Success from vac03"
    assert "adopted container" not in text and "ERROR" not in text, text  # recorded once
    (apel,) = apel_records(state, cid0)
    assert f"Queue: {MT}\n" in apel and "CpuDuration: " in apel
    assert int(apel.split("CpuDuration: ")[1].split()[0]) >= 1, apel
    assert slot_created(state, s0) > int(os.path.basename(running).split("_")[0])
    ours = dock.containers()
    assert sorted(ours) == [s0, s1] and all(c["State"] == "running" for c in ours.values())
    assert inspect(decoy)["State"]["Running"] is True  # a name alone is never ours


def apel_records(state: str, job_id: str) -> list:
    found = []
    for path in glob.glob(os.path.join(state, "apel-archive", "*", "*")):
        with open(path) as f:
            text = f.read()
        if f"LocalJobId: {job_id}\n" in text:
            found.append(text)
    return found
