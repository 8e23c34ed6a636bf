# SPDX-License-Identifier: BSD-2-Clause
"""Podman machines through vacd's cycle on a real rootless Podman (podman_user = vacpodman, its
own API service; scripts/ci/setup-podman.sh makes both): every slot filled, each payload's
process on the host running as the user's first subordinate uid (not root, not the user),
MJF read and joboutputs written through binds the mapped root can reach, limits recorded as
this engine applies them (never claimed where `podman info` lists no controller), CPU seconds
from /proc, finishing and refill (in a cycle, and from the user's Podman events), and a
SIGKILLed vacd, restarted, adopting its containers.
Each test has a factory and a state directory of its own. On a host without systemd as PID 1
(the CI host), a dead API service of the user's is started again before each test
(podman_engine.revive_rootless), with a warning; under systemd its podman.socket does that."""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import uuid
import warnings
from typing import Dict, List

import pytest
from podman_engine import revive_rootless
from testbed import require_engine
from vacd_process import cycles_logged, start_vacd, stop
from waiting import ENGINE_CALL, wait_until, wait_while_alive

from vac.backends.podman import rootless
from vac.backends.podman.backend import PodmanBackend
from vac.cycle.factory import Factory
from vac.host import procs
from vac.host.facts import HostFacts, user_uid
from vac.machine.directory import MachineDir
from vac.machine.slots import machine_name

pytestmark = [pytest.mark.podman]

USER = "vacpodman"
IMAGE = "vac-test/busybox:1"
SPACE = "rootless.example.com"
MT = "rl"
HOST = HostFacts(fqdn="f1.example.com", processors=4, uid_of=user_uid,   # the real users
                 vg_exists=lambda name: False)

CONF = """
[settings]
vac_space = {space}
factory_name = {factory}
state_dir = {state}
host_processors = {slots}
overload_per_processor = 1000
mb_per_processor = 64
podman_user = {user}
backend_timeout_seconds = {engine_call:g}

[machinetype {mt}]
machine_model = podman
root_image = docker://{image}
user_data = {user_data}
target_share = 1
docker_pids_limit = 200
backoff_seconds = 600
"""

MJF_PAYLOAD = r"""#!/bin/sh
cd "$JOBOUTPUTS"
cat "$JOBFEATURES/job_id" > job_id
id -u > uid_inside
exec sleep 300
"""
# Busy (a count, not a time: a loaded host gives it less CPU per second, not less work), in a
# child it waits for, then waits until the test says stop (so a cycle sees it run).
BUSY_PAYLOAD = r"""#!/bin/sh
cd "$JOBOUTPUTS"
sh -c 'i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); done'
: > busy_done
while [ ! -e stop ]; do sleep 0.2; done
echo "200 Success from ##user_data_machine_hostname##" > shutdown_message
"""
SLEEP_PAYLOAD = "#!/bin/sh\nexec sleep 300\n"


def user_entry() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        require_engine("podman-rootless", False, f"no user {USER} "
                       "(scripts/ci/setup-podman.sh makes it)")
        raise


def sdk():
    import docker
    return docker.APIClient(base_url=rootless.socket_of(user_entry().pw_uid), timeout=30)


