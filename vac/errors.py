# SPDX-License-Identifier: BSD-2-Clause
"""The one exception tree of Vac: every foreign error becomes one of these at a boundary."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


class VacError(Exception):
    """Root of every error Vac raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration, located as precisely as we can."""

    message: str
    file: Optional[str] = None
    section: Optional[str] = None
    option: Optional[str] = None
    line: Optional[int] = None

    def __str__(self) -> str:
        where = ":".join(x for x in (self.file, self.section and f"[{self.section}]",
                                      self.option) if x)
        return f"{where}: {self.message}" if where else self.message

    def located(self) -> str:
        """What `vac config check` shows: "FILE:LINE [SECTION] OPTION: MESSAGE", each part
        there when known (an editor's file:line first)."""
        file = f"{self.file}:{self.line}" if self.file and self.line else self.file
        where = " ".join(x for x in (file, self.section and f"[{self.section}]", self.option)
                         if x)
        return f"{where}: {self.message}" if where else self.message


class ConfigError(VacError):
    """The configuration cannot be used; carries every problem found, each located. Its text
    (vacd's log, plan.json's config_error, `vac slots`) gives each as Problem.located()."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = tuple(problems)
        super().__init__("; ".join(p.located() for p in self.problems))


class ConfigMissing(ConfigError):
    """There is no configuration to read: the file named with --config does not exist, or
    neither does the default /etc/vac.conf (a host not configured yet). The message names it."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__([Problem(message)])


class PipeError(VacError):
    """A Vacuum Pipe could not be fetched or is not a valid document."""

    def __init__(self, url: str, message: str):
        self.url = url
        super().__init__(f"{url}: {message}")


class FetchError(VacError):
    """A download (https or file URL) failed."""

    def __init__(self, url: str, message: str, status: Optional[int] = None):
        self.url = url
        self.status = status
        super().__init__(f"{url}: {message}")


class StateError(VacError):
    """Something under the state directory is missing, unsafe or malformed."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")


class UserDataError(VacError):
    """user_data could not be built for a machine."""


class ProcessError(VacError):
    """A subprocess failed, timed out or could not be started."""

    def __init__(self, argv: Sequence[str], returncode: Optional[int], stdout: str = "",
                 stderr: str = "", reason: str = ""):
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = reason or f"exit code {returncode}"
        tail = stderr.strip().splitlines()[-1:] if stderr else []
        super().__init__(f"{argv[0] if argv else '?'}: {detail}"
                         + (f": {tail[0]}" if tail else ""))


class BackendError(VacError):
    """A backend failed for one machine or one machinetype."""

    def __init__(self, backend: str, message: str, machine: Optional[str] = None):
        self.backend = backend
        self.machine = machine
        prefix = f"{backend}" + (f" {machine}" if machine else "")
        super().__init__(f"{prefix}: {message}")


class BackendUnavailable(BackendError):
    """The backend cannot be used on this host (library or engine missing)."""
