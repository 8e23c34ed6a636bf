# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s checks of the backends the configuration uses: each engine's library
importable, the engine reachable and its version (the backend's own probe), then what the
backend itself checks (vac.backends.backend_checks: images, networks, users, what only it
needs). Never raises: every failure is a Check line. A failed line's fix is the fix of the
cause found (a missing Python module, an engine that does not answer, a missing binary or
user), never one fix for every cause. No backend is named here: each says its own checks."""
from __future__ import annotations

from typing import Dict, List, Optional

from vac import optional
from vac.backends import backend_checks, backend_for_model, get_backend_class
from vac.config.model import Config, MachineType, Settings
from vac.errors import BackendUnavailable, VacError
from vac.ops.checks import FAIL, OK, Check


def backends_in_use(config: Config) -> Dict[str, List[MachineType]]:
    """Backend name -> the machinetypes it serves (models no backend serves are left out)."""
    found: Dict[str, List[MachineType]] = {}
    for mt in config.machinetypes.values():
        try:
            found.setdefault(backend_for_model(mt.machine_model), []).append(mt)
        except BackendUnavailable:
            continue
    return found


def engine(name: str, settings: Settings) -> Check:
    """The backend's own probe: library importable, engine reachable, its version."""
    missing = optional.backend_missing(name)
    if missing is not None:
        return Check(f"{name}-engine", FAIL, missing.text(), missing.package)
    try:
        probe = get_backend_class(name)(settings).probe()
    except (VacError, OSError) as e:
        return Check(f"{name}-engine", FAIL, str(e), engine_fix(name, settings, None))
    if not probe.available:
        return Check(f"{name}-engine", FAIL, probe.reason,
                     engine_fix(name, settings, probe.version))
    return Check(f"{name}-engine", OK, probe.version or "available")


def engine_fix(name: str, settings: Settings, version: Optional[str]) -> str:
    """The fix for the cause of a failed probe, as the backend finds it."""
    return backend_checks(name, settings).engine_fix(version)


def for_backend(name: str, machinetypes: List[MachineType], settings: Settings) -> List[Check]:
    """Every check of one backend: its engine, then the backend's own lines."""
    first = engine(name, settings)
    return [first] + backend_checks(name, settings).lines(machinetypes, first.status != FAIL)


def host_cgroups(used: Dict[str, List[MachineType]], settings: Settings) -> bool:
    """Does a backend in use run its machines in cgroups vacd makes on this host?"""
    return any(backend_checks(name, settings).HOST_CGROUPS for name in used)


def listeners(used: Dict[str, List[MachineType]], settings: Settings) -> List[tuple]:
    """(check name, address, TCP port) of the servers vacd runs for the backends in use."""
    return [found for name in sorted(used)
            for found in backend_checks(name, settings).listeners()]
