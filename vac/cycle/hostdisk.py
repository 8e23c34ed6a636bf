# SPDX-License-Identifier: BSD-2-Clause
"""Admission by free disk space, the cycle's side: the host's disk read for each plan, and a
warning in vacd's log when free space starts (and stops) holding creation back.

The decision is vac.cycle.diskgate (pure, in the planner). Here: HostDisk reads, through
vac.host.diskspace, the filesystems of the state directory, the scratch pool and each data
root the pool's backends found available this cycle say they have (Backend.data_root, asked
until a backend answers, then kept; labelled "<backend> <what it is>": "docker data root",
"podman storage"), each mounted scratch's free space (a project quota's directory: its
limit less its usage, as the quota counts them), and the room of the running machines'
disk files (Backend.disk_growth, asked each cycle; their directories are watched too, as
"<backend> disk files"). Reading never raises and never stops a cycle: a place that cannot be
read is left out (said once in the log), and the running machines are managed whatever the
disk. It also says each machine's scratch bytes in use, for its heartbeat (scratch_bytes): a
container's mounted scratch, or a VM's scratch disk file (Backend.disk_growth's SCRATCH_DISK
files: their allocated bytes, found by the slot record of the domain's machine name), or a
VM's thin scratch volume (the bytes its thin pool has given it, from the pool's reading);
a VM whose scratch disk is a thick logical volume has none said (all of it is its own from
the start, and what the guest has written in it only the guest knows).
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple

from vac.backends import scratchmount
from vac.backends.base import SCRATCH_DISK, SCRATCH_VOLUME, Backend, DiskGrowth
from vac.config.model import Config
from vac.cycle.planner import Plan
from vac.errors import VacError
from vac.host import diskspace, projquota
from vac.host.diskspace import DiskReading, Growing, Place
from vac.machine import scratch, thinpool
from vac.machine.directory import MachineDir
from vac.machine.slots import ordinal_of
from vac.paths import Paths

log = logging.getLogger(__name__)


class HostDisk:
    """The host's disk for the planner: planner.plan(..., **inputs(config, pool)), then
    kept(plan) says in the log when creation stops for free space and when it resumes."""

    def __init__(self, read: Optional[Callable[[Config, Any, Dict[str, Optional[str]]],
                                              Optional[DiskReading]]] = None):
        self._read = read if read is not None else read_host
        self._roots: Dict[str, Optional[str]] = {}   # backend -> its data root, once known
        self.stopped: Optional[str] = None    # the text of the stop, while there is one
        self._problems: tuple = ()
        self.last: Optional[DiskReading] = None

    @classmethod
    def beside(cls, host_load: bool) -> HostDisk:
        """The host's disk beside the host's load average; none beside a synthetic one (a
        factory under test reads nothing of the host it runs on)."""
        if host_load:
            return cls()
        return cls(lambda config, pool, roots: None)

    def inputs(self, config: Config, pool: Any) -> Dict[str, Any]:
        """The planner's disk argument: this reading (None when there is none)."""
        try:
            reading = self._read(config, pool, self._roots)
        except (OSError, VacError) as e:   # never stop a cycle for it: no reading, no stop
            log.warning("cannot read the host's free disk space: %s", e)
            reading = None
        if reading is not None and reading.problems != self._problems and reading.problems:
            log.warning("free disk space not watched for %s", "; ".join(reading.problems))
        self._problems = reading.problems if reading is not None else ()
        self.last = reading
        return {"disk": reading}

    def scratch_bytes(self, directory_name: str) -> Optional[int]:
        """The bytes in use in this machine directory's mounted scratch or VM scratch disk
        file, as the last reading found them; None when it has neither (an LV scratch disk
        is no file: None too) or there was no reading."""
        found = self.last.scratches.get(directory_name) if self.last is not None else None
        return found.used if found is not None else None

    def kept(self, plan: Plan) -> Plan:
        """Log the start and the end of a stop for free disk space; the plan."""
        now = plan.disk_stop.text if plan.disk_stop is not None else None
        if now is not None and self.stopped is None:
            log.warning("creation stops for free disk space: %s", now)
        elif now is None and self.stopped is not None:
            log.info("creation resumes: free disk space back above the floor")
        self.stopped = now
        return plan


def read_host(config: Config, pool: Any, roots: Dict[str, Optional[str]]) -> DiskReading:
    """The reading of this host for this configuration: the places and disk files of the
    pool's backends found available this cycle (`roots` keeps their data roots once known)."""
    s = config.settings
    mechanism = scratchmount.mechanism(s.volume_group, s.paths.state_dir)
    backends = available(pool)
    files = growth_files(backends)
    places, growing = disk_files(files)
    got = read_with_pool(s.paths.state_dir, mechanism, data_roots(backends, roots) + places,
                         growing)
    volumes = {name: used for name, used in got.thin_given.items()
               if ordinal_of(s.factory_name, name) >= 0}
    disks = disk_scratches(s.paths, [grown for _, grown in files], volumes)
    return replace(got, scratches={**disks, **got.scratches}) if disks else got