class RootlessFactory:
    """One factory of its own on the user's Podman, driven cycle by cycle; its state directory
    outside pytest's (0700) tmp so that the user and its mapped root can reach the binds."""

    def __init__(self, tmp_path, make_config):
        self.make_config = make_config
        self.name = f"rl{uuid.uuid4().hex[:8]}.example.com"
        self.top = f"/tmp/vac-rootless-{uuid.uuid4().hex[:8]}"
        os.mkdir(self.top, 0o755)
        self.state = os.path.join(self.top, "state")
        self.user_data = tmp_path / "user_data"
        self.text = ""
        self.factory = Factory(self.load)

    def write(self, payload: str, slots: int, extra_mt: str = "") -> None:
        self.user_data.write_text(payload)
        self.text = CONF.format(engine_call=ENGINE_CALL,
                                space=SPACE, factory=self.name, state=self.state, slots=slots,
                                user=USER, mt=MT, image=IMAGE, user_data=self.user_data)
        self.text += extra_mt + "\n"
        self.config_file = str(self.load().files[0])

    def load(self):
        return self.make_config(self.text, host_facts=HOST)

    def slots(self, count: int) -> List[str]:
        return [machine_name(self.name, n) for n in range(count)]

    def dir(self, name: str) -> MachineDir:
        d = MachineDir.for_slot(self.load().settings.paths, name)
        assert d is not None, f"{name} has no machine directory"
        return d

    def containers(self) -> Dict[str, dict]:
        found = sdk().containers(all=True, filters={"label": f"vac.factory={self.name}"})
        return {c["Names"][0].lstrip("/"): c for c in found}

    def remove_all(self) -> None:
        if self.text:
            backend = PodmanBackend(self.load().settings)
            for machine in backend.list_machines():
                backend.destroy(machine.name, None)
        api = sdk()
        for c in api.containers(all=True, filters={"label": f"vac.factory={self.name}"}):
            api.remove_container(c["Id"], force=True)
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture
def pod(tmp_path, make_config):
    entry = user_entry()
    # A crash of the user's service (no systemd here to start it again) must cost the test it
    # happened in, not every later one: started again, and said so in the warnings.
    up, note = revive_rootless(USER)
    if up and note:
        warnings.warn(note, stacklevel=2)
    try:
        import docker
        sdk().version()
    except Exception as e:  # noqa: BLE001 (any failure means: no rootless engine here)
        require_engine("podman-rootless", False, f"{USER}'s Podman API: "
                       f"{type(e).__name__}: {e}" + (f" ({note})" if note else ""))
    try:
        sdk().inspect_image(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {IMAGE} missing in {USER}'s Podman: run scripts/ci/setup-podman.sh")
    assert entry.pw_uid != 0
    world = RootlessFactory(tmp_path, make_config)
    yield world
    world.remove_all()


def host_ids(container_id: str) -> Dict[str, int]:
    """Real uid and gid on the host of a container's first process."""
    pid = int(sdk().inspect_container(container_id)["State"]["Pid"])
    with open(f"/proc/{pid}/status") as f:
        text = f.read()
    gid = [line.split()[1] for line in text.splitlines() if line.startswith("Gid:")][0]
    return {"pid": pid, "uid": procs.parse_status_uid(text), "gid": int(gid)}


def test_payloads_run_as_the_users_subordinate_uid_with_mjf_and_joboutputs(pod):
    entry = user_entry()
    found = rootless.resolve(USER)
    pod.write(MJF_PAYLOAD, slots=2)
    report = pod.factory.run_cycle()
    names = pod.slots(2)
    assert sorted(report.created) == names and report.errors == []
    containers = pod.containers()
    assert sorted(containers) == names
    assert wait_until(lambda: all(pod.dir(n).read("joboutputs/uid_inside") for n in names))
    first, count = found.subuid
    for name in names:
        d = pod.dir(name)
        ids = host_ids(containers[name]["Id"])
        assert ids["uid"] == first and ids["gid"] == found.subgid[0], ids
        assert first <= ids["uid"] < first + count and ids["uid"] not in (0, entry.pw_uid)
        assert d.read("joboutputs/uid_inside").strip() == "0"       # root inside, not outside
        assert d.read("joboutputs/job_id") == d.read("jobfeatures/job_id")
        assert os.stat(d.file("joboutputs/job_id")).st_uid == first
        record = d.read_backend_record()
        assert record["backend"] == "podman" and record["rootless_user"] == USER
        assert record["payload_uid"] == first and record["cgroup_parent"] == ""
        host = rootless.engine_info(sdk())
        assert record["limits_applied"] == rootless.limits_applied(host)
        if host.get("cgroupVersion") == "v1":     # rootless v1: no limit is claimed
            assert record["limits_applied"] == [] and "NOT applied" in record["limits"]
    again = pod.factory.run_cycle()
    assert again.created == again.finished == again.destroyed == again.zombies == []


def test_ended_machines_are_finished_with_cpu_seconds_and_refilled(pod):
    pod.write(BUSY_PAYLOAD, slots=1)
    name = pod.slots(1)[0]
    assert pod.factory.run_cycle().created == [name]
    d = pod.dir(name)
    old_id = d.read_backend_record()["container_id"]
    assert wait_until(lambda: d.exists("joboutputs/busy_done"))
    pod.factory.run_cycle()               # sees it running: its CPU seconds in the heartbeat
    assert d.cpu_seconds >= 0.5, d.cpu_seconds
    with open(d.file("joboutputs/stop"), "w"):
        pass
    assert wait_until(lambda: pod.containers()[name]["State"] == "exited"), pod.containers()
    report = pod.factory.run_cycle()
    assert report.finished == [name] and report.errors == [], report
    assert d.finished is not None and d.shutdown_message == f"200 Success from {name}"
    assert 0.5 <= d.read_backend_record()["cpu_seconds"] < 60
    assert report.created == [name]        # refilled in the same cycle
    assert pod.dir(name).read_backend_record()["container_id"] != old_id


def test_sigkilled_vacd_restarted_adopts_its_rootless_containers(pod, tmp_path):
    pod.write(SLEEP_PAYLOAD, slots=2)
    names = pod.slots(2)
    first_log, second_log = str(tmp_path / "vacd1.log"), str(tmp_path / "vacd2.log")
    vacd = start_vacd(pod.config_file, first_log)
    try:
        assert wait_until(lambda: cycles_logged(first_log)), open(first_log).read()
    finally:
        stop(vacd, signal.SIGKILL)
    assert "cycle 1: created 2," in cycles_logged(first_log)[0], open(first_log).read()
    before = {n: sdk().inspect_container(c["Id"]) for n, c in pod.containers().items()}
    assert sorted(before) == names
    vacd = start_vacd(pod.config_file, second_log)
    try:
        assert wait_until(lambda: len(cycles_logged(second_log)) >= 3), \
            open(second_log).read()
    finally:
        stop(vacd, signal.SIGTERM)
    assert vacd.returncode == 0, open(second_log).read()
    for line in cycles_logged(second_log):
        assert "created 0, finished 0, destroyed 0, errors 0" in line, line
    after = {n: sdk().inspect_container(c["Id"]) for n, c in pod.containers().items()}
    for name in names:
        assert after[name]["Id"] == before[name]["Id"]
        assert after[name]["State"]["Running"] is True
        assert after[name]["State"]["StartedAt"] == before[name]["State"]["StartedAt"]


SHORT_PAYLOAD = ("#!/bin/sh\n: > $JOBOUTPUTS/began\nsleep 2\n"
                 "echo '200 Success' > $JOBOUTPUTS/shutdown_message\n")


def test_a_machines_end_refills_its_slot_from_the_users_podman_events(pod, tmp_path):
    """An hour's cycle: only the first cycle runs, so every later machine is a refill that
    the user's Podman event stream (the die of a container) set off."""
    pod.write(SHORT_PAYLOAD, slots=2, extra_mt="backoff_seconds = 0\nfizzle_seconds = 0")
    log = str(tmp_path / "vacd.log")
    machines = os.path.join(pod.state, "machines")
    vacd = start_vacd(pod.config_file, log, ["--cycle-seconds", "3600"])
    try:
        assert wait_while_alive(lambda: os.path.isdir(machines) and len(
            [e for e in os.listdir(machines) if not e.startswith(".")]) >= 6, vacd, step=0.2), \
            open(log).read()[-3000:]
    finally:
        stop(vacd, signal.SIGTERM)
    text = open(log).read()
    assert len(cycles_logged(log)) == 1, text[-3000:]
    assert "refill" in text and "event watcher stopped" not in text and \
        "event watcher cannot start" not in text, text[-3000:]
