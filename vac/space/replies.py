# SPDX-License-Identifier: BSD-2-Clause
"""The bodies of the responder's replies, read from the state directory alone.

machine_status per slot, machinetype_status per configured machinetype (this factory's
census, counted as the cycle counts it) and factory_status (counts, capacity, host facts).
Nothing here calls a backend or fetches a pipe: machine directories, the counts file,
finishes/ and /proc are all it reads. A shutdown time is the second its file landed in (its
ctime), as the original reports it (vac.machine.stamped).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from vac import fsutil
from vac.config.model import Config
from vac.host import facts
from vac.machine import stamped
from vac.machine.directory import MachineDir, MachineState, read_slot_record
from vac.machine.finishes import SHUTDOWN_MESSAGE, last_outcome
from vac.machine.observed import Observed
from vac.machine.slots import make_slots
from vac.space import censusdata
from vac.space.messages import STRING_LIMIT, two_decimals

MESSAGE_LIMIT = 255   # shutdown messages are cut to this in replies
HEARTBEATS = ("factory-heartbeat", "responder-heartbeat", "mjf-heartbeat", "metadata-heartbeat")


def _cut(text: Optional[str], limit: int = MESSAGE_LIMIT) -> Optional[str]:
    return None if text is None else text[:min(limit, STRING_LIMIT)]


def _int(value: Optional[float]) -> Optional[int]:
    return None if value is None else int(value)


def _slot_dirs(config: Config):
    s = config.settings
    for slot in make_slots(s.factory_name, s.host_processors):
        record = read_slot_record(s.paths, slot.name)
        yield slot, record, MachineDir.for_record(s.paths, slot.name, record)


def machine_statuses(config: Config) -> List[Dict[str, Any]]:
    """One machine_status body per slot, empty slots included (without the header): an empty
    slot as the original sends it, 0 CPU seconds, 0 CPU % and 0.0 HS06 (not null)."""
    bodies = []
    for slot, record, directory in _slot_dirs(config):
        body: Dict[str, Any] = {"machine": slot.name, "state": MachineState.SHUTDOWN.value,
                                "machine_model": None, "uuid": None, "created_time": None,
                                "started_time": None, "heartbeat_time": None, "num_cpus": 0,
                                "num_processors": 0, "cpu_seconds": 0,
                                "cpu_percentage": 0, "hs06": 0.0, "machinetype": None,
                                "shutdown_message": None, "shutdown_time": None}
        if directory is not None:
            body.update(machine_body(directory, record.model))
        bodies.append(body)
    return bodies


def machine_body(directory: MachineDir, model: str) -> Dict[str, Any]:
    """A machine's machine_status fields, typed as the original sends them: whole CPU
    seconds (an int), the heartbeat's CPU % (a float), or 0 when the heartbeat has none."""
    state = directory.disk_state()
    processors = directory.processors
    cpu_seconds, percent = directory.heartbeat_values()
    body = {"state": state.value, "machine_model": model, "uuid": _cut(directory.job_id),
            "created_time": directory.created, "started_time": _int(directory.started),
            "heartbeat_time": _int(directory.heartbeat_time), "num_cpus": processors,
            "num_processors": processors, "cpu_seconds": int(cpu_seconds or 0),
            "cpu_percentage": 0 if percent is None else two_decimals(percent),
            "hs06": two_decimals(censusdata.machine_hs06(directory.hs06, processors)),
            "machinetype": directory.machinetype, "shutdown_message": None,
            "shutdown_time": None}
    if state in (MachineState.SHUTDOWN, MachineState.FAILED):   # Failed: creation failed
        body["shutdown_message"] = _cut(directory.shutdown_message)
        body["shutdown_time"] = _landed(directory, SHUTDOWN_MESSAGE) or \
            _landed(directory, "finished")
    fqan = directory.read("accounting_fqan", 1024)
    if fqan and fqan.strip():
        body["fqan"] = _cut(fqan.strip())
    return body


def _landed(directory: MachineDir, rel: str) -> Optional[int]:
    """A time reported as the original reports it: the second the file landed in (its
    ctime), which the guest cannot set as it can the mtime (vac.machine.stamped)."""
    return stamped.landed(directory.file(rel))


def observed_from_disk(config: Config) -> List[Observed]:
    """Each slot as its directory alone shows it (what the responder counts from)."""
    result = []
    for slot, record, directory in _slot_dirs(config):
        if directory is None:
            result.append(Observed(slot=slot, finished=True, processors=0))
            continue
        finished = directory.finished is not None
        result.append(Observed(
            slot=slot, machinetype=directory.machinetype, model=record.model,
            state=directory.disk_state(), created=directory.created,
            started=directory.started, finished=finished, processors=directory.processors,
            shutdown_time=directory.shutdown_time, cpu_seconds=directory.cpu_seconds,
            shutdown_message=directory.shutdown_message if finished else None,
            hs06=directory.hs06, last_heartbeat=directory.heartbeat_time))
    return result