def read_with_pool(state_dir: str, mechanism: scratch.Mechanism, places: List[Place],
                   growing: List[Growing]) -> DiskReading:
    """diskspace.read of these places, with the thin pool the scratch is made in when it is
    (one that LVM cannot report is named among the problems: the rest is still read)."""
    mounts = scratch.mounted()
    try:
        thin = thinpool.reading(mechanism, scratch.pool(state_dir), mounts)
        problem = ()
    except VacError as e:
        thin, problem = None, (f"{diskspace.THIN} {mechanism.group}/{mechanism.pool}: {e}",)
    got = diskspace.read(state_dir, scratch.pool(state_dir), mounts, places,
                         mechanism.name != scratch.NONE, growing,
                         thin=thin.filesystem if thin is not None else None)
    if thin is not None:
        got = replace(got, thin_given=dict(thin.given))
    if mechanism.name == scratch.QUOTA:
        got = replace(got, scratches={**got.scratches, **quota_scratches(state_dir)})
    return replace(got, problems=got.problems + problem) if problem else got


def quota_scratches(state_dir: str) -> Dict[str, diskspace.Scratch]:
    """Machine directory name -> the used and free bytes of its project quota scratch (the
    pool's device and the quota interface found once for them all)."""
    try:
        names = os.listdir(scratch.pool(state_dir))
        device = projquota.device(scratch.pool(state_dir))[0]
    except OSError:
        return {}
    kernel = projquota.Kernel()
    found = {}
    for name in names:
        got = (scratch.quota_usage(state_dir, name, kernel, device)
               if not name.startswith(".") else None)
        if got is not None:
            found[name] = diskspace.Scratch(got[0], max(got[1] - got[0], 0))
    return found


def available(pool: Any) -> List[Backend]:
    """The pool's backends found available this cycle, by name."""
    found = []
    for name, probe in sorted((pool.probed() if pool is not None else {}).items()):
        if probe.available:
            try:
                found.append(pool.get(name))
            except VacError:
                continue
    return found


def data_roots(backends: List[Backend], roots: Dict[str, Optional[str]]) -> List[Place]:
    """(label, data root) of each backend that has one, asked until it answers (kept in
    `roots`, None too: a backend that keeps nothing is not asked again)."""
    places = []
    for backend in backends:
        if backend.NAME not in roots:
            try:
                roots[backend.NAME] = backend.data_root()
            except (OSError, VacError):   # an engine that cannot say: not watched this cycle
                continue
        root = roots[backend.NAME]
        if root:
            places.append((f"{backend.NAME} {backend.DATA_ROOT_NAME}", root))
    return places


def growth_files(backends: List[Backend]) -> List[Tuple[str, DiskGrowth]]:
    """(backend name, file) of each running machine's growing disk file (a backend that
    fails to say is left out this cycle, said in the log)."""
    found: List[Tuple[str, DiskGrowth]] = []
    for backend in backends:
        try:
            files = backend.disk_growth()
        except (OSError, VacError) as e:   # the contract says it does not: never stop a cycle
            log.warning("backend %s: cannot say its disk files' growth: %s", backend.NAME, e)
            continue
        found += [(backend.NAME, grown) for grown in files]
    return found


def disk_files(files: List[Tuple[str, DiskGrowth]]) -> Tuple[List[Place], List[Growing]]:
    """The directories of the running machines' growing disk files, each labelled
    "<backend> disk files", and each file's room by its directory."""
    places: List[Place] = []
    growing: List[Growing] = []
    for name, grown in files:
        growing.append((grown.directory, grown.room))
        place = (f"{name} disk files", grown.directory)
        if place not in places:
            places.append(place)
    return places, growing


def disk_scratches(paths: Paths, files: List[DiskGrowth],
                   volumes: Optional[Dict[str, int]] = None) -> Dict[str, diskspace.Scratch]:
    """Machine directory name -> the bytes allocated to its scratch disk files (a VM's), or
    given to its thin scratch volume (`volumes`: machine name -> bytes; only a machine whose
    backend record says its scratch disk is its volume), free 0: their room is counted with
    the disk files' growth or in the thin pool. A machine name whose slot record cannot be
    read or points at no directory is left out."""
    allocated: Dict[str, int] = {}
    for grown in files:
        if grown.kind == SCRATCH_DISK:
            allocated[grown.machine] = allocated.get(grown.machine, 0) + grown.allocated
    found = {}
    for machine, used in allocated.items():
        directory = _slot_directory(paths, machine)
        if directory is not None:
            found[os.path.basename(directory.path)] = diskspace.Scratch(used, 0)
    for machine, used in (volumes or {}).items():
        directory = _slot_directory(paths, machine)
        if directory is not None and directory.read_backend_record().get(SCRATCH_VOLUME):
            found[os.path.basename(directory.path)] = diskspace.Scratch(used, 0)
    return found


def _slot_directory(paths: Paths, machine: str) -> Optional[MachineDir]:
    """The directory the slot record of `machine` points at; None if there is none or the
    record cannot be read."""
    try:
        return MachineDir.for_slot(paths, machine)
    except (OSError, VacError):
        return None
