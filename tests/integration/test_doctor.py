# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor` against real broken setups, as a real process (--json and exit status): a
state directory under a mode-0700 parent as the QEMU user meets it (and the same diagnosis in
the error of a real VM creation that fails for it), an engine that does not answer, a missing
image, a missing user; a healthy Docker setup that passes; a real vacd whose responder, metrics
and status page must answer; a rejected configuration whose host checks still run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib

import pytest
from testbed import REPO, require_engine
from waiting import ENGINE_CALL

from vac.host import access

DOCKER_IMAGE = "vac-test/busybox:1"   # scripts/ci/setup-docker.sh builds it
SETTINGS = """
[settings]
backend_timeout_seconds = {engine_call:g}
vac_space = vac01.example.com
factory_name = f1.example.com
state_dir = {state}
vacquery_port = 19251
vacquery_address = 127.0.0.1
"""


@pytest.fixture
def top():
    # Under /var/tmp with o+x, unlike pytest's tmp_path (its /tmp/pytest-of-root is 0700,
    # which is the very trap the QEMU check is about).
    path = tempfile.mkdtemp(prefix="vac-doctor-test-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _doctor(top: str, body: str, state: str = "", name: str = "vac.conf"):
    conf = os.path.join(top, name)
    with open(conf, "w") as f:
        f.write(SETTINGS.format(engine_call=ENGINE_CALL,
                                state=state or os.path.join(top, "state")) + body)
    os.makedirs(state or os.path.join(top, "state"), exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "vac.cli", "--config", conf, "doctor",
                           "--json"], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    report = json.loads(done.stdout)
    assert report["ok"] == (done.returncode == 0), done.stderr
    return done.returncode, {c["name"]: c for c in report["checks"]}


def _docker_available() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.images.get(DOCKER_IMAGE)
        client.close()
        return True
    except Exception:  # noqa: BLE001 (any failure: not here)
        return False


DOCKER_MT = """
[machinetype dock]
machine_model = docker
root_image = docker://{image}
target_share = 1
"""


@pytest.mark.docker
def test_healthy_docker_setup_passes(top):
    require_engine("docker", _docker_available(), f"no dockerd or no {DOCKER_IMAGE}")
    rc, checks = _doctor(top, DOCKER_MT.format(image=DOCKER_IMAGE))
    assert rc == 0, checks
    assert checks["docker-engine"]["status"] == "ok"
    assert checks["docker-engine"]["detail"].split()[0][0].isdigit()  # the engine's version
    assert checks["image dock"]["status"] == "ok"
    assert checks["state-disk"]["status"] in ("ok", "warn")
    assert checks["vacquery-port"] == {"name": "vacquery-port", "status": "ok",
                                       "detail": "udp 127.0.0.1:19251 free", "fix": ""}


@pytest.mark.docker
def test_missing_docker_image_fails_its_line(top):
    require_engine("docker", _docker_available(), f"no dockerd or no {DOCKER_IMAGE}")
    rc, checks = _doctor(top, DOCKER_MT.format(image="vac-test/no-such-image:0"))
    assert rc == 1
    line = checks["image dock"]
    assert line["status"] == "FAIL"
    assert "vac-test/no-such-image:0 is not in the engine and cannot be pulled" in line["detail"]
    assert line["fix"].startswith("docker pull vac-test/no-such-image:0")


def test_engine_that_does_not_answer_fails_with_the_fix(top):
    # What a stopped dockerd looks like to its clients: nothing listens on the socket.
    body = f"docker_url = unix://{top}/stopped-docker.sock\n" + \
        DOCKER_MT.format(image=DOCKER_IMAGE)
    rc, checks = _doctor(top, body.replace("[machinetype", "\n[machinetype", 1))
    assert rc == 1
    line = checks["docker-engine"]
    assert line["status"] == "FAIL"
    assert "stopped-docker.sock" in line["detail"] or "docker" in line["detail"].lower()
    assert line["fix"] == "start the engine (systemctl start docker) or set docker_url"


def test_missing_singularity_user_fails_the_configuration(top):
    body = "singularity_user = vac-no-such-user\n\n[machinetype app]\n" \
           "machine_model = apptainer\nroot_image = /var/lib/vac-test/busybox.sif\n" \
           "target_share = 1\n"
    rc, checks = _doctor(top, body)
    assert rc == 1
    assert checks["config"]["status"] == "FAIL"
    assert "vac-no-such-user" in checks["config"]["detail"]
    assert "does not exist" in checks["config"]["detail"]


@pytest.mark.apptainer
def test_missing_apptainer_image_fails_its_line(top):
    body = "singularity_user = vacsngly\n\n[machinetype app]\nmachine_model = apptainer\n" \
           f"root_image = {top}/missing.sif\ntarget_share = 1\n"
    rc, checks = _doctor(top, body)
    assert rc == 1
    assert checks["image app"]["status"] == "FAIL"
    assert checks["image app"]["detail"] == f"root_image {top}/missing.sif does not exist"
    assert checks["apptainer-user"]["status"] == "ok", checks


def _qemu_user():
    user = access.qemu_user()
    require_engine("libvirt", user is not None, "no QEMU user (libvirt-qemu or qemu)")
    return user


def _as_user(user, *argv: str) -> int:
    return subprocess.run(["runuser", "-u", user.pw_name, "--", *argv], capture_output=True,
                          timeout=30).returncode


VM_MT = """
[machinetype guest]
machine_model = vm-raw
kernel = {guest}/vmlinuz
initrd = {guest}/initrd.img
cmdline = console=ttyS0 quiet no_timer_check
target_share = 1
"""


@pytest.mark.libvirt
def test_state_dir_under_a_0700_parent_as_the_qemu_user_meets_it(top):
    from libvirt_env import GUEST

    user = _qemu_user()
    locked = os.path.join(top, "locked")
    state = os.path.join(locked, "vac")
    os.makedirs(state)
    os.chmod(locked, 0o700)
    assert _as_user(user, "test", "-x", state) != 0, "the setup must really lock QEMU out"
    rc, checks = _doctor(top, VM_MT.format(guest=GUEST), state=state)
    assert rc == 1
    line = checks["qemu-traversal"]
    assert line["status"] == "FAIL"
    assert f"the QEMU user {user.pw_name} cannot enter {locked} (mode 0700" in line["detail"]
    assert 'Permission denied' in line["detail"]
    assert line["fix"].startswith(f"chmod o+x {locked}")
    os.chmod(locked, 0o711)  # the fix it gives
    assert _as_user(user, "test", "-x", state) == 0
    rc, checks = _doctor(top, VM_MT.format(guest=GUEST), state=state)
    assert checks["qemu-traversal"]["status"] == "ok", checks["qemu-traversal"]


@pytest.mark.libvirt
def test_a_real_vm_creation_denied_by_a_0700_parent_says_the_same(top):
    from libvirt_env import GUEST, guest_problem

    problem = guest_problem()
    require_engine("libvirt", not problem, problem)
    from vac.backends.base import MachineSpec
    from vac.backends.libvirt.backend import LibvirtBackend
    from vac.config import load
    from vac.errors import BackendError
    from vac.host.facts import HostFacts
    from vac.machine.directory import MachineDir
    from vac.machine.slots import Slot, machine_name
    from vac.paths import Paths

    user = _qemu_user()
    locked = os.path.join(top, "locked")
    paths = Paths(os.path.join(locked, "vac"))
    paths.ensure()
    os.chmod(locked, 0o700)
    conf = os.path.join(top, "vac.conf")
    with open(conf, "w") as f:
        f.write(SETTINGS.format(engine_call=ENGINE_CALL,
                                state=paths.state_dir) + "mb_per_processor = 256\n" +
                VM_MT.format(guest=GUEST))
    factory = "doctortest.example.com"
    host = HostFacts(fqdn=factory, processors=2, uid_of=lambda _u: None,
                     vg_exists=lambda _v: False)
    config = load.build(load.read_raw([conf]), host)
    backend = LibvirtBackend(config.settings, shutdown_wait_seconds=3)
    probe = backend.probe()
    require_engine("libvirt", probe.available, probe.reason)
    mt = config.machinetypes["guest"]
    slot = Slot(0, machine_name(config.settings.factory_name, 0))
    created = int(time.time())
    d = MachineDir.create(paths, created, mt.name, slot.name)
    d.write("user_data", "#!/bin/sh\n")
    spec = MachineSpec(name=slot.name, machinetype=mt, settings=config.settings, slot=slot,
                       processors=1, memory_mb=256, created=created, shutdown_time=created + 60,
                       uuid=str(uuidlib.uuid4()), directory=d)
    backend.prepare_host()
    try:
        with pytest.raises(BackendError) as caught:
            backend.create(spec)
    finally:
        try:
            backend._conn().lookupByName(slot.name).destroy()
        except Exception:  # noqa: BLE001 (not created: what the test expects)
            pass
    message = str(caught.value)
    assert "Permission denied" in message
    assert f"the QEMU user {user.pw_name} cannot enter {locked} (mode 0700" in message
    assert f"fix: chmod o+x {locked}" in message


SERVED = """
enable_fake_backend = true
metrics_port = {metrics}
metrics_address = 127.0.0.1
status_port = {status}
status_address = 127.0.0.1

[machinetype alpha]
machine_model = fake
target_share = 1
"""


def _served(checks) -> bool:
    return checks["vacd"]["status"] == "ok" and all(
        checks[name]["status"] == "ok" and "answers" in checks[name]["detail"]
        for name in ("vacquery-port", "metrics-port", "status-port"))


def test_a_running_vacd_must_answer_on_its_ports_not_just_hold_them(top):
    """A real vacd (fake backend) with the responder, /metrics and the status page: doctor asks
    each as a client; once vacd has stopped, the same ports are free again."""
    import signal

    from vacd_process import start_vacd, stop
    from waiting import wait_until

    pytest.importorskip("prometheus_client")
    pytest.importorskip("jinja2")
    body = SERVED.format(metrics=19252, status=19253)
    _doctor(top, body)                                    # writes vac.conf and the state dir
    vacd = start_vacd(os.path.join(top, "vac.conf"), os.path.join(top, "vacd.log"))
    try:
        found = {}

        def answered() -> bool:
            found.update(_doctor(top, body)[1])
            return _served(found)
        assert wait_until(answered), (found, open(os.path.join(top, "vacd.log")).read()[-3000:])
        assert found["vacd"]["status"] == "ok"
        assert found["vacquery-port"]["detail"] == \
            "udp 127.0.0.1:19251: vacd's responder answers as factory f1.example.com"
        assert found["metrics-port"]["detail"] == \
            "http://127.0.0.1:19252/metrics answers (HTTP 200)"
        assert found["status-port"]["detail"] == "http://127.0.0.1:19253/api answers (HTTP 200)"
        # a doctor asking where this vacd does not serve: held by vacd, and silent. That
        # configuration is a file of its own: vacd reads vac.conf each cycle and would move its
        # listener to the port the doctor asks about.
        rc, other = _doctor(top, body.replace("19252", "19254"), name="elsewhere.conf")
        assert rc == 1 and other["metrics-port"]["status"] == "FAIL", other
        assert other["metrics-port"]["detail"].startswith(
            "vacd runs but http://127.0.0.1:19254/metrics does not answer")
    finally:
        stop(vacd, signal.SIGTERM)
    rc, checks = _doctor(top, body)
    assert checks["vacd"]["status"] == "warn"
    assert checks["metrics-port"]["detail"] == "tcp 127.0.0.1:19252 free"
    assert checks["status-port"]["detail"] == "tcp 127.0.0.1:19253 free"


def test_a_rejected_configuration_still_checks_the_host_with_its_settings(top):
    state = os.path.join(top, "state")
    rc, checks = _doctor(top, "\n[machinetype broken]\nmachine_model = fake\n"
                              "target_share = -1\nno_such_option = 1\n")
    assert rc == 1 and checks["config"]["status"] == "FAIL"
    assert "[settings] of the configuration alone" in checks["config-fallback"]["detail"]
    assert checks["state-disk"]["detail"].startswith(f"{state}:")
    assert checks["vacquery-port"]["detail"] == "udp 127.0.0.1:19251 free"
