# SPDX-License-Identifier: BSD-2-Clause
"""One vacd per state directory, with real vacd processes: a second vacd exits at once naming
the pid of the first; the lock goes with its holder however it ends; other state directories
are not affected."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from testbed import REPO
from waiting import GENEROUS

from vac.errors import ConfigMissing, VacError
from vac.service import lock

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
state_dir = {state}
enable_fake_backend = true
host_processors = 2
overload_per_processor = 1000
vacquery_port = {port}
vacquery_address = 127.0.0.1
"""


def _conf(tmp_path, name: str, port: int) -> str:
    path = tmp_path / f"{name}.conf"
    path.write_text(CONF.format(state=tmp_path / name, port=port))
    return str(path)


def _vacd(conf: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("JOURNAL_STREAM", None)
    return subprocess.Popen([sys.executable, "-m", "vac.daemon", "--config", conf,
                             "--foreground", "--cycle-seconds", "300", *extra], cwd=REPO,
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _running(proc: subprocess.Popen, heartbeat: str) -> None:
    deadline = time.time() + GENEROUS
    while not os.path.exists(heartbeat) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    assert os.path.exists(heartbeat), "the first vacd never ran a cycle"


@pytest.fixture
def first(tmp_path):
    conf = _conf(tmp_path, "a", 19231)
    proc = _vacd(conf)
    _running(proc, str(tmp_path / "a" / "factory-heartbeat"))
    yield conf, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    proc.stderr.close()


def _start_cost() -> float:
    """How long a vacd process takes here now to start and end at once (--version)."""
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "vac.daemon", "--version"], cwd=REPO, check=True,
                   env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, timeout=GENEROUS)
    return time.monotonic() - began


def test_second_vacd_on_the_same_state_dir_exits_at_once_naming_the_first(first, tmp_path):
    conf, proc = first
    bound = max(5.0, 3 * _start_cost())      # at once: about a start's cost, measured here
    began = time.monotonic()
    second = _vacd(conf)
    _, err = second.communicate(timeout=GENEROUS)
    took = time.monotonic() - began
    assert second.returncode == 1
    assert f"another vacd (pid {proc.pid}) holds {tmp_path / 'a' / 'vacd.lock'}" in err
    assert took < bound, f"the second vacd took {took:.1f} s to give up (bound {bound:.1f} s)"
    assert proc.poll() is None, "the first vacd must keep running"
    assert (tmp_path / "a" / "vacd.lock").read_text() == f"{proc.pid}\n"


def test_a_vacd_on_another_state_dir_runs_beside_it(first, tmp_path):
    other = _vacd(_conf(tmp_path, "b", 19232), "--cycles", "1")
    _, err = other.communicate(timeout=30)
    assert other.returncode == 0, err
    assert "cycle 1:" in err


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_lock_goes_with_its_holder(first, how):
    conf, proc = first
    proc.send_signal(how)
    proc.wait(timeout=20)
    after = _vacd(conf, "--cycles", "1")
    _, err = after.communicate(timeout=30)
    assert after.returncode == 0, err
    assert "not starting" not in err


def test_lock_in_process_refuses_a_second_holder_and_reports_the_pid(tmp_path):
    held = lock.StateLock(str(tmp_path / "s")).acquire()
    try:
        assert lock.is_held(str(tmp_path / "s")) == os.getpid()
        with pytest.raises(lock.LockHeld) as caught:
            lock.StateLock(str(tmp_path / "s")).acquire()
        assert caught.value.pid == os.getpid()
        flags = os.get_inheritable(held.fd)
        assert flags is False, "the lock must not be inherited by machines vacd starts"
    finally:
        held.release()
    assert lock.is_held(str(tmp_path / "s")) is None
    lock.StateLock(str(tmp_path / "s")).acquire().release()


def test_lock_on_a_symlink_is_refused(tmp_path):
    (tmp_path / "s").mkdir()
    os.symlink(str(tmp_path / "elsewhere"), str(tmp_path / "s" / "vacd.lock"))
    with pytest.raises(VacError):
        lock.StateLock(str(tmp_path / "s")).acquire()


def test_state_dir_comes_from_the_configuration_without_pipes(tmp_path):
    conf = _conf(tmp_path, "c", 19233)
    assert lock.state_dir_of([conf]) == str(tmp_path / "c")
    # No configuration means the default state directory; a named one that is missing is not
    # "no configuration" (issue 22: vacd took /var/lib/vac/vacd.lock for a --config typo).
    assert lock.state_dir_of([]) == "/var/lib/vac"
    with pytest.raises(ConfigMissing) as missing:
        lock.state_dir_of([str(tmp_path / "missing.conf")])
    assert str(missing.value) == f"--config {tmp_path / 'missing.conf'}: no such file"


def test_a_child_of_a_dead_vacd_holding_the_lock_is_waited_for(tmp_path):
    # The holder's pid (in the file) is dead, but a forked child still has the descriptor
    # (between its fork and its exec): the next vacd waits for it instead of refusing.
    state = str(tmp_path / "s")
    script = ("import fcntl, os, sys, time\n"
              "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
              "fcntl.flock(fd, fcntl.LOCK_EX)\n"
              "os.ftruncate(fd, 0); os.write(fd, b'999999999\\n')\n"
              "print('locked', flush=True); time.sleep(float(sys.argv[2]))\n")
    os.makedirs(state)
    child = subprocess.Popen([sys.executable, "-c", script, lock.lock_path(state), "0.5"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "locked\n"
        began = time.monotonic()
        held = lock.StateLock(state).acquire()
        assert 0.2 < time.monotonic() - began < lock.STRAGGLER_WAIT_SECONDS
        held.release()
    finally:
        child.wait(timeout=10)
        child.stdout.close()


def test_state_dir_of_the_installed_example_is_the_default(tmp_path):
    # Every line a comment (the RPM's /etc/vac.conf): not configured yet, but vacd runs on the
    # default state directory and says so, it does not refuse to start.
    conf = tmp_path / "vac.conf"
    conf.write_text("# [settings]\n# vac_space = x.example.com\n")
    assert lock.state_dir_of([str(conf)]) == "/var/lib/vac"
