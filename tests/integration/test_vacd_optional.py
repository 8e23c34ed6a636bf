# SPDX-License-Identifier: BSD-2-Clause
"""A real absence: vacd run where prometheus_client is not on the path at all logs one error
naming the setting and the packages to install, and keeps cycling."""
from __future__ import annotations

import os
import subprocess
import sys

from testbed import REPO

VACD_CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
state_dir = {state}
enable_fake_backend = true
host_processors = 2
overload_per_processor = 1000
metrics_port = 19155

[machinetype alpha]
machine_model = fake
target_share = 1
user_data = {template}
fake_run_seconds = 3600
"""


def _path_without(tmp_path, module: str) -> str:
    """A directory holding every site-packages entry but module's (as symlinks)."""
    shadow = tmp_path / "site"
    shadow.mkdir()
    for entry in sys.path:
        if not entry.endswith("-packages") or not os.path.isdir(entry):
            continue
        for name in os.listdir(entry):
            if name.split("-")[0].split(".")[0].lower() == module.lower():
                continue
            if not (shadow / name).exists():
                (shadow / name).symlink_to(os.path.join(entry, name))
    return str(shadow)


def test_vacd_without_prometheus_client_logs_one_error_and_keeps_cycling(tmp_path):
    template = tmp_path / "user_data"
    template.write_text("#!/bin/sh\n")
    conf = tmp_path / "vac.conf"
    conf.write_text(VACD_CONF.format(state=tmp_path / "state", template=template))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, _path_without(
        tmp_path, "prometheus_client")]))
    gone = subprocess.run([sys.executable, "-S", "-c", "import prometheus_client"], env=env,
                          capture_output=True, cwd=str(tmp_path), timeout=120)
    assert gone.returncode != 0                           # really absent
    done = subprocess.run([sys.executable, "-S", "-m", "vac.daemon", "--config", str(conf),
                           "--foreground", "--cycles", "3", "--cycle-seconds", "0.2"],
                          env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    errors = [line for line in done.stderr.splitlines() if "prometheus_client" in line]
    assert len(errors) == 1, done.stderr
    assert ("metrics_port is set but the Python module prometheus_client is not installed: "
            "install python3-prometheus_client (EL9) or pip install prometheus-client") \
        in errors[0]
    assert "Traceback" not in done.stderr
    assert not [line for line in done.stderr.splitlines()     # it holds: no false all-clear
                if "no longer reported" in line and "prometheus_client" in line]
