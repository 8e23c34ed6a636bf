# SPDX-License-Identifier: BSD-2-Clause
"""Really stopping the shared engines (dockerd, libvirtd) and bringing them back for the
engine-restart tests: SIGTERM to the daemon's pid, then the CI setup script that starts it.

These engines are shared by everyone on the host, so the tests that use this module run only
under CI=true or with VAC_TEST_RESTART_ENGINES=1 (see allowed()), and every such test restores
the engine in its teardown with restore(), which asserts that the engine answers again.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Dict, List, Sequence

from testbed import REPO
from waiting import wait_until

SKIP_REASON = ("really stops and restarts the shared Docker and libvirt engines: runs only "
               "with CI=true or VAC_TEST_RESTART_ENGINES=1")
SETUP = {"docker": os.path.join(REPO, "scripts", "ci", "setup-docker.sh"),
         "libvirt": os.path.join(REPO, "scripts", "ci", "setup-libvirt.sh")}
DAEMON = {"docker": "dockerd", "libvirt": "libvirtd"}
ASK = {"docker": ["docker", "info"], "libvirt": ["virsh", "-c", "qemu:///system", "version"]}
SETUP_TIMEOUT = 300     # apt may run when a package went missing; the daemons need 60 s at most
EXIT_TIMEOUT = 90       # dockerd waits 10 s for each container that ignores SIGTERM


def allowed() -> bool:
    """May the tests stop the shared engines here?"""
    return os.environ.get("CI") == "true" or os.environ.get("VAC_TEST_RESTART_ENGINES") == "1"


def pids(engine: str) -> List[int]:
    """The pids of the engine's daemon (pidof), [] if none runs."""
    done = subprocess.run(["pidof", DAEMON[engine]], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, timeout=10)
    return [int(p) for p in done.stdout.split()]


def present(engine: str) -> bool:
    """Is a process of the daemon's name in the process table, a zombie not yet reaped
    included? (pidof skips zombies; the setup scripts' pgrep does not.)"""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(os.path.join(entry.path, "comm")) as f:
                    if f.read().strip() == DAEMON[engine]:
                        return True
            except OSError:     # gone meanwhile
                continue
    return False


def answers(engine: str) -> bool:
    """Does the engine answer its client (docker info, virsh version)?"""
    try:
        done = subprocess.run(ASK[engine], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=15)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def alive(pid: int) -> bool:
    """Does the process run (exists and is no zombie)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def gone(pid: int) -> bool:
    """Has the process left the process table? (A zombie not yet reaped has not: pgrep still
    finds it, and setup-libvirt.sh would then wait for it instead of starting libvirtd.)"""
    return not os.path.exists(f"/proc/{pid}")


def stop(engine: str) -> List[int]:
    """SIGTERM the engine's daemon; return its pids once it no longer answers.

    The daemon may still be shutting down (dockerd stops its containers after it closed its
    API): wait_exited() waits for the end.
    """
    found = pids(engine)
    assert found, f"no {DAEMON[engine]} runs: nothing to stop"
    assert answers(engine), f"{DAEMON[engine]} runs but does not answer before the test"
    for pid in found:
        os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not answers(engine), EXIT_TIMEOUT, step=0.2), \
        f"{DAEMON[engine]} still answers {EXIT_TIMEOUT} s after SIGTERM"
    return found


def wait_exited(engine: str, stopped: Sequence[int]) -> float:
    """Wait until the stopped daemon has exited and been reaped; return how long it took."""
    started = time.monotonic()
    assert wait_until(lambda: all(gone(p) for p in stopped), EXIT_TIMEOUT, step=0.2), \
        f"{DAEMON[engine]} {[p for p in stopped if not gone(p)]} still there " \
        f"({'running' if any(alive(p) for p in stopped) else 'zombie'}) {EXIT_TIMEOUT} s " \
        "after SIGTERM"
    return time.monotonic() - started


def _script_env() -> Dict[str, str]:
    """The environment for the setup script (the daemon it starts inherits it): the test's
    own, without pytest's variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}


def restore(engine: str) -> str:
    """Run the engine's CI setup script (it starts the daemon if it does not answer) and
    assert that the engine answers again; return the script's summary line."""
    # A daemon still on its way out (or its zombie) would make setup-docker.sh start a second
    # one that fails, and setup-libvirt.sh wait for it instead of starting libvirtd.
    wait_until(lambda: answers(engine) or not present(engine), EXIT_TIMEOUT, step=0.5)
    done = subprocess.run(["bash", SETUP[engine]], cwd="/", env=_script_env(),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=SETUP_TIMEOUT)
    assert done.returncode == 0, f"{SETUP[engine]} failed ({done.returncode}):\n{done.stdout}"
    assert answers(engine), f"{DAEMON[engine]} does not answer after {SETUP[engine]}:\n" \
                            f"{done.stdout}"
    assert pids(engine), f"no {DAEMON[engine]} after {SETUP[engine]}"
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""
