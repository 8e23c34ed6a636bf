# SPDX-License-Identifier: BSD-2-Clause
"""DockerBackend on the real Docker engine: machine directories made as the factory makes them,
payloads that read MJF and write joboutputs, limits seen by `inspect`, CPU seconds, OOM,
adoption, ownership by label, and an engine that goes away mid-run."""
from __future__ import annotations

import os
import time

import pytest
from docker_backend_env import FACTORY, SPACE, make_machine
from docker_engine import IMAGE, sdk
from socket_proxy import SocketProxy
from testbed import require_engine
from waiting import GENEROUS, Stopwatch, wait_until

from vac.backends.base import MachineSpec
from vac.backends.docker import cgroupparent
from vac.backends.docker.backend import DockerBackend
from vac.errors import BackendError, BackendUnavailable
from vac.machine.directory import MachineState
from vac.machine.slots import machine_name

# docker_backend_cleanup: every test here (as make_backend does for any module) removes, at
# the module's end, the containers of this run's DockerBackend factory that are left.
pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_backend_cleanup")]

PAYLOAD = r"""#!/bin/sh
cd "$JOBOUTPUTS"
cat "$MACHINEFEATURES/total_cpu" > total_cpu
cat "$JOBFEATURES/allocated_cpu" > allocated_cpu
cat /etc/jobfeatures/max_rss_bytes > max_rss_bytes
cat /etc/machinefeatures/shutdowntime > shutdowntime
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


@pytest.fixture
def backend(make_backend) -> DockerBackend:
    b = make_backend()
    probe = b.probe()
    require_engine("docker", probe.available, probe.reason)
    if not wait_until(lambda: _image_present(), timeout=1):
        pytest.fail(f"image {IMAGE} missing: run scripts/ci/setup-docker.sh")
    return b


def _image_present() -> bool:
    import docker
    try:
        sdk().inspect_image(IMAGE)
        return True
    except docker.errors.ImageNotFound:
        return False


def finished(backend: DockerBackend, spec: MachineSpec, timeout: float = GENEROUS):
    assert wait_until(lambda: backend.status(spec.name, spec.directory).state
                      is MachineState.SHUTDOWN, timeout), f"{spec.name} did not finish"
    return backend.status(spec.name, spec.directory)


# A machine's life -------------------------------------------------------------------------

def test_payload_reads_mjf_writes_joboutputs_and_finishes(paths, backend):
    spec = make_machine(paths, backend, 1, PAYLOAD, processors=2)
    container_id = backend.create(spec)
    d = spec.directory
    assert d.read_backend_record()["container_id"] == container_id
    st = finished(backend, spec)
    out = lambda key: d.read(f"joboutputs/{key}").strip()  # noqa: E731
    assert out("total_cpu") == "2" and out("allocated_cpu") == "2"
    assert out("max_rss_bytes") == str(2 * 64 * 1024 * 1024)
    assert out("shutdowntime") == str(spec.shutdown_time)
    assert out("hostname") == spec.name
    assert out("argv0") == "/user_data"
    assert out("scratch") == "yes"
    assert out("user_data_mode") == "readonly" and out("mjf_mode") == "readonly"
    scratch = [e for e in os.listdir(d.file("mnt")) if e.startswith("_scratch")]
    assert len(scratch) == 1
    assert open(os.path.join(d.file("mnt"), scratch[0], "written")).read() == "ok\n"
    assert st.state is MachineState.SHUTDOWN and st.backend_id == container_id
    assert st.exit_code == 3 and st.oom_killed is False
    assert st.cpu_seconds > 0.3, st
    final = backend.collect(spec.name, d)
    assert final.exit_code == 3 and final.cpu_seconds == pytest.approx(st.cpu_seconds)
    assert "console-marker-1" in d.read("console.log")
    assert d.shutdown_message == "200 Intended work completed ok"
    backend.destroy(spec.name, d)
    backend.destroy(spec.name, d)
    assert backend.status(spec.name, d).state is MachineState.SHUTDOWN
    assert not [c for c in sdk().containers(all=True, filters={"name": spec.name})
                if c["Names"] == [f"/{spec.name}"]]
    parent = d.read_backend_record()["cgroup_parent"]
    if d.read_backend_record()["cgroup_driver"] == "systemd":   # cgroup v2 hosts (EL9)
        assert parent.startswith("vac-docker-") and parent.endswith(".slice")
        assert backend.cgroups.cpu_seconds(cgroupparent.slice_path(parent)) is None
    else:
        assert parent.startswith("/vac/docker-")
        assert backend.cgroups.cpu_seconds(parent) is None


def test_inspect_shows_labels_limits_binds_and_no_privileges(paths, make_backend):
    backend = make_backend(mb=48)
    probe = backend.probe()
    require_engine("docker", probe.available, probe.reason)
    spec = make_machine(paths, backend, 2, "#!/bin/sh\nsleep 300\n", processors=2)
    container_id = backend.create(spec)
    attrs = sdk().inspect_container(container_id)
    cfg, hc = attrs["Config"], attrs["HostConfig"]
    assert attrs["Name"] == f"/{spec.name}" and cfg["Hostname"] == spec.name
    assert cfg["Labels"] == {"vac.space": SPACE, "vac.factory": FACTORY,
                             "vac.machine": spec.name, "vac.machinetype": "dock",
                             "vac.created": str(spec.created)}
    assert cfg["Cmd"] == ["/user_data"] and not cfg.get("Entrypoint")
    assert {"MACHINEFEATURES=/etc/machinefeatures", "JOBFEATURES=/etc/jobfeatures",
            "JOBOUTPUTS=/var/spool/joboutputs"} <= set(cfg["Env"])
    assert hc["CpuShares"] == 2048 and hc["NanoCpus"] == 0
    assert hc["Memory"] == 96 * 1024 * 1024 and hc["MemorySwap"] == 96 * 1024 * 1024
    assert hc["PidsLimit"] == 123
    assert hc["SecurityOpt"] == ["no-new-privileges"] and hc["Privileged"] is False
    assert hc["NetworkMode"] == "bridge"
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    d = spec.directory
    assert mounts["/var/spool/joboutputs"]["Source"] == d.file("joboutputs")
    assert mounts["/var/spool/joboutputs"]["RW"] is True
    for target, source in (("/etc/machinefeatures", "machinefeatures"),
                           ("/etc/jobfeatures", "jobfeatures"), ("/user_data", "user_data")):
        assert mounts[target]["Source"] == d.file(source) and mounts[target]["RW"] is False
    assert mounts["/scratch"]["RW"] is True
    assert os.stat(d.file("user_data")).st_mode & 0o777 == 0o755
    st = backend.status(spec.name, d)
    assert st.state is MachineState.RUNNING and st.backend_id == container_id
    assert st.exit_code is None and st.cpu_seconds >= 0
    assert st.labels["vac.machine"] == spec.name


def test_hard_cpu_and_soft_memory_options(paths, make_backend):
    backend = make_backend(extra="docker_hard_cpu = true\ndocker_hard_memory = false\n"
                                 "docker_network_mode = none")
    probe = backend.probe()
    require_engine("docker", probe.available, probe.reason)
    spec = make_machine(paths, backend, 3, "#!/bin/sh\nsleep 300\n", processors=2)
    hc = sdk().inspect_container(backend.create(spec))["HostConfig"]
    assert hc["NanoCpus"] == 2 * 10**9
    assert hc["Memory"] == 0 and hc["MemoryReservation"] == 128 * 1024 * 1024
    assert hc["NetworkMode"] == "none"


def test_pause_adoption_idempotent_create_and_listing(paths, backend):
    spec = make_machine(paths, backend, 4, "#!/bin/sh\nsleep 300\n")
    container_id = backend.create(spec)
    api = sdk()
    api.pause(container_id)
    assert backend.status(spec.name, spec.directory).state is MachineState.PAUSED
    api.unpause(container_id)
    # a restarted vacd: a new backend adopts the running container by name
    again = DockerBackend(backend.settings)
    for directory in (None, spec.directory):
        st = again.status(spec.name, directory)
        assert st.state is MachineState.RUNNING and st.backend_id == container_id
    assert again.create(spec) == container_id
    listed = {m.name: m for m in again.list_machines()}
    assert listed[spec.name].backend_id == container_id
    assert listed[spec.name].state is MachineState.RUNNING
    assert listed[spec.name].labels["vac.created"] == str(spec.created)
    again.destroy(spec.name, None)
    assert spec.name not in {m.name for m in again.list_machines()}


def test_stale_container_of_an_earlier_machine_is_replaced(paths, backend):
    old = make_machine(paths, backend, 5, "#!/bin/sh\nsleep 300\n", created=1700000000)
    old_id = backend.create(old)
    new = make_machine(paths, backend, 5, "#!/bin/sh\nsleep 300\n", created=1700000100)
    assert backend.status(new.name, new.directory).state is MachineState.SHUTDOWN
    new_id = backend.create(new)
    assert new_id != old_id
    assert sdk().inspect_container(new.name)["Config"]["Labels"]["vac.created"] == "1700000100"
    assert backend.status(old.name, old.directory).state is MachineState.SHUTDOWN
    assert backend.status(new.name, new.directory).state is MachineState.RUNNING
    old_parent = old.directory.read_backend_record()["cgroup_parent"]
    assert cgroupparent.is_ours(old_parent)
    assert cgroupparent.cpu_seconds(old_parent, backend.cgroups) is None


def test_foreign_container_is_neither_listed_nor_touched(paths, backend):
    api = sdk()
    name = machine_name(FACTORY, 6)
    foreign = api.create_container(IMAGE, command=["sleep", "300"], name=name)["Id"]
    try:
        api.start(foreign)
        assert name not in {m.name for m in backend.list_machines()}
        assert backend.status(name, None).state is MachineState.SHUTDOWN
        backend.destroy(name, None)
        assert api.inspect_container(foreign)["State"]["Running"] is True
        spec = make_machine(paths, backend, 6, "#!/bin/sh\nsleep 300\n")
        with pytest.raises(BackendError, match="not this factory's"):
            backend.create(spec)
        assert api.inspect_container(foreign)["State"]["Running"] is True
    finally:
        api.remove_container(foreign, force=True)


def test_oom_killed_machine_gets_a_coded_shutdown_message(paths, make_backend):
    backend = make_backend(mb=32)
    probe = backend.probe()
    require_engine("docker", probe.available, probe.reason)
    spec = make_machine(paths, backend, 7,
                        "#!/bin/sh\necho before-oom\nhead -c 300m /dev/zero | tail\nexit 0\n")
    backend.create(spec)
    st = finished(backend, spec)
    assert st.oom_killed is True
    final = backend.collect(spec.name, spec.directory)
    assert final.oom_killed is True
    assert spec.directory.shutdown_message == \
        "700 Vac: container killed by the OOM killer (memory limit 32 MiB)"
    assert "before-oom" in spec.directory.read("console.log")
    backend.destroy(spec.name, spec.directory)


def test_oom_does_not_overwrite_the_machines_own_message(paths, make_backend):
    backend = make_backend(mb=32)
    probe = backend.probe()
    require_engine("docker", probe.available, probe.reason)
    spec = make_machine(paths, backend, 8, "#!/bin/sh\necho '300 No more work' > "
                        "$JOBOUTPUTS/shutdown_message\nhead -c 300m /dev/zero | tail\n")
    backend.create(spec)
    assert finished(backend, spec).oom_killed is True
    backend.collect(spec.name, spec.directory)
    assert spec.directory.shutdown_message == "300 No more work"


def test_missing_image_is_a_clear_error_and_leaves_nothing(paths, make_backend):
    backend = make_backend(image="vac-test/absent:1")
    probe = backend.probe()
    require_engine("docker", probe.available, probe.reason)
    spec = make_machine(paths, backend, 9, "#!/bin/sh\nexit 0\n")
    with pytest.raises(BackendError, match="cannot pull image vac-test/absent:1"):
        backend.create(spec)
    assert spec.name not in {m.name for m in backend.list_machines()}


def test_command_missing_in_image_fails_create_and_leaves_nothing(paths, make_backend):
    backend = make_backend(extra="container_command = /no/such/program")
    probe = backend.probe()
    require_engine("docker", probe.available, probe.reason)
    spec = make_machine(paths, backend, 10, "#!/bin/sh\nexit 0\n")
    with pytest.raises(BackendError, match="cannot start container"):
        backend.create(spec)
    assert spec.name not in {m.name for m in backend.list_machines()}


def test_cvmfs_repositories_are_bound_read_only(paths, make_backend, tmp_path):
    backend = make_backend(extra="cvmfs_repositories = atlas.cern.ch")
    probe = backend.probe()
    require_engine("docker", probe.available, probe.reason)
    (tmp_path / "cvmfs" / "atlas.cern.ch").mkdir(parents=True)
    (tmp_path / "cvmfs" / "atlas.cern.ch" / "README").write_text("repo\n")
    backend.cvmfs_root = str(tmp_path / "cvmfs")
    spec = make_machine(paths, backend, 11, "#!/bin/sh\ncat /cvmfs/atlas.cern.ch/README > "
                        "$JOBOUTPUTS/cvmfs\ntouch /cvmfs/x 2>/dev/null || echo ro >> "
                        "$JOBOUTPUTS/cvmfs\n")
    backend.create(spec)
    finished(backend, spec)
    assert spec.directory.read("joboutputs/cvmfs") == "repo\nro\n"


# The engine going away (last in this file) ----------------------------------------------------

def test_engine_going_away_mid_run_is_unavailable_not_a_crash(paths, backend, make_backend,
                                                              tmp_path):
    proxy = SocketProxy(str(tmp_path / "engine.sock"))
    proxy.start()
    try:
        via = make_backend(url=f"unix://{proxy.path}", timeout=2)
        spec = make_machine(paths, via, 12, "#!/bin/sh\nsleep 300\n")
        container_id = via.create(spec)
        answered = Stopwatch()                         # what an answered call costs here now
        for _ in range(3):
            assert answered.time(lambda: via.status(spec.name, spec.directory)).state \
                is MachineState.RUNNING
            answered.time(via.list_machines)
        # Given up within the 2 s timeout plus what an answered call costs on this machine now.
        bound = answered.bound(4, 3, plus=2)
        proxy.stop()                                   # the engine is gone
        probe = via.probe()
        assert not probe.available
        assert probe.reason.startswith(f"Docker engine not reachable at unix://{proxy.path}")
        with pytest.raises(BackendUnavailable):
            via.status(spec.name, spec.directory)
        with pytest.raises(BackendUnavailable):
            via.list_machines()
        with pytest.raises(BackendUnavailable):
            via.destroy(spec.name, spec.directory)
        with pytest.raises(BackendUnavailable):
            DockerBackend(via.settings).status(spec.name, None)
        proxy.hanging = True                           # accepts, never answers
        proxy.start()
        for call in (lambda: via.status(spec.name, spec.directory), via.list_machines):
            start = time.monotonic()
            with pytest.raises(BackendUnavailable):
                call()
            assert time.monotonic() - start < bound
        start = time.monotonic()
        assert not via.probe().available
        assert time.monotonic() - start < bound
        proxy.stop()
        proxy.hanging = False                          # the engine is back
        proxy.start()
        assert via.probe().available
        st = via.status(spec.name, spec.directory)
        assert st.state is MachineState.RUNNING and st.backend_id == container_id
        via.destroy(spec.name, spec.directory)
    finally:
        proxy.stop()
    assert backend.status(spec.name, spec.directory).state is MachineState.SHUTDOWN
