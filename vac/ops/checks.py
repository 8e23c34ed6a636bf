# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s checks of the host itself: the state directory (writable, free disk), the
clock, cgroups, ports, and vacd's lock. (The VMs' /dev/kvm and QEMU user are the libvirt
backend's own checks; the Check line is vac.backends.checks', so that backends return it too.)

Each check returns Check lines; none raises. A line says what was found and, when it is not
ok, what to do. `fail` lines are what makes machines fail; `warn` lines work but cost something.
"""
from __future__ import annotations

import errno
import os
import socket
import time
from typing import List, Optional, Tuple

from vac.backends.checks import FAIL, OK, WARN, Check
from vac.config.model import Settings
from vac.host import cgroupmachine, cgroups
from vac.service import lock

MIN_FREE_BYTES = 5 * 1000 ** 3
WARN_FREE_BYTES = 20 * 1000 ** 3
TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised
EARLIEST_SANE_TIME = 1735689600  # 2025-01-01: a clock before this has not been set


def state_dir(settings: Settings) -> List[Check]:
    """The state directory exists and root can write it, with enough free space."""
    path = settings.state_dir
    if not os.path.isdir(path):
        return [Check("state-dir", FAIL, f"{path} does not exist",
                      f"install the vac RPM, or mkdir -m 0755 -p {path}")]
    if not os.access(path, os.W_OK | os.X_OK):
        if os.geteuid() != 0:
            return [Check("state-dir", FAIL, f"{path} is not writable by this user",
                          "run vacd (and vac doctor) as root")]
        return [Check("state-dir", FAIL, f"{path} is not writable even by root",
                      f"remount the filesystem of {path} read-write (or lsattr -d {path}: "
                      "remove an immutable attribute)")]
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    found = f"{path}: {free / 1000 ** 3:.1f} GB free"
    if free < MIN_FREE_BYTES:
        return [Check("state-disk", FAIL, found, f"free space on the filesystem of {path}")]
    if free < WARN_FREE_BYTES:
        return [Check("state-disk", WARN, found + " (VM disks and images need more)",
                      f"free space on the filesystem of {path}")]
    return [Check("state-disk", OK, found)]


def clock(now: Optional[float] = None) -> List[Check]:
    now = time.time() if now is None else now
    shown = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    if now < EARLIEST_SANE_TIME:
        return [Check("clock", FAIL, f"the clock says {shown}",
                      "set the time and run chronyd or systemd-timesyncd")]
    synced = _adjtimex_synced()
    if synced is False:
        return [Check("clock", WARN, f"{shown}, not synchronised (the kernel says so)",
                      "run chronyd or systemd-timesyncd: APEL records and heartbeats use it")]
    return [Check("clock", OK, shown + (", synchronised" if synced else ""))]


def _adjtimex_synced() -> Optional[bool]:
    """The kernel's view: adjtimex() in read-only mode returns TIME_ERROR when unsynchronised."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        timex = ctypes.create_string_buffer(512)  # struct timex, zeroed: modes 0 reads only
        state = libc.adjtimex(timex)
    except (OSError, AttributeError):
        return None
    return None if state < 0 else state != TIME_ERROR


def cgroup_setup(proc_root: str = "/proc") -> List[Check]:
    """The cgroup version, and whether vacd can make machine cgroups with the controllers."""
    try:
        hierarchy = cgroups.read_hierarchies(proc_root).for_machines()
    except OSError as e:
        return [Check("cgroups", FAIL, f"cannot read {proc_root}/self/mountinfo: {e}")]
    ok, reason = cgroupmachine.writable(hierarchy)
    controllers = _v2_controllers(hierarchy) if hierarchy.version == 2 else \
        sorted(hierarchy.mounts)
    found = f"cgroup v{hierarchy.version}, controllers {' '.join(controllers) or 'none'}"
    if not ok:
        fix = "run vacd (and vac doctor) as root" if os.geteuid() != 0 else \
            "delegate the cpu, memory and pids controllers to vacd's cgroup " \
            "(cgroup.subtree_control of its parents), or run vacd on the host, not in a container"
        return [Check("cgroups", FAIL, f"{found}: {reason}", fix)]
    missing = [c for c in ("cpu", "memory", "pids") if hierarchy.version == 2 and
               c not in controllers]
    if missing:
        return [Check("cgroups", WARN, f"{found}; missing {' '.join(missing)}",
                      "enable them in the parent's cgroup.subtree_control")]
    return [Check("cgroups", OK, found)]


def _v2_controllers(hierarchy: cgroups.Hierarchy) -> List[str]:
    root = hierarchy.root(cgroups.V2) or cgroups.UNIFIED_POINT
    try:
        with open(os.path.join(root, "cgroup.controllers")) as f:
            return sorted(f.read().split())
    except OSError:
        return []


def port(name: str, kind: int, address: str, number: int, holder: Optional[int]) -> Check:
    """Can the port be bound (or is it vacd's own)?"""
    where = f"{'udp' if kind == socket.SOCK_DGRAM else 'tcp'} {address or '*'}:{number}"
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, number))
    except OSError as e:
        if e.errno == errno.EADDRINUSE and holder:
            return Check(name, OK, f"{where} in use, vacd (pid {holder}) runs")
        if e.errno == errno.EADDRINUSE:
            return Check(name, FAIL, f"{where} is in use by another program",
                         "stop it, or set another port in vac.conf (see vac.conf(5))")
        if e.errno == errno.EADDRNOTAVAIL:
            return Check(name, WARN, f"{where}: address not on this host yet",
                         "it comes with the NAT network vacd defines")
        if e.errno == errno.EACCES:
            return Check(name, WARN, f"{where}: {e.strerror}", "run vac doctor as root")
        return Check(name, FAIL, f"{where}: {e.strerror}")
    finally:
        sock.close()
    return Check(name, OK, f"{where} free")


def vacd_running(settings: Settings) -> Tuple[List[Check], Optional[int]]:
    holder = lock.is_held(settings.state_dir)
    if holder:
        shown = f"pid {holder}" if holder > 0 else "a process"
        return [Check("vacd", OK, f"running ({shown} holds {lock.lock_path(settings.state_dir)})")
                ], holder
    return [Check("vacd", WARN, f"not running on {settings.state_dir}",
                  "systemctl enable --now vacd")], None