def local_census(config: Config, now: float) -> Dict[str, censusdata.Census]:
    """This factory's census from disk: the machinetype_status numbers, by machinetype."""
    paths = config.settings.paths
    outcomes = {}
    for name in config.machinetypes:
        outcome = last_outcome(paths, name, landed=True)
        if outcome is not None:
            outcomes[name] = outcome
    return censusdata.local_census(observed_from_disk(config), outcomes, config.machinetypes, now)


def machinetype_statuses(config: Config, now: float) -> List[Dict[str, Any]]:
    """One machinetype_status body per configured machinetype."""
    census = local_census(config, now)
    bodies = []
    for name, mt in sorted(config.machinetypes.items()):
        body = censusdata.status_fields(census[name])
        body["shutdown_message"] = _cut(body["shutdown_message"])
        body.update({"machinetype": name,
                     "bytes_per_processor": mt.mb_per_processor * 1048576,
                     "max_wallclock_seconds": mt.max_wallclock_seconds,
                     "max_processors": mt.max_processors})
        if mt.accounting_fqan:
            body["fqan"] = _cut(mt.accounting_fqan)
        bodies.append(body)
    return bodies


def factory_status(config: Config, now: float, proc_root: str = "/proc") -> Dict[str, Any]:
    """The factory_status body: counts, capacity, disk, memory, load, heartbeats."""
    s = config.settings
    counts = (fsutil.read_optional(s.paths.counts, 256) or "").split()
    numbers = [_float(v) for v in counts] if len(counts) == 5 else [0.0] * 5
    running_machines, _, running_processors, _, running_hs06 = numbers
    capacity = s.total_processors
    body: Dict[str, Any] = {
        "running_cpus": int(running_processors), "running_processors": int(running_processors),
        "running_machines": int(running_machines), "running_hs06": two_decimals(running_hs06),
        "max_cpus": capacity, "max_processors": capacity, "max_machines": capacity,
        "max_hs06": two_decimals(capacity * (s.hs06_per_processor or 1.0)),
        "total_cpus": capacity, "total_machines": capacity,
        "total_hs06": two_decimals(capacity * (s.hs06_per_processor or 1.0))}
    body.update(_disk("root", "/tmp"))
    vac_disk = _disk("vac", s.state_dir)
    body.update(vac_disk)
    body["daemon_disk_avail_kb"] = vac_disk["vac_disk_avail_kb"]
    body["daemon_disk_avail_inodes"] = vac_disk["vac_disk_avail_inodes"]
    body.update(_host(proc_root, now))
    for name in HEARTBEATS:
        mtime = fsutil.mtime_or_none(os.path.join(s.state_dir, name))
        body[name.replace("-", "_") + "_time"] = int(mtime) if mtime else 0
    return body


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def _disk(prefix: str, path: str) -> Dict[str, int]:
    try:
        st = os.statvfs(path)
        kb, inodes = st.f_bavail * st.f_frsize // 1024, st.f_favail
    except OSError:
        kb, inodes = 0, 0
    return {f"{prefix}_disk_avail_kb": int(kb), f"{prefix}_disk_avail_inodes": int(inodes)}


def _host(proc_root: str, now: float) -> Dict[str, Any]:
    try:
        load = facts.read_loadavg(proc_root)[2]
    except (OSError, ValueError, IndexError):
        load = 0.0
    meminfo = facts.parse_meminfo(fsutil.read_optional(os.path.join(proc_root, "meminfo"))
                                  or "")
    uptime = _float((fsutil.read_optional(os.path.join(proc_root, "uptime"), 256)
                     or "0").split()[0] or "0")
    release = os.uname().release
    issue = None
    for path in ("/etc/redhat-release.vac", "/etc/redhat-release"):
        text = fsutil.read_optional(path, 4096)
        if text and text.strip():
            issue = text.strip().splitlines()[0]
            break
    total, free = meminfo.get("MemTotal", 0), meminfo.get("MemFree", 0)
    swap_total, swap_free = meminfo.get("SwapTotal", 0), meminfo.get("SwapFree", 0)
    return {"load_average": two_decimals(load), "kernel_version": _cut(release),
            "os_issue": _cut(issue or release), "boot_time": int(now - uptime),
            "swap_used_kb": swap_total - swap_free, "swap_free_kb": swap_free,
            "mem_used_kb": total - free, "mem_total_kb": total}

