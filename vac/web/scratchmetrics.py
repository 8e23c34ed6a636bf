# SPDX-License-Identifier: BSD-2-Clause
"""The container machines' scratch (issue 29) as Prometheus metrics, read at scrape time:

    vac_machine_scratch_bytes{slot, machinetype}         bytes in use in a machine's /scratch
    vac_machine_scratch_limit_bytes{slot, machinetype}   its size (scratch_limit_bytes)
    vac_scratch_pool_free_bytes                          free bytes where the scratch files grow

Only machines with a scratch mounted have samples; the pool's free space is there whenever a
configuration is loaded (scratch is thin: this is what the machines can still grow into).
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

from prometheus_client.core import GaugeMetricFamily

from vac.config.model import Config
from vac.machine import scratch
from vac.machine.directory import MachineDir, read_slot_record
from vac.machine.slots import make_slots


def scratch_families(config: Optional[Config]) -> Iterable:
    used = GaugeMetricFamily("vac_machine_scratch_bytes", "Bytes in use in a container "
                             "machine's /scratch", labels=["slot", "machinetype"])
    limit = GaugeMetricFamily("vac_machine_scratch_limit_bytes", "The size of a container "
                              "machine's /scratch", labels=["slot", "machinetype"])
    free = GaugeMetricFamily("vac_scratch_pool_free_bytes", "Free bytes of the file system "
                             "the machines' scratch files grow in")
    if config is not None:
        s = config.settings
        for slot in make_slots(s.factory_name, s.host_processors):
            directory = MachineDir.for_record(s.paths, slot.name,
                                              read_slot_record(s.paths, slot.name))
            if directory is None:
                continue
            got = scratch.used_bytes(s.paths.state_dir, os.path.basename(directory.path))
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


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int((text or "").strip())
    except ValueError:
        return None
