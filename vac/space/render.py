# SPDX-License-Identifier: BSD-2-Clause
"""The text of `vac machines`, `vac machinetype` and `vac factories` (pure).

Each function takes the client's Result and `now` and returns lines: a header naming the
columns, the original's columns, then a totals line, then one line per factory that sent
nothing, saying why: its name does not resolve, or no reply came within the timeout. A factory
is shown by its short name, or whole when it was asked by address. Reply fields were
type-checked by vac.space.messages; a field that is absent or null shows as the original
showed it.
"""
from __future__ import annotations

import ipaddress
import time
from typing import Any, Dict, List, Optional

from vac.config import models
from vac.space.client import Result

MODEL_CLASS = {m: models.kind(m) for m in models.of_kind(models.VM, models.DOCKER_CONTAINER,
                                                        models.APPTAINER_CONTAINER)}


# Above the original's columns (an addition: the original printed no header): each word over
# the first character of its column, Procs and CPU% over the last.
MACHINES_HEADER = (f"{'Machine':15} {'Machinetype':14}   {'State':8}{'Procs':>5} {'Type'} "
                   f"{'Info':20} {'CPU%'}")
MACHINETYPE_HEADER = 'Factory Running HS06 Last-outcome "Message"'
FACTORIES_HEADER = ("Factory Processors(running/max) Machines(running/max) Load /tmp-free-KiB "
                    'state-dir-free-KiB Memory-KiB(used/total) "Version"')


def short(name: Optional[str]) -> str:
    """A host name up to its first dot; an address whole."""
    name = name or ""
    try:
        ipaddress.ip_address(name)
        return name
    except ValueError:
        return name.split(".")[0]


def _num(reply: Dict[str, Any], name: str, default: float = 0.0) -> float:
    value = reply.get(name)
    return default if value is None else float(value)


def machine_line(reply: Dict[str, Any], now: float) -> str:
    """One slot in the original's columns, character for character: the name (padded to 15,
    never cut), a space, the machinetype (14), a space, two spaces and the state (9, padded to
    11 in all), two spaces, processors (%2d), a space, the model class, a space, the info (21)
    and the recent CPU % (6). A slot without a machinetype has no info nor CPU %."""
    state = reply.get("state") or ""
    processors = reply.get("num_cpus")
    name = short(reply.get("machine"))
    machinetype = reply.get("machinetype")
    line = (f"{name:15} {(machinetype or '----------')[:14]:14} {('  ' + state)[:11]:11}  "
            + (f"{int(processors):2d}" if processors is not None else " 1")
            + f" {MODEL_CLASS.get(reply.get('machine_model') or '', '??')} ")
    info, percent = (_info(reply, state, now), _percent(reply, state)) if machinetype \
        else ("", "")
    return line + f"{info:21.21}{percent:6}"


def _info(reply: Dict[str, Any], state: str, now: float) -> str:
    """Hours running and CPU use since start, minutes starting, or the shutdown message."""
    started, created = reply.get("started_time"), reply.get("created_time")
    if state == "Running" and started is not None:
        info = f"{(now - started) / 3600.0:5.2f} hrs"
        beat = reply.get("heartbeat_time")
        if beat is not None and beat > started:
            info += f" {100.0 * _num(reply, 'cpu_seconds') / (beat - started):0.1f}%"
        return info
    if state == "Starting" and created is not None:
        return f" {(now - created) / 60.0:0.2f} mins"
    if state in ("Shut down", "Failed") and reply.get("shutdown_message"):
        return f'"{reply["shutdown_message"][:19]}"'
    return ""


def _percent(reply: Dict[str, Any], state: str) -> str:
    if state == "Running" and reply.get("cpu_percentage") is not None:
        return f"{_num(reply, 'cpu_percentage'):5.1f}%"
    return ""


def silent_line(result: Result, name: str, seen: str = "") -> str:
    """Why a factory sent nothing: its name does not resolve, or no reply in the timeout."""
    if name in result.unresolved:
        return f"{name} (silent: does not resolve{seen})"
    return f"{short(name)} (silent: no reply in {result.timeout:g} s{seen})"


def _silent(result: Result) -> List[str]:
    return [silent_line(result, name) for name in result.silent()]


def machines_lines(result: Result, now: float) -> List[str]:
    """`vac machines`: a header, one line per slot sorted by factory then machine, totals."""
    lines, running, processors, hs06 = [MACHINES_HEADER], 0, 0, 0.0
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
    """`vac machinetype NAME`: a header; per factory that reports it, running and last
    outcome; totals."""
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
    return [MACHINETYPE_HEADER] + lines + _silent(result)


def factory_line(reply: Dict[str, Any], asked: Optional[str] = None) -> str:
    """One factory's capacity and use, under the name it was asked by (else its own)."""
    def n(name: str, old: str = "") -> int:
        value = reply.get(name)
        if value is None and old:
            value = reply.get(old)
        return int(value or 0)
    return (f"{short(asked or reply.get('factory'))} {n('running_processors', 'running_cpus'):2d}/"
            f"{n('max_processors', 'total_cpus')} {n('running_machines'):2d}/"
            f"{n('max_machines', 'total_machines')} {_num(reply, 'load_average'):6.2f} "
            f"{n('root_disk_avail_kb'):9d} {n('vac_disk_avail_kb'):9d} "
            f"{n('mem_used_kb'):8d}/{n('mem_total_kb'):8d} "
            f'"{reply.get("vac_version") or ""}"')


def factories_lines(result: Result, census: Optional[Dict[str, Dict[str, Any]]] = None,
                    now: Optional[float] = None) -> List[str]:
    """`vac factories`: a header, one line per factory, then totals and the silent factories
    (with how long ago the space census last heard of them, if it did)."""
    lines, running, capacity, machines = [], 0, 0, 0
    for factory in sorted(result.replies):
        reply = result.replies[factory].get("")
        if reply is None:
            continue
        lines.append(factory_line(reply, factory))
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
        silent.append(silent_line(result, name, when))
    return [FACTORIES_HEADER] + lines + silent


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
