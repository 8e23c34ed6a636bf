# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s side of the backend contract: the Check line every doctor check returns, and
BackendChecks, what the doctor asks of one backend beside its probe.

Each backend wing that has more to say subclasses BackendChecks in its own `checks` module
(the registry, vac.backends.backend_checks, finds it by the backend's name), so that only the
wing knows its library and its engine: the doctor never imports docker or libvirt. The Check
line lives here, below the doctor, so that the wings can return it.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, ClassVar, List, Optional, Tuple

if TYPE_CHECKING:
    from vac.config.model import MachineType, Settings

OK, WARN, FAIL = "ok", "warn", "FAIL"
PROBE_TIMEOUT = 10.0       # seconds an engine may take to answer one doctor question


@dataclass(frozen=True)
class Check:
    """One line of `vac doctor`: name, ok/warn/FAIL, what was found, what to do."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:4} {self.name}: {self.detail}"
        return f"{text}; fix: {self.fix}" if self.fix else text

    def as_dict(self) -> dict:
        return asdict(self)


class BackendChecks:
    """What `vac doctor` asks of one backend once its engine line is written. None of the
    methods raises: every failure is a Check line. The default has nothing to add."""

    # Its machines run in cgroups vacd makes on this host: the doctor checks the cgroup
    # setup and its delegation when a configured backend says so.
    HOST_CGROUPS: ClassVar[bool] = False
    # The fix of a failed probe when the library is there and the engine does not answer.
    ENGINE_FIX: ClassVar[str] = ""

    def __init__(self, name: str, settings: Settings):
        self.name = name
        self.settings = settings

    def engine_fix(self, version: Optional[str]) -> str:
        """The fix for the cause of a failed probe (version: what the probe found, if any)."""
        return self.ENGINE_FIX

    def lines(self, machinetypes: List[MachineType], usable: bool) -> List[Check]:
        """The lines after the engine line, for the machinetypes this backend serves (images,
        networks, users, what only it needs); usable: the engine line did not fail."""
        return []

    def listeners(self) -> List[Tuple[str, str, int]]:
        """(check name, address, TCP port) of every server vacd runs for this backend's
        machines beside its cycles; the doctor checks that each port is free, or vacd's."""
        return []


def file_image(mt: MachineType, settings: Settings) -> Check:
    """A VM's or Apptainer machine's root_image: a local file (or directory), or a URL."""
    name = f"image {mt.name}"
    image = mt.root_image
    if not image:
        return Check(name, FAIL, "no root_image", f"set root_image in [machinetype {mt.name}]")
    if image.startswith(("https://", "http://")):
        cache = settings.paths.image_cache(image)
        if os.path.isfile(cache):
            return Check(name, OK, f"{image} cached in {cache}")
        return Check(name, WARN, f"{image} not cached yet (fetched at the first creation)")
    path = mt.files_path(image)
    if not os.path.exists(path):
        return Check(name, FAIL, f"root_image {path} does not exist",
                     f"put the image there, or correct root_image in [machinetype {mt.name}]")
    kind = "directory" if os.path.isdir(path) else "file"
    return Check(name, OK, f"{path} ({kind})")


def one_line(e: Exception) -> str:
    """An exception as one line of at most 300 characters (its type when it says nothing)."""
    text = " ".join(str(e).split())
    return text[:300] if text else type(e).__name__
