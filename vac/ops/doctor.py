# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`: is this host ready for what vac.conf asks, and what to fix; one line a check.

Exit status 0 when no check failed (warnings allowed), 1 when one did. The configuration is
read with the cached pipes only, like `vac config check`.
"""
from __future__ import annotations

import argparse
import json
import socket
import time
from typing import Callable, List, Optional, Tuple

from vac.config import pipes
from vac.config.load import config_files
from vac.config.model import Config, MachineType, Settings
from vac.errors import ConfigError
from vac.host.facts import HostFacts
from vac.ops import backendchecks, checks
from vac.ops.checks import FAIL, OK, Check


def run_checks(config: Config, now: Optional[float] = None) -> List[Check]:
    """Every check for this configuration, in the order an admin would fix them."""
    s = config.settings
    used = backendchecks.backends_in_use(config)
    lines = [Check("config", OK, f"{len(config.machinetypes)} machinetypes, backends "
                   f"{' '.join(sorted(used)) or 'none'}; files: {', '.join(config.files)}")]
    vacd, holder = checks.vacd_running(s)
    lines += vacd
    groups: List[Tuple[str, Callable[[], List[Check]]]] = [
        ("state-dir", lambda: checks.state_dir(s)), ("clock", lambda: checks.clock(now))]
    if used.keys() & {"docker", "apptainer"}:
        groups.append(("cgroups", checks.cgroup_setup))
    for name in sorted(used):
        groups.append((f"{name}-engine", lambda name=name: _backend(name, used[name], s)))
    groups.append(("ports", lambda: _ports(config, holder, "libvirt" in used)))
    for name, run in groups:
        try:
            lines += run()
        except Exception as e:  # noqa: BLE001 (a broken check must not hide the others)
            lines.append(Check(name, FAIL, f"the check itself failed: {type(e).__name__}: {e}",
                               "report this as a bug in vac doctor"))
    return lines


def _backend(name: str, machinetypes: List[MachineType], s: Settings) -> List[Check]:
    extra = []
    if name == "libvirt":
        kvm = checks.kvm()
        if kvm[0].status != OK and s.libvirt_virt_type == "kvm":  # no emulation to fall back to
            kvm = [Check("kvm", FAIL, kvm[0].detail.split(":", 1)[0] + " is not usable and "
                         "libvirt_virt_type = kvm", "libvirt_virt_type = auto, or " +
                         kvm[0].fix)]
        extra = kvm + checks.qemu_traversal(s, backendchecks.local_image_paths(machinetypes))
    return backendchecks.for_backend(name, machinetypes, s, extra)


def _ports(config: Config, holder: Optional[int], vms: bool) -> List[Check]:
    s = config.settings
    lines = [checks.port("vacquery-port", socket.SOCK_DGRAM, s.vacquery_address,
                         s.vacquery_port, holder)]
    if vms:
        from vac.backends.libvirt.services import DEFAULT_ADDRESSES, DEFAULT_PORT

        lines += [checks.port("metadata-port", socket.SOCK_STREAM, address, DEFAULT_PORT,
                              holder) for address in DEFAULT_ADDRESSES]
    metrics_port = getattr(s, "metrics_port", None)
    if metrics_port:
        lines.append(checks.port("metrics-port", socket.SOCK_STREAM,
                                 getattr(s, "metrics_address", "") or "", metrics_port, holder))
    status_port = getattr(s, "status_port", None)
    if status_port and status_port != metrics_port:     # equal: one listener serves both
        lines.append(checks.port("status-port", socket.SOCK_STREAM,
                                 getattr(s, "status_address", "") or "", status_port, holder))
    return lines


def _config_failure(e: ConfigError) -> List[Check]:
    return [Check("config", FAIL, str(problem), "correct it (vac config check lists them all)")
            for problem in e.problems] + checks.clock()


def command(args: argparse.Namespace) -> int:
    try:
        config = pipes.load_config(config_files(args.config), HostFacts.read(), update=False,
                                   now=time.time())
    except ConfigError as e:
        lines = _config_failure(e)
    else:
        lines = run_checks(config)
    failed = any(line.status == FAIL for line in lines)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [c.as_dict() for c in lines]}, indent=1))
    else:
        for line in lines:
            print(line.line())
        print(f"vac doctor: {sum(c.status == FAIL for c in lines)} failed, "
              f"{sum(c.status == checks.WARN for c in lines)} warnings, "
              f"{sum(c.status == OK for c in lines)} ok")
    return 1 if failed else 0
