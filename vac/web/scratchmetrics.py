# SPDX-License-Identifier: BSD-2-Clause
"""The machines' scratch as Prometheus metrics, read at scrape time:

    vac_machine_scratch_bytes{slot, machinetype}         bytes in use in a container's
                                                         /scratch or a VM's scratch disk file
                                                         (as its last heartbeat says)
    vac_machine_scratch_limit_bytes{slot, machinetype}   its size (scratch_limit_bytes)
    vac_scratch_pool_free_bytes                          free bytes where the scratch files grow

Only machines with a scratch measured have samples (a container's mounted scratch, a VM's
scratch disk file; not a VM's scratch disk on an LV); the pool's free space is there whenever a
configuration is loaded (scratch is thin: this is what the machines can still grow into).

And the filesystems admission by free disk space watches (vac.cycle.diskgate), as the last
cycle read them (plan.json), one sample per filesystem labelled with its path and what it
holds ("state directory", "scratch pool", "docker data root", "podman storage", "libvirt
disk files"):

    vac_disk_free_bytes{path, holds}      free bytes (as df shows them)
    vac_disk_size_bytes{path, holds}      its size
    vac_disk_floor_bytes{path, holds}     its floor (disk_floor_gb, disk_floor_fraction)
    vac_scratch_growth_bytes              what the machines' scratch and the VMs' disk files
                                          may still grow into
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

from prometheus_client.core import GaugeMetricFamily

from vac import planfile
from vac.config.model import Config
from vac.machine import scratch
from vac.machine.directory import MachineDir, read_slot_record
from vac.machine.slots import make_slots


def scratch_families(config: Optional[Config]) -> Iterable:
    used = GaugeMetricFamily("vac_machine_scratch_bytes", "Bytes in use in a machine's "
                             "scratch (a container's /scratch, a VM's scratch disk)",
                             labels=["slot", "machinetype"])
    limit = GaugeMetricFamily("vac_machine_scratch_limit_bytes", "The size of a machine's "
                              "scratch (a container's /scratch, a VM's scratch disk)",
                              labels=["slot", "machinetype"])
    free = GaugeMetricFamily("vac_scratch_pool_free_bytes", "Free bytes of the file system "
                             "the machines' scratch files grow in")
    if config is not None:
        s = config.settings
        for slot in make_slots(s.factory_name, s.host_processors):
            directory = MachineDir.for_record(s.paths, slot.name,
                                              read_slot_record(s.paths, slot.name))
            if directory is None:
                continue
            got = directory.scratch_bytes
            size = _int(directory.read(scratch.MJF_KEY, 64))
            if got is not None and size is not None:
                used.add_metric([slot.name, directory.machinetype], float(got))
                limit.add_metric([slot.name, directory.machinetype], float(size))
        try:
            free.add_metric([], float(scratch.free_bytes(s.paths.state_dir)))
        except OSError:
            pass
    yield used
    yield limit
    yield free


def disk_families(record: Optional[planfile.PlanRecord]) -> Iterable:
    """The watched filesystems' free, size and floor bytes, and the scratch's growth, as the
    last cycle read them."""
    disk: Mapping[str, Any] = (record.disk if record is not None else None) or {}
    labels = ["path", "holds"]
    families = {key: GaugeMetricFamily(f"vac_disk_{key}", text, labels=labels)
                for key, text in (("free_bytes", "Free bytes of a filesystem vacd watches"),
                                  ("size_bytes", "The size of a filesystem vacd watches"),
                                  ("floor_bytes", "No creation while a watched filesystem "
                                                  "has less free than this (and the growth)"))}
    growth = GaugeMetricFamily("vac_scratch_growth_bytes", "Bytes the machines' scratch and "
                               "VMs' disk files may still grow into, all together")
    for fs in disk.get("filesystems", ()):
        for key, family in families.items():
            if fs.get(key) is not None:
                family.add_metric([fs["path"], ",".join(fs.get("holds", ()))], float(fs[key]))
    if disk.get("scratch_growth_bytes") is not None:
        growth.add_metric([], float(disk["scratch_growth_bytes"]))
    yield from families.values()
    yield growth


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int((text or "").strip())
    except ValueError:
        return None
