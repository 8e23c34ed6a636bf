# SPDX-License-Identifier: BSD-2-Clause
"""Pressure stall information (PSI): how long work waited for CPU, memory and I/O.

The kernel (4.20 and later, unless booted with psi=0) keeps, for the whole host in
/proc/pressure/{cpu,memory,io} and, on cgroup v2, for each cgroup in its cpu.pressure,
memory.pressure and io.pressure, two lines in the same format:

    some avg10=1.23 avg60=0.80 avg300=0.25 total=123456789
    full avg10=0.00 avg60=0.00 avg300=0.00 total=0

`some`: the share of time (per cent) at least one task was stalled waiting for the resource;
`full`: all non-idle tasks were stalled at once. avg10/avg60/avg300 are running averages over
10, 60 and 300 seconds; total is the stall time since boot in microseconds. Host-wide cpu has
no `full` line before Linux 5.13 (and it is always zero there since).

A host without PSI is told apart from a broken one: a pressure file absent (a kernel built
without PSI or booted with psi=0 has no /proc/pressure; a cgroup whose cgroup.pressure is 0
hides its files) or a read that fails with EOPNOTSUPP (PSI off) raise NoPressure; anything
else unreadable raises ValueError naming the file. The Gauge reads a set of files (the host's or a cgroup's) and gives the stall
time since its previous reading of the same files too. Reading costs three small files.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from vac import fsutil
from vac.errors import VacError
from vac.host import cgroups

RESOURCES = ("cpu", "memory", "io")
LINES = ("some", "full")
FILE_LIMIT = 4096
_FIELDS = ("avg10", "avg60", "avg300", "total")


class NoPressure(Exception):
    """This host (or this cgroup) keeps no pressure stall information; the text says why."""


@dataclass(frozen=True)
class Line:
    """One `some` or `full` line: averages in per cent, total stall since boot in seconds."""

    avg10: float
    avg60: float
    avg300: float
    total: float


@dataclass(frozen=True)
class Stall:
    """One resource: its `some` line and its `full` line (None where the kernel has none)."""

    some: Line
    full: Optional[Line] = None

    def line(self, which: str) -> Optional[Line]:
        return self.some if which == "some" else self.full


@dataclass(frozen=True)
class Reading:
    """Every resource's stall at `time`, and the stall seconds since the previous reading of
    the same source: (resource, "some"/"full") -> seconds (absent at the first reading, after
    a counter went back, or where the line is missing)."""

    time: float
    stalls: Mapping[str, Stall]
    since_last: Mapping[Tuple[str, str], float] = field(default_factory=dict)
    interval: Optional[float] = None   # seconds since the previous reading

    def avg10(self, resource: str, which: str) -> Optional[float]:
        stall = self.stalls.get(resource)
        line = stall.line(which) if stall is not None else None
        return line.avg10 if line is not None else None


def parse(text: str, where: str = "pressure file") -> Stall:
    """A pressure file's text as a Stall.

    Raises:
        ValueError: no `some` line, or a line not in the kernel's format (names `where`).
    """
    lines: Dict[str, Line] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split()
        if not words:
            continue
        if words[0] not in LINES or words[0] in lines:
            raise ValueError(f"{where} line {number}: unexpected {raw[:80]!r}")
        lines[words[0]] = _line(words[1:], f"{where} line {number}")
    if "some" not in lines:
        raise ValueError(f"{where}: no 'some' line")
    return Stall(some=lines["some"], full=lines.get("full"))


def _line(words, where: str) -> Line:
    values: Dict[str, float] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or key not in _FIELDS or key in values:
            raise ValueError(f"{where}: unexpected field {word[:40]!r}")
        try:
            number = float(value) if key != "total" else int(value, 10) / 1e6
        except ValueError:
            raise ValueError(f"{where}: {key} is not a number: {value[:40]!r}") from None
        if not number >= 0 or number == float("inf"):
            raise ValueError(f"{where}: {key} out of range: {value[:40]!r}")
        values[key] = number
    missing = [k for k in _FIELDS if k not in values]
    if missing:
        raise ValueError(f"{where}: no {', '.join(missing)}")
    return Line(**values)


def host_files(proc_root: str = "/proc") -> Dict[str, str]:
    """resource -> the host-wide pressure file."""
    return {r: os.path.join(proc_root, "pressure", r) for r in RESOURCES}


def cgroup_files(directory: str) -> Dict[str, str]:
    """resource -> a cgroup v2 directory's pressure file."""
    return {r: os.path.join(directory, f"{r}.pressure") for r in RESOURCES}


