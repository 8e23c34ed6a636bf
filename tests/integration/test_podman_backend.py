# SPDX-License-Identifier: BSD-2-Clause
"""PodmanBackend on the real rootful Podman (its API socket, scripts/ci/setup-podman.sh):
machine directories made as the factory makes them, a payload reading MJF and user_data and
writing joboutputs, limits in the machine's own cgroup, CPU seconds, OOM, adoption by a new
backend instance, the event stream, and nothing left (container, cgroup parent, conmon's
cgroup) once destroyed."""
from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Dict, List, Optional

import pytest
from podman_engine import ENGINE, IMAGE, limit_within, parent_dirs, sdk
from testbed import require_engine
from waiting import ENGINE_CALL, GENEROUS, wait_until

from vac.backends.base import MachineSpec
from vac.backends.docker import cgroupparent
from vac.backends.podman.backend import PodmanBackend
from vac.errors import BackendError, BackendUnavailable
from vac.host.cgroups import Cgroups, host_path
from vac.machine import mjf
from vac.machine.directory import MachineDir, MachineState, SlotRecord, write_slot_record
from vac.machine.slots import Slot, machine_name

pytestmark = [pytest.mark.podman]

FACTORY = f"pm{uuid.uuid4().hex[:8]}.example.com"   # this run's containers only
SPACE = "space.example.com"
MIB = 1024 * 1024

CONF = """
[settings]
vac_space = {space}
factory_name = {factory}
mb_per_processor = {mb}
podman_url = {url}
backend_timeout_seconds = {engine_call:g}

[machinetype pod]
machine_model = podman
root_image = docker://{image}
target_share = 1
tmp_binds = /scratch
docker_pids_limit = 123
{extra}
"""

PAYLOAD = r"""#!/bin/sh
cd "$JOBOUTPUTS"
cat "$MACHINEFEATURES/total_cpu" > total_cpu
cat "$JOBFEATURES/allocated_cpu" > allocated_cpu
cat /etc/jobfeatures/max_rss_bytes > max_rss_bytes
hostname > hostname
echo "$0" > argv0
echo ok > /scratch/written && echo yes > scratch
if (echo x >> /user_data) 2>/dev/null; then echo writable; else echo readonly; fi > user_data_mode
if touch /etc/jobfeatures/new 2>/dev/null; then echo writable; else echo readonly; fi > mjf_mode
i=0; while [ $i -lt 600000 ]; do i=$((i+1)); done
echo console-marker-1
echo "200 Intended work completed ok" > shutdown_message
exit 3
"""
SLEEPER = "#!/bin/sh\nsleep 300\n"


def config_text(mb: int = 64, url: str = ENGINE, extra: str = "", image: str = IMAGE) -> str:
    return CONF.format(engine_call=ENGINE_CALL, space=SPACE, factory=FACTORY, mb=mb, url=url,
                       extra=extra, image=image)


def remove_ours() -> None:
    api = sdk()
    for c in api.containers(all=True, filters={"label": f"vac.factory={FACTORY}"}):
        api.remove_container(c["Id"], force=True)


@pytest.fixture(scope="module", autouse=True)
def cleanup_module():
    yield
    try:
        remove_ours()
    except Exception:  # noqa: BLE001 (engine gone: nothing we can clean)
        pass


@pytest.fixture
def make_backend(make_config):
    made: List[PodmanBackend] = []

    def make(**kw) -> PodmanBackend:
        config = make_config(config_text(**kw))
        backend = PodmanBackend(config.settings)
        backend.config = config
        made.append(backend)
        return backend

    yield make
    live = made[0] if made else None
    if live is not None and live.probe().available:
        for m in PodmanBackend(live.settings).list_machines():
            PodmanBackend(live.settings).destroy(m.name, None)
        remove_ours()


