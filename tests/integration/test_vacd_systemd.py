# SPDX-License-Identifier: BSD-2-Clause
"""vacd's RPMs under a real systemd, in the cgroup v2 guest only (VAC_V2_GUEST=1:
systemd 257 is PID 1, Docker runs inside; scripts/ci/run-v2-tests.sh builds the RPMs on the
host into /vac-src/.v2-rpms/{1,2}, release 2 being a rebuild to upgrade to).

One site's first day, in order: `rpm -i --nodeps`, `systemctl enable --now vacd` on the shipped
/etc/vac.conf reaches active (Type=notify: after the first cycle) and says "not configured yet";
a real configuration with Docker machines fills its slots; a broken edit and `systemctl reload`
keep the machines running, check-vacd goes CRITICAL naming the problem and the journal has one
line at err; the fix brings it back; `systemctl restart` and `rpm -U` leave every machine
running and adopted; `kill -STOP` gets vacd restarted by the watchdog; `systemctl stop` runs the
ExecStopPost APEL step. Every wait is for a condition, with a generous deadline (TCG is slow).
Each step's time is printed (pytest -s or the log's captured output).
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
import uuid
from typing import Dict, List

import pytest
from waiting import ENGINE_CALL, GENEROUS, wait_until

from vac import planfile

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]

RPMS = "/vac-src/.v2-rpms"
STATE = "/var/lib/vac"
CONF = "/etc/vac.conf"
# Debian's python3 does not read EL9's sitelib, where the RPM puts the package.
PTH = "/usr/lib/python3/dist-packages/vac-el9-sitelib.pth"
STAND_IN = "/usr/bin/ssmsend"
SLOTS = 2
REAL_CONF = """[settings]
backend_timeout_seconds = {engine_call:g}
vac_space = systemd.example.com
factory_name = {factory}
host_processors = {slots}
overload_per_processor = 1000
mb_per_processor = 64
cycle_seconds = 10

[machinetype dock]
machine_model = docker
root_image = docker://vac-test/busybox:1
user_data = {user_data}
target_share = 1
max_wallclock_seconds = 86400
"""
PAYLOAD = "#!/bin/sh\nexec sleep 86400\n"
SSMSEND = "#!/bin/sh\necho \"$@\" >/run/vac-test-ssmsend-ran\n"


def sh(*argv: str, check: bool = True, timeout: float = GENEROUS) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"{argv}: {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def show(prop: str) -> str:
    return sh("systemctl", "show", "-P", prop, "vacd").strip()


def main_pid() -> int:
    return int(show("MainPID") or 0)


def check_vacd() -> subprocess.CompletedProcess:
    return subprocess.run(["/usr/sbin/check-vacd"], capture_output=True, text=True,
                          timeout=60)


def containers(factory: str) -> Dict[str, str]:
    """Running containers of this factory: id -> name."""
    out = sh("docker", "ps", "--no-trunc", "--filter", f"label=vac.factory={factory}",
             "--format", "{{.ID}} {{.Names}}")
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def record() -> planfile.PlanRecord:
    return planfile.read(os.path.join(STATE, "plan.json"))


def running() -> int:
    r = record()
    return r.counts[0] if r is not None and r.counts is not None else -1


def cycles_since(cursor: str) -> List[str]:
    out = sh("journalctl", "-u", "vacd", "-o", "cat", "--no-pager", "--after-cursor", cursor)
    return [line for line in out.splitlines() if line.startswith("INFO cycle ")]


def cursor() -> str:
    out = sh("journalctl", "-u", "vacd", "-n", "1", "--show-cursor", "--no-pager", "-o", "cat",
             check=False)
    lines = [line for line in out.splitlines() if line.startswith("-- cursor: ")]
    return lines[-1][len("-- cursor: "):] if lines else ""


def wait_cycles(mark: str, n: int) -> None:
    assert wait_until(lambda: len(cycles_since(mark)) >= n, step=1), \
        f"fewer than {n} cycles logged: {cycles_since(mark)}"


class Steps:
    """Each step's duration, printed at the end (the README quotes them)."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.last = self.began
        self.times: List[str] = []

    def done(self, what: str) -> None:
        now = time.monotonic()
        self.times.append(f"{now - self.last:6.1f} s  {what}")
        self.last = now

    def report(self) -> None:
        """On the guest's console too, where run-v2-tests.sh shows "VAC-V2: " lines."""
        lines = self.times + [f"{time.monotonic() - self.began:6.1f} s  in all"]
        print("\n".join(lines))
        try:
            with open("/dev/ttyS0", "w") as console:
                console.write("".join(f"VAC-V2: systemd test {line}\n" for line in lines))
        except OSError:
            pass


