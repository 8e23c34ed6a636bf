# SPDX-License-Identifier: BSD-2-Clause
"""A state directory as the original Vac 03 left it, for the
switching tests: slots/<machine>, machines/<created>_<machinetype>_<machine>/ with MJF,
joboutputs/, user_data, started and the `0.0 0.0` heartbeat, and nothing of ours (no
backend.json). Written with plain file writes, the way the original's createFile did.
"""
from __future__ import annotations

import os
import time
from typing import Dict, Optional


def _write(path: str, text: str, mode: int = 0o644) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def machine_dir(state: str, name: str, machinetype: str, model: str, user_data: str,
                created: Optional[int] = None, processors: int = 1, mb: int = 64,
                wallclock: int = 86400) -> str:
    """Write one running machine's directory and its slot record; returns the directory."""
    created = int(time.time()) - 30 if created is None else created
    path = os.path.join(state, "machines", f"{created}_{machinetype}_{name}")
    for sub in ("machinefeatures", "jobfeatures", "joboutputs"):
        os.makedirs(os.path.join(path, sub), 0o755)
    for sub in ("slots", "tmp", "finishes", "pipescache", "apel-archive", "apel-outgoing"):
        os.makedirs(os.path.join(state, sub), 0o755, exist_ok=True)
    _write(os.path.join(state, "slots", name), f"{created} {machinetype} {model}")
    shutdown = created + wallclock
    machine: Dict[str, str] = {"total_cpu": str(processors), "phys_cores": str(processors),
                               "log_cores": str(processors), "jobslots": "1",
                               "shutdowntime": str(shutdown)}
    job: Dict[str, str] = {
        "shutdowntime_job": str(shutdown), "cpufactor_lrms": "1.0",
        "cpu_limit_secs_lrms": str(wallclock * processors),
        "cpu_limit_secs": str(wallclock * processors),
        "wall_limit_secs_lrms": str(wallclock), "wall_limit_secs": str(wallclock),
        "jobstart_secs": str(created), "max_rss_bytes": str(mb * processors * 1048576),
        "mem_limit_MB": str(mb * processors * 1048576 // 1000000),
        "allocated_cpu": f"{processors}\n", "allocated_CPU": f"{processors}\n"}
    for key, value in machine.items():
        _write(os.path.join(path, "machinefeatures", key), value)
    for key, value in job.items():
        _write(os.path.join(path, "jobfeatures", key), value)
    _write(os.path.join(path, "user_data"), user_data, 0o755)
    os.mkdir(os.path.join(path, "mnt"), 0o755)
    return path


def mark_started(path: str, job_id: str) -> None:
    """The end of the original's create: job_id from the backend, `started`, `heartbeat`."""
    _write(os.path.join(path, "jobfeatures", "job_id"), job_id)
    _write(os.path.join(path, "started"), str(int(time.time())))
    _write(os.path.join(path, "heartbeat"), "0.0 0.0")


def mark_finished(path: str, message: str) -> None:
    _write(os.path.join(path, "joboutputs", "shutdown_message"), message)
    _write(os.path.join(path, "finished"), "")