def usable(backend: PodmanBackend) -> PodmanBackend:
    probe = backend.probe()
    require_engine("podman", probe.available, probe.reason)
    import docker
    try:
        sdk().inspect_image(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {IMAGE} missing in Podman: run scripts/ci/setup-podman.sh")
    return backend


@pytest.fixture
def backend(make_backend) -> PodmanBackend:
    return usable(make_backend())


def make_machine(paths, backend: PodmanBackend, ordinal: int, payload: Optional[str],
                 processors: int = 1, created: Optional[int] = None) -> MachineSpec:
    """A machine directory as the factory makes it: slot record, MJF, user_data."""
    settings = backend.config.settings
    mt = backend.config.machinetypes["pod"]
    name = machine_name(settings.factory_name, ordinal)
    created = created or int(time.time())
    write_slot_record(paths, name, SlotRecord(created, mt.name, mt.machine_model))
    directory = MachineDir.create(paths, created, mt.name, name)
    mjf.write_mjf(directory, mjf.MjfContext(settings=settings, machinetype=mt,
                                            processors=processors, shutdown_time=created + 600,
                                            now=created, job_id=None))
    if payload is not None:
        directory.write("user_data", payload, mode=0o644)
    return MachineSpec(name=name, machinetype=mt, settings=settings, slot=Slot(ordinal, name),
                       processors=processors, memory_mb=settings.mb_per_processor * processors,
                       created=created, shutdown_time=created + 600, uuid=str(uuid.uuid4()),
                       directory=directory)


def finished(backend: PodmanBackend, spec: MachineSpec):
    assert wait_until(lambda: backend.status(spec.name, spec.directory).state
                      is MachineState.SHUTDOWN, GENEROUS), f"{spec.name} did not finish"
    return backend.status(spec.name, spec.directory)


def own_cgroup(pid: int) -> Dict[str, str]:
    """controller (or '' for v2) -> the host directory of the process's cgroup."""
    found = {}
    cgroups = Cgroups()
    h = cgroups.hierarchies
    for controller, path in cgroups.of_pid(pid).items():
        mount = h.v2 if controller in ("", "0") or controller == "v2" else h.v1.get(controller)
        if mount is not None and host_path(mount, path):
            found[controller] = host_path(mount, path)
    return found


# A machine's life -------------------------------------------------------------------------

def test_payload_reads_mjf_writes_joboutputs_and_destroy_leaves_nothing(paths, backend):
    spec = make_machine(paths, backend, 1, PAYLOAD, processors=2)
    container_id = backend.create(spec)
    d = spec.directory
    record = d.read_backend_record()
    assert record["backend"] == "podman"
    assert record["container_id"] == container_id
    parent = record["cgroup_parent"]
    assert cgroupparent.is_ours(parent)
    st = finished(backend, spec)
    out = lambda key: d.read(f"joboutputs/{key}").strip()  # noqa: E731
    assert out("total_cpu") == "2" and out("allocated_cpu") == "2"
    assert out("max_rss_bytes") == str(2 * 64 * MIB)
    assert out("hostname") == spec.name
    assert out("argv0") == "/user_data"
    assert out("scratch") == "yes"
    assert out("user_data_mode") == "readonly" and out("mjf_mode") == "readonly"
    assert st.state is MachineState.SHUTDOWN and st.backend_id == container_id
    assert st.exit_code == 3 and st.oom_killed is False
    assert st.cpu_seconds > 0.3, st
    final = backend.collect(spec.name, d)
    # Podman's cleanup after the exit (conmon's exit command) may add some microseconds
    # under the parent between the two readings (Docker's stay equal).
    assert final.exit_code == 3 and final.cpu_seconds == pytest.approx(st.cpu_seconds,
                                                                       abs=0.01)
    assert "console-marker-1" in d.read("console.log")
    assert d.shutdown_message == "200 Intended work completed ok"
    assert parent_dirs(parent), "the parent (with conmon's child) is there until destroy"
    backend.destroy(spec.name, d)
    backend.destroy(spec.name, d)
    assert backend.status(spec.name, d).state is MachineState.SHUTDOWN
    assert not [c for c in sdk().containers(all=True, filters={"name": spec.name})
                if c["Names"] == [f"/{spec.name}"]]
    assert parent_dirs(parent) == [], "parent or conmon's cgroup left behind"


def test_limits_are_in_the_machines_own_cgroup(paths, make_backend):
    backend = usable(make_backend(mb=48))
    spec = make_machine(paths, backend, 2, SLEEPER, processors=2)
    container_id = backend.create(spec)
    attrs = sdk().inspect_container(container_id)
    cfg, hc = attrs["Config"], attrs["HostConfig"]
    assert cfg["Labels"] == {"vac.space": SPACE, "vac.factory": FACTORY,
                             "vac.machine": spec.name, "vac.machinetype": "pod",
                             "vac.created": str(spec.created)}
    assert hc["Memory"] == 96 * MIB and hc["PidsLimit"] == 123
    assert hc["CpuShares"] == 2048 and "no-new-privileges" in hc["SecurityOpt"]
    parent = spec.directory.read_backend_record()["cgroup_parent"]
    assert hc["CgroupParent"] == parent
    own = own_cgroup(int(attrs["State"]["Pid"]))
    path = cgroupparent.cgroup_path(parent)
    assert own and all(f"{path}/" in d for d in own.values()), own
    if "memory" in own:                                     # cgroup v1
        assert int(open(f"{own['memory']}/memory.limit_in_bytes").read()) == 96 * MIB
        assert open(f"{own['pids']}/pids.max").read().strip() == "123"
        assert int(open(f"{own['cpu']}/cpu.shares").read()) == 2048
    else:                                                   # cgroup v2
        # the container's own cgroup under the parent (its processes may be in a child of it:
        # the runtime's, or the leaf of a delegated cgroup)
        v2 = next(iter(own.values()))
        below = v2[v2.index(f"{path}/") + len(path) + 1:]
        top = v2[:len(v2) - len(below)] + below.split("/")[0]
        assert limit_within(top, v2, "memory.max") == 96 * MIB
        assert limit_within(top, v2, "pids.max") == 123
    st = backend.status(spec.name, spec.directory)
    assert st.state is MachineState.RUNNING and st.labels["vac.machine"] == spec.name
    backend.destroy(spec.name, spec.directory)
    assert parent_dirs(parent) == []


def test_oom_killed_machine_gets_a_coded_shutdown_message(paths, make_backend):
    backend = usable(make_backend(mb=32))
    if Cgroups().hierarchies.version == 1:
        pytest.skip("cgroup v1: Podman (conmon) reports no OOM kill and the kernel counts it in "
                    "the container's own memory cgroup, which Podman removes at the exit")
    spec = make_machine(paths, backend, 3,
                        "#!/bin/sh\necho before-oom\nhead -c 300m /dev/zero | tail\nexit 0\n")
    backend.create(spec)
    assert finished(backend, spec).oom_killed is True
    final = backend.collect(spec.name, spec.directory)
    assert final.oom_killed is True
    assert spec.directory.shutdown_message == \
        "700 Vac: container killed by the OOM killer (memory limit 32 MiB)"
    assert "before-oom" in spec.directory.read("console.log")
    backend.destroy(spec.name, spec.directory)


def test_adoption_by_a_new_backend_idempotent_create_and_listing(paths, backend):
    spec = make_machine(paths, backend, 4, SLEEPER)
    container_id = backend.create(spec)
    again = PodmanBackend(backend.settings)          # a restarted vacd
    for directory in (None, spec.directory):
        st = again.status(spec.name, directory)
        assert st.state is MachineState.RUNNING and st.backend_id == container_id
    assert again.create(spec) == container_id
    listed = {m.name: m for m in again.list_machines()}
    assert listed[spec.name].backend_id == container_id
    assert listed[spec.name].labels["vac.created"] == str(spec.created)
    parent = spec.directory.read_backend_record()["cgroup_parent"]
    again.destroy(spec.name, None)
    assert spec.name not in {m.name for m in again.list_machines()}
    assert parent_dirs(parent) == []


def test_foreign_container_is_neither_listed_nor_touched(paths, backend):
    api = sdk()
    name = machine_name(FACTORY, 5)
    foreign = api.create_container(IMAGE, command=["sleep", "300"], name=name)["Id"]
    try:
        api.start(foreign)
        assert name not in {m.name for m in backend.list_machines()}
        backend.destroy(name, None)
        assert api.inspect_container(foreign)["State"]["Running"] is True
        spec = make_machine(paths, backend, 5, SLEEPER)
        with pytest.raises(BackendError, match="^podman .*not this factory's"):
            backend.create(spec)
    finally:
        api.remove_container(foreign, force=True)


def test_watcher_says_when_a_machine_ends(paths, backend):
    ended: List[str] = []
    seen = threading.Event()
    watcher = backend.watch(lambda name: (ended.append(name), seen.set()))
    try:
        spec = make_machine(paths, backend, 6, "#!/bin/sh\nsleep 2\nexit 0\n")
        backend.create(spec)
        assert wait_until(lambda: spec.name in ended, GENEROUS), (ended, watcher.error)
        assert watcher.error == ""
    finally:
        watcher.stop()
    backend.destroy(spec.name, spec.directory)


def test_probe_names_podman_and_refuses_another_engine(make_backend):
    backend = usable(make_backend())
    assert backend.probe().version.startswith("Podman ")
    if os.path.exists("/var/run/docker.sock"):
        docker_engine = make_backend(url="unix:///var/run/docker.sock").probe()
        assert not docker_engine.available
        assert "is not Podman" in docker_engine.reason


def test_missing_socket_is_unavailable_naming_podman(paths, make_backend, tmp_path):
    backend = make_backend(url=f"unix://{tmp_path}/absent.sock")
    probe = backend.probe()
    assert not probe.available
    assert probe.reason.startswith(f"Podman API not reachable at unix://{tmp_path}/absent.sock")
    with pytest.raises(BackendUnavailable) as e:
        backend.list_machines()
    assert e.value.backend == "podman" and str(e.value).startswith("podman: ")


def test_doctor_finds_the_engine_and_the_image(make_backend):
    from vac.ops import backendchecks
    from vac.ops.checks import OK

    backend = usable(make_backend())
    mts = list(backend.config.machinetypes.values())
    lines = {c.name: c for c in backendchecks.for_backend("podman", mts, backend.settings)}
    assert lines["podman-engine"].status == OK
    assert lines["podman-engine"].detail.startswith("Podman ")
    assert lines["image pod"].status == OK and IMAGE in lines["image pod"].detail