@pytest.fixture
def steps():
    timed = Steps()
    yield timed
    timed.report()   # also when a step failed: how far it came, and when


@pytest.fixture
def installed():
    if os.environ.get("VAC_V2_GUEST") != "1":
        pytest.skip("only in the cgroup v2 guest (it installs RPMs and runs vacd under PID 1)")
    with open("/proc/1/comm") as f:
        assert f.read().strip() == "systemd"
    assert shutil.which("rpm"), "the guest has no rpm: rebuild it (scripts/ci/build-v2-guest.sh)"
    first = sorted(glob.glob(f"{RPMS}/1/*.rpm"))
    assert len(first) == 2, f"no RPMs in {RPMS}/1: run-v2-tests.sh builds them on the host"
    factory = f"s{uuid.uuid4().hex[:8]}.example.com"
    yield first, sorted(glob.glob(f"{RPMS}/2/*.rpm")), factory
    subprocess.run(["systemctl", "stop", "vacd"], timeout=300)
    remove_machines(factory)
    subprocess.run(["rpm", "-e", "--nodeps", "vac", "vac-command"], timeout=300)
    for path in (PTH, STAND_IN, CONF, CONF + ".rpmnew", CONF + ".rpmsave"):
        if os.path.lexists(path):
            os.remove(path)
    ids = list(containers(factory))
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=300)
    shutil.rmtree(STATE, ignore_errors=True)
    subprocess.run(["systemctl", "daemon-reload"], timeout=120)


def good_config(factory: str) -> str:
    return REAL_CONF.format(engine_call=ENGINE_CALL, factory=factory, slots=SLOTS,
                            user_data=os.path.join(STATE, "payload.sh"))


def remove_machines(factory: str) -> None:
    """Through the backend, as vacd would: it removes each container's cgroup parent too."""
    from vac.backends.docker.backend import DockerBackend
    from vac.config import load
    from vac.host.facts import HostFacts

    conf = os.path.join(STATE, "teardown.conf")
    try:
        with open(conf, "w") as f:
            f.write(good_config(factory))
        backend = DockerBackend(load.build(load.read_raw([conf]), HostFacts.read()).settings)
        for machine in backend.list_machines():
            backend.destroy(machine.name, None)
    except Exception as e:  # noqa: BLE001 - then by label below
        print(f"teardown through the backend: {e}")


