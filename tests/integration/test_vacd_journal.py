# SPDX-License-Identifier: BSD-2-Clause
"""Where vacd logs, as a real process: to the journal (its stderr, no timestamp of its own)
when systemd's JOURNAL_STREAM names its stderr, else to the log file (/var/log/vacd.log by
default), and the logrotate file rotates that log."""
from __future__ import annotations

import os
import subprocess
import sys

from testbed import REPO

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
state_dir = {state}
host_processors = 1
vacquery_port = 19261
vacquery_address = 127.0.0.1
"""


def _vacd(tmp_path, stderr_path, env_extra):
    conf = tmp_path / "vac.conf"
    conf.write_text(CONF.format(state=tmp_path / "state"))
    log_file = tmp_path / "vacd.log"
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("JOURNAL_STREAM", None)
    with open(stderr_path, "w") as err:
        st = os.fstat(err.fileno())
        if env_extra:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        done = subprocess.run([sys.executable, "-m", "vac.daemon", "--config", str(conf),
                               "--cycles", "1", "--log-file", str(log_file)], cwd=REPO,
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=err, timeout=60)
    assert done.returncode == 0, open(stderr_path).read()
    return log_file


def test_under_systemd_vacd_logs_to_the_journal_without_its_own_timestamps(tmp_path):
    stderr_path = tmp_path / "journal"
    log_file = _vacd(tmp_path, stderr_path, env_extra=True)
    lines = stderr_path.read_text().splitlines()
    # "<6>": the priority (info) the journal reads from the line's start.
    assert any(line.startswith("<6>INFO cycle 1: ") for line in lines), lines
    assert all(line[:3] in ("<3>", "<4>", "<6>") for line in lines), lines
    assert not any("vacd[" in line for line in lines), "the journal stamps time and pid itself"
    assert not log_file.exists()


def test_errors_and_warnings_reach_the_journal_at_their_priorities_once(tmp_path):
    # A configuration with no vac_space: rejected every cycle, said once at err.
    conf = tmp_path / "vac.conf"
    conf.write_text(CONF.format(state=tmp_path / "state").replace(
        "vac_space = vac01.example.com\n", ""))
    env = dict(os.environ, PYTHONPATH=REPO)
    with open(tmp_path / "journal", "w") as err:
        st = os.fstat(err.fileno())
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        done = subprocess.run([sys.executable, "-m", "vac.daemon", "--config", str(conf),
                               "--cycles", "3", "--cycle-seconds", "0"], cwd=REPO, env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                              timeout=120)
    lines = (tmp_path / "journal").read_text().splitlines()
    assert done.returncode == 0, lines
    errors = [line for line in lines if line.startswith("<3>")]
    assert len(errors) == 1 and "vac_space" in errors[0], lines
    assert errors[0].startswith("<3>ERROR "), errors
    assert len([line for line in lines if line.startswith("<6>INFO cycle ")]) == 3, lines


def test_otherwise_vacd_logs_to_its_log_file(tmp_path):
    stderr_path = tmp_path / "stderr"
    log_file = _vacd(tmp_path, stderr_path, env_extra=False)
    text = log_file.read_text()
    assert "vacd[" in text and ": INFO cycle 1: " in text
    assert stderr_path.read_text() == ""


def test_logrotate_rotates_the_log_vacd_writes():
    from vac import daemon

    with open(os.path.join(REPO, "etc", "logrotate.d", "vacd")) as f:
        first = [line for line in f if not line.startswith("#")][0]
    assert daemon.LOG_FILE in first.split()
