# SPDX-License-Identifier: BSD-2-Clause
"""Creating one machine: slot record, directory, MJF, user_data, then the backend.

The order is the original's: the slot record is written first, so a crash leaves a
Starting machine that the next cycle cleans up; `started` and `heartbeat` are written last,
only when the backend has the machine running.
"""
from __future__ import annotations

import logging
import shutil
import uuid as uuidlib
from dataclasses import dataclass
from typing import Callable, Optional

from vac import __version__
from vac.backends.base import Backend, MachineSpec
from vac.config.model import MachineType, Settings
from vac.errors import VacError
from vac.faults import crash_point
from vac.machine import mjf, stamped, userdata
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
from vac.machine.slots import Slot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Created:
    directory: MachineDir
    backend_id: str


def create_machine(settings: Settings, machinetype: MachineType, slot: Slot, processors: int,
                   shutdown_time: int, backend: Backend, now: float,
                   fetcher: Optional[Callable] = None,
                   clock: Optional[Callable[[], float]] = None) -> Created:
    """Prepare the machine directory and start the machine.

    `clock` stamps `started` and the first heartbeat when they are written (None: `now`).

    Raises:
        VacError: any step failed; the error is in joboutputs/shutdown_message ("700 Vac:
            creation failed: ...") and the directory is not started: the factory finishes it
            at once (it is then Failed, an abort that backs its machinetype off).
    """
    paths = settings.paths
    created = int(now)
    write_slot_record(paths, slot.name, SlotRecord(created, machinetype.name,
                                                   machinetype.machine_model))
    crash_point("create:after-slot-record")
    directory = MachineDir.create(paths, created, machinetype.name, slot.name)
    machine_uuid = str(uuidlib.uuid4())
    try:
        _populate(settings, machinetype, directory, slot, processors, shutdown_time,
                  machine_uuid, backend, now, fetcher)
        spec = MachineSpec(name=slot.name, machinetype=machinetype, settings=settings,
                           slot=slot, processors=processors,
                           memory_mb=machinetype.memory_mb(processors), created=created,
                           shutdown_time=shutdown_time, uuid=machine_uuid, directory=directory)
        crash_point("create:after-populate")
        backend_id = backend.create(spec) or machine_uuid
    except VacError as e:
        directory.write_shutdown_message_if_none(f"700 Vac: creation failed: {e}", when=now)
        raise
    # jobfeatures/job_id stays the UUID of the MJF and user_data (##user_data_uuid##): the
    # machine may have read it already. The backend's own id is in its backend record.
    crash_point("create:after-backend")
    # Stamped when they are written, after the engine call, as the original's ctime reads
    # them: with the factory's wall clock, the second each file lands in (vac.machine.stamped).
    directory.write_started(now if clock is None else stamped.now_for(clock))
    crash_point("create:after-started")
    directory.write_first_heartbeat(now if clock is None else stamped.now_for(clock))
    return Created(directory, backend_id)


def _populate(settings: Settings, machinetype: MachineType, directory: MachineDir, slot: Slot,
              processors: int, shutdown_time: int, machine_uuid: str, backend: Backend,
              now: float, fetcher: Optional[Callable]) -> None:
    if machinetype.accounting_fqan:
        directory.write("accounting_fqan", machinetype.accounting_fqan)
    ctx = mjf.MjfContext(settings=settings, machinetype=machinetype, processors=processors,
                         shutdown_time=shutdown_time, now=int(now), job_id=machine_uuid)
    mjf.write_mjf(directory, ctx)
    caps = backend.CAPABILITIES
    if machinetype.user_data:
        data = userdata.build_user_data(
            settings, machinetype, machine_name=slot.name, uuid=machine_uuid,
            mjf_urls=(caps.machinefeatures_url, caps.jobfeatures_url, caps.joboutputs_url),
            shutdown_time=shutdown_time, version=__version__, fetcher=fetcher, now=now)
        directory.write("user_data", data, mode=0o755)
    if caps.needs_metadata_server:
        directory.write("ip", slot.ip)
    _copy_root_public_key(settings.root_public_key, directory)


def _copy_root_public_key(source: str, directory: MachineDir) -> None:
    try:
        shutil.copyfile(source, directory.file("root_public_key"))
    except OSError:
        pass