def test_a_sites_first_day_under_systemd(installed, steps):
    first, second, factory = installed
    sh("rpm", "-i", "--nodeps", *first)
    with open(PTH, "w") as f:
        f.write("/usr/lib/python3.9/site-packages\n")
    sh("systemctl", "daemon-reload")
    steps.done("rpm -i")

    # The shipped configuration: active (READY=1 after the first cycle), not configured yet.
    assert open(CONF).read().lstrip().startswith("#")
    sh("systemctl", "enable", "--now", "vacd")
    assert show("ActiveState") == "active" and show("NRestarts") == "0"
    assert wait_until(lambda: "not configured yet" in show("StatusText"), step=1), \
        show("StatusText")
    status = sh("systemctl", "status", "--no-pager", "vacd", check=False)
    assert "not configured yet" in status and CONF in status, status
    assert check_vacd().returncode == 2
    steps.done("enable --now on the shipped config: active, not configured yet")

    # A real configuration with Docker machines fills its slots.
    user_data = os.path.join(STATE, "payload.sh")
    with open(user_data, "w") as f:
        f.write(PAYLOAD)
    good = good_config(factory)
    with open(CONF, "w") as f:
        f.write(good)
    sh("vac", "config", "check")
    sh("systemctl", "reload", "vacd")
    assert wait_until(lambda: len(containers(factory)) == SLOTS and running() == SLOTS, step=1), \
        (containers(factory), record())
    machines = containers(factory)
    assert wait_until(lambda: "config OK" in show("StatusText"), step=1), show("StatusText")
    assert f"{SLOTS} running" in show("StatusText")
    steps.done("real config + reload: slots filled")

    # A broken edit: the machines keep running, CRITICAL names it, one line at err.
    mark = cursor()
    with open(CONF, "w") as f:
        f.write(good.replace("machine_model = docker", "machine_model = dokcer"))
    sh("systemctl", "reload", "vacd")
    assert wait_until(lambda: check_vacd().returncode == 2, step=1), check_vacd().stdout
    critical = check_vacd().stdout
    assert critical.startswith("CRITICAL") and "dokcer" in critical, critical
    assert wait_until(lambda: "dokcer" in show("StatusText"), step=1), show("StatusText")
    wait_cycles(mark, 3)
    errors = sh("journalctl", "-u", "vacd", "-p", "err", "-o", "cat", "--no-pager",
                "--after-cursor", mark).splitlines()
    assert len(errors) == 1 and "dokcer" in errors[0], errors
    assert containers(factory) == machines
    assert show("ActiveState") == "active" and show("NRestarts") == "0"
    steps.done("broken edit + reload: CRITICAL, one err line, machines kept")

    # The fix brings it back.
    with open(CONF, "w") as f:
        f.write(good)
    sh("systemctl", "reload", "vacd")
    assert wait_until(lambda: check_vacd().returncode == 0, step=1), check_vacd().stdout
    assert wait_until(lambda: "config OK" in show("StatusText"), step=1), show("StatusText")
    assert containers(factory) == machines
    steps.done("fixed + reload: OK")

    # systemctl restart: a new vacd adopts every machine.
    before = main_pid()
    mark = cursor()
    sh("systemctl", "restart", "vacd")
    assert main_pid() not in (0, before)
    wait_cycles(mark, 2)
    assert containers(factory) == machines and running() == SLOTS
    steps.done("systemctl restart: machines adopted")

    # rpm -U of a rebuilt package: the scriptlet restarts vacd; the edited config is kept.
    assert len(second) == 2, f"no release 2 RPMs in {RPMS}/2"
    before = main_pid()
    mark = cursor()
    sh("rpm", "-U", "--nodeps", *second)
    assert sh("rpm", "-q", "--qf", "%{RELEASE}", "vac").startswith("2")
    assert open(CONF).read() == good, "rpm -U replaced the edited /etc/vac.conf"
    assert wait_until(lambda: main_pid() not in (0, before) and show("ActiveState") == "active",
                      step=1)
    wait_cycles(mark, 2)
    assert containers(factory) == machines and running() == SLOTS
    steps.done("rpm -U: restarted, machines adopted, config kept")

    # kill -STOP: the watchdog (WatchdogSec) gets vacd killed and restarted.
    stopped = main_pid()
    os.kill(stopped, signal.SIGSTOP)
    assert wait_until(lambda: main_pid() not in (0, stopped) and show("ActiveState") == "active",
                      timeout=max(GENEROUS, 900), step=2), show("Result")
    assert "watchdog" in sh("journalctl", "-u", "vacd", "--no-pager", "-o", "cat", "-n", "200")
    mark = cursor()
    wait_cycles(mark, 1)
    assert containers(factory) == machines
    steps.done("kill -STOP: restarted by the watchdog, machines kept")

    # systemctl stop: the APEL step runs (ssmsend stand-in); the machines keep running.
    with open(STAND_IN, "w") as f:
        f.write(SSMSEND)
    os.chmod(STAND_IN, 0o755)
    sh("systemctl", "stop", "vacd")
    assert wait_until(lambda: os.path.exists("/run/vac-test-ssmsend-ran"), step=1)
    with open("/run/vac-test-ssmsend-ran") as f:
        assert f.read().strip() == "-c /etc/apel/vac-ssmsend-prod.cfg"
    os.remove("/run/vac-test-ssmsend-ran")
    assert containers(factory) == machines
    steps.done("systemctl stop: ExecStopPost APEL step ran, machines kept")