def cgroup_dir(cgroup_path: str,
               hierarchies: Optional[cgroups.Hierarchies] = None) -> Optional[str]:
    """Where a machine's cgroup ("/vac/x", as the 0:: line of /proc/<pid>/cgroup names it)
    keeps its pressure files: its directory in the cgroup2 mount (/sys/fs/cgroup on a v2
    host, /sys/fs/cgroup/unified on a hybrid one), or None without a cgroup2 mount (cgroup v1
    keeps no pressure per cgroup) or for a path outside it."""
    found = hierarchies if hierarchies is not None else cgroups.read_hierarchies()
    return cgroups.host_path(found.v2, cgroup_path) if found.v2 is not None else None


def read_file(path: str) -> Stall:
    """One pressure file as a Stall.

    Raises:
        NoPressure: the file is absent, or reading it is not supported (PSI off).
        ValueError: it cannot be read or is not in the kernel's format.
    """
    try:
        text = fsutil.read_text_nofollow(path, FILE_LIMIT)
    except (FileNotFoundError, NotADirectoryError):
        raise NoPressure(f"{path} does not exist (no PSI: a kernel without it, booted with "
                         "psi=0, or a cgroup whose cgroup.pressure is 0)") from None
    except OSError as e:
        if e.errno == errno.EOPNOTSUPP:
            raise NoPressure(f"{path}: reading is not supported (PSI is off: psi=0 on the "
                             "kernel command line, or cgroup.pressure is 0)") from None
        raise ValueError(f"{path}: {e.strerror or e}") from None
    except VacError as e:
        raise ValueError(str(e)) from None
    return parse(text, path)


def read(files: Mapping[str, str]) -> Dict[str, Stall]:
    """Every resource's Stall from its file (see read_file for what it raises)."""
    return {resource: read_file(path) for resource, path in files.items()}


class Gauge:
    """Reads one source (the host's files, or one cgroup's) and remembers the last totals, so
    each reading says the stall time since the one before."""

    def __init__(self, files: Mapping[str, str],
                 reader: Callable[[Mapping[str, str]], Dict[str, Stall]] = read):
        self.files = dict(files)
        self.reader = reader
        self._last: Optional[Reading] = None

    def read(self, now: float) -> Reading:
        """This reading (raises as read() does; the last reading is kept then)."""
        stalls = self.reader(self.files)
        reading = Reading(now, stalls, *_since(self._last, stalls, now))
        self._last = reading
        return reading


def _since(last: Optional[Reading], stalls: Mapping[str, Stall],
           now: float) -> Tuple[Dict[Tuple[str, str], float], Optional[float]]:
    if last is None or now <= last.time:
        return {}, None
    since = {}
    for resource, stall in stalls.items():
        before = last.stalls.get(resource)
        for which in LINES:
            line = stall.line(which)
            old = before.line(which) if before is not None else None
            if line is not None and old is not None and line.total >= old.total:
                since[(resource, which)] = line.total - old.total
    return since, now - last.time


def host_gauge(proc_root: str = "/proc") -> Gauge:
    return Gauge(host_files(proc_root))


def cgroup_gauge(directory: str) -> Gauge:
    return Gauge(cgroup_files(directory))


def as_dict(reading: Optional[Reading]) -> Optional[Dict[str, Any]]:
    """A reading as plain data (plan.json, vac slots --json): resource -> line -> avg10,
    avg60, avg300 (per cent), total_seconds (since boot) and stall_seconds (since the last
    reading, where known); with the reading's time and interval. None for None."""
    if reading is None:
        return None
    data: Dict[str, Any] = {"time": reading.time, "interval": reading.interval}
    for resource, stall in sorted(reading.stalls.items()):
        lines = {}
        for which in LINES:
            line = stall.line(which)
            if line is not None:
                lines[which] = {"avg10": line.avg10, "avg60": line.avg60,
                                "avg300": line.avg300, "total_seconds": line.total,
                                "stall_seconds": reading.since_last.get((resource, which))}
        data[resource] = lines
    return data
