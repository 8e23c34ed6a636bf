# SPDX-License-Identifier: BSD-2-Clause
"""The text of `vac machines`, `vac machinetype` and `vac factories` (reference §13), pure.

Each function takes the client's Result and `now` and returns lines: the original's columns,
then a totals line, then one line per silent factory. Reply fields were type-checked by
vac.space.messages; a field that is absent or null shows as the original showed it.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from vac.space.client import Result

MODEL_CLASS = {"cernvm3": "VM", "cernvm4": "VM", "vm-raw": "VM", "docker": "DC",
               "singularity": "SC", "apptainer": "SC"}


def short(name: Optional[str]) -> str:
    return (name or "").split(".")[0]


def _num(reply: Dict[str, Any], name: str, default: float = 0.0) -> float:
    value = reply.get(name)
    return default if value is None else float(value)


def machine_line(reply: Dict[str, Any], now: float) -> str:
    """One slot: name, machinetype, state, processors, model class, info, recent CPU."""
    state = reply.get("state") or ""
    processors = reply.get("num_cpus")
    line = (f"{short(reply.get('machine')):15.15} "
            f"{(reply.get('machinetype') or '----------')[:14]:14}  {state[:11]:11}  "
            + (f"{int(processors):2d}" if processors is not None else " 1")
            + f" {MODEL_CLASS.get(reply.get('machine_model') or '', '??')} ")
    info = ""
    started, created = reply.get("started_time"), reply.get("created_time")
    if state == "Running" and started is not None:
        info = f"{(now - started) / 3600.0:5.2f} hrs"
        beat = reply.get("heartbeat_time")
        if beat is not None and beat > started:
            info += f" {100.0 * _num(reply, 'cpu_seconds') / (beat - started):0.1f}%"
    elif state == "Starting" and created is not None:
        info = f" {(now - created) / 60.0:0.2f} mins"
    elif state == "Shut down" and reply.get("shutdown_message"):
        info = f'"{reply["shutdown_message"][:19]}"'
    line += f"{info:21}"
    if state == "Running":
        line += f" {_num(reply, 'cpu_percentage'):5.1f}%"
    return line.rstrip()


def _silent(result: Result) -> List[str]:
    return [f"{short(name)} (silent: no reply)" for name in result.silent()]


def machines_lines(result: Result, now: float) -> List[str]:
    """`vac machines`: one line per slot sorted by factory then machine, then totals."""
    lines, running, processors, hs06 = [], 0, 0, 0.0
    for factory in sorted(result.replies):
        for name in sorted(result.replies[factory]):
            reply = result.replies[factory][name]
            lines.append(machine_line(reply, now))
            if reply.get("state") == "Running":
                running += 1
                processors += int(reply.get("num_cpus") or 1)
                hs06 += _num(reply, "hs06", float(reply.get("num_cpus") or 1))
    slots = sum(len(r) for r in result.replies.values())
    lines.append(f"Total: {running} running machines, {processors} processors, "
                 f"{hs06:.1f} HS06 in {slots} slots on {len(result.replies)} factories"
                 + (f", {len(result.silent())} silent" if result.silent() else ""))
    return lines + _silent(result)


def machinetype_lines(result: Result, machinetype: str) -> List[str]:
    """`vac machinetype NAME`: per factory that reports it, running and last outcome."""
    lines, machines, hs06 = [], 0, 0.0
    for factory in sorted(result.replies):
        reply = result.replies[factory].get(machinetype)
        if reply is None:
            continue
        count = reply.get("running_machines", reply.get("total_machines"))
        power = reply.get("running_hs06", reply.get("total_hs06"))
        count = int(count or 0)
        power = float(power or 0.0)
        machines += count
        hs06 += power
        when = reply.get("shutdown_time")
        shown = time.strftime("%d %b %H:%M:%S", time.localtime(when)) if when else "-"
        message = reply.get("shutdown_message") or "-"
        lines.append(f'{short(factory)} {count:2d} {power:5.1f} {shown} "{message}"')
    lines.append(f"Total: {machines} running {machinetype} machines, {hs06:.1f} HS06 on "
                 f"{len(lines)} factories")
    return lines + _silent(result)


def factory_line(reply: Dict[str, Any]) -> str:
    def n(name: str, old: str = "") -> int:
        value = reply.get(name)
        if value is None and old:
            value = reply.get(old)
        return int(value or 0)
    return (f"{short(reply.get('factory'))} {n('running_processors', 'running_cpus'):2d}/"
            f"{n('max_processors', 'total_cpus')} {n('running_machines'):2d}/"
            f"{n('max_machines', 'total_machines')} {_num(reply, 'load_average'):6.2f} "
            f"{n('root_disk_avail_kb'):9d} {n('vac_disk_avail_kb'):9d} "
            f"{n('mem_used_kb'):8d}/{n('mem_total_kb'):8d} "
            f'"{reply.get("vac_version") or ""}"')


def factories_lines(result: Result, census: Optional[Dict[str, Dict[str, Any]]] = None,
                    now: Optional[float] = None) -> List[str]:
    """`vac factories`: one line per factory, then totals and the silent factories (with
    how long ago the space census last heard of them, if it did)."""
    lines, running, capacity, machines = [], 0, 0, 0
    for factory in sorted(result.replies):
        reply = result.replies[factory].get("")
        if reply is None:
            continue
        lines.append(factory_line(reply))
        running += int(reply.get("running_processors") or reply.get("running_cpus") or 0)
        capacity += int(reply.get("max_processors") or reply.get("total_cpus") or 0)
        machines += int(reply.get("running_machines") or 0)
    lines.append(f"Total: {running}/{capacity} processors, {machines} running machines on "
                 f"{len(lines)} factories"
                 + (f", {len(result.silent())} silent" if result.silent() else ""))
    silent = []
    for name in result.silent():
        seen = (census or {}).get(name, {}).get("time_sent")
        when = ""
        if isinstance(seen, (int, float)) and not isinstance(seen, bool):
            when = f"; in the census {_ago((now or time.time()) - seen)} ago"
        silent.append(f"{short(name)} (silent: no reply{when})")
    return lines + silent


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
