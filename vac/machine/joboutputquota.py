# SPDX-License-Identifier: BSD-2-Clause
"""A container machine's joboutputs/ capped by a project quota, on a host whose scratch is a
project quota directory (vac.machine.scratchquota, chosen when no loop mount can be made): the
loop-mounted cap of vac.machine.joboutputcap cannot be made there.

The scratch's maker (vac.machine.scratchquota.ProjectQuota.bound) gives the machine's
joboutputs directory a project ID of Vac's of its own with the inherit flag, allocated under
the pool's lock as a scratch's is (so never an ID a scratch holds or the quota charges), and a
hard limit of joboutputs_machine_mb. Nothing is mounted or copied:
the directory stays where it is, and the payload's writes past the limit fail with ENOSPC.

XFS holds root to a project's limit too, so vacd cannot write its own shutdown_message into a
joboutputs the payload has filled. lift() clears the limit of such a directory (its ID stays,
charging nothing once the machine directory is removed); MachineDir calls it when a write of
vacd's there fails for want of space, and writes again. vacd writes there only once the machine
has ended (or never started), so the payload cannot take that room.
"""
from __future__ import annotations

import errno
from typing import Optional

from vac.host import projquota

FULL = (errno.ENOSPC, errno.EDQUOT)


def lift(path: str, kernel: Optional[projquota.Kernel] = None,
         mountinfo: str = projquota.MOUNTINFO) -> bool:
    """Clear the limit of the project ID of Vac's the directory at path has; False if it has
    none (or is not a directory), True once cleared.

    Raises:
        OSError: the limit could not be cleared.
    """
    kernel = kernel or projquota.Kernel()
    try:
        _, projid = kernel.project(path)
    except OSError:
        return False
    if not projquota.owned(projid):
        return False
    device = projquota.device(path, mountinfo)[0]
    if not device.startswith("/dev/"):
        raise OSError(errno.ENODEV, f"no block device holds {path}")
    kernel.limit(device, projid, 0)
    return True


def full(e: OSError) -> bool:
    """Did this write fail for want of space (a project quota's limit on XFS is ENOSPC)?"""
    return e.errno in FULL

