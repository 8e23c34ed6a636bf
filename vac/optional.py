# SPDX-License-Identifier: BSD-2-Clause
"""The optional Python libraries: which configured feature needs which module, and which
package an admin installs for it (EL9 package and PyPI name).

Vac imports these lazily, where a feature is used (the RPM only Recommends most of them). This
module is the one table of them: vacd and its backends name the setting and the package when an
import fails (`Missing.of(...)`), and `vac doctor` lists every configured feature whose library
is absent (`missing_libraries(config)`). A module counts as present only if it really imports.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    from vac.config.model import Config


@dataclass(frozen=True)
class Library:
    """One optional Python module and the packages that provide it."""

    module: str
    el9: str          # the EL9 (EPEL) package, "" when there is none
    pypi: str

    def install(self) -> str:
        if self.el9:
            return f"install {self.el9} (EL9) or pip install {self.pypi}"
        return f"pip install {self.pypi} (there is no EL9 package)"


LIBRARIES: Dict[str, Library] = {lib.module: lib for lib in (
    Library("prometheus_client", "python3-prometheus_client", "prometheus-client"),
    Library("jinja2", "python3-jinja2", "Jinja2"),
    Library("docker", "python3-docker", "docker"),
    Library("libvirt", "python3-libvirt", "libvirt-python"),
    Library("pycdlib", "python3-pycdlib", "pycdlib"),
    Library("spython", "", "spython"),
    Library("cryptography", "python3-cryptography", "cryptography"),
    Library("dirq", "python3-dirq", "dirq"),
    Library("pycurl", "python3-pycurl", "pycurl"),
)}

# backend name -> the modules its machines need (VMs: libvirt, the config drive, the domain XML)
BACKEND_MODULES: Dict[str, Tuple[str, ...]] = {
    "docker": ("docker",),
    "podman": ("docker",),      # its Docker-compatible API, through the docker SDK
    "libvirt": ("libvirt", "pycdlib", "jinja2"),
    "apptainer": ("spython",),
    "fake": (),
}


@dataclass(frozen=True)
class MissingLibrary:
    """A configured feature whose Python module is not installed."""

    setting: str      # e.g. "metrics_port", "machine_model = docker (machinetype lhcb)"
    module: str
    package: str      # what to install, e.g. "python3-prometheus_client (EL9) or pip ..."

    def text(self) -> str:
        return (f"{self.setting} is set but the Python module {self.module} is not installed: "
                f"{self.package}")

    @classmethod
    def of(cls, setting: str, module: str) -> MissingLibrary:
        return cls(setting, module, LIBRARIES[module].install())


def import_error(module: str) -> Optional[str]:
    """None if the module imports, else why not (a real import: a module that is found but
    cannot load, e.g. a broken C extension, is as absent as a missing one)."""
    try:
        importlib.import_module(module)
    except ImportError as e:
        return str(e) or f"no module named {module}"
    except Exception as e:  # noqa: BLE001 - a module failing to load in any way is unusable
        return f"{type(e).__name__}: {e}"
    return None


def installed(module: str) -> bool:
    return import_error(module) is None


def require(setting: str, module: str) -> None:
    """Import-check module for a setting.

    Raises:
        MissingLibraryError: it cannot be imported (the message names setting and package).
    """
    if not installed(module):
        raise MissingLibraryError(MissingLibrary.of(setting, module))


class MissingLibraryError(ImportError):
    """A setting's library is absent; str() is MissingLibrary.text()."""

    def __init__(self, missing: MissingLibrary):
        super().__init__(missing.text(), name=missing.module)
        self.missing = missing


def backend_setting(backend: str) -> str:
    """The setting that makes a backend used: "machine_model = cernvm3/cernvm4/vm-raw"."""
    from vac.backends import MODEL_BACKENDS

    models = sorted(m for m, b in MODEL_BACKENDS.items() if b == backend)
    return f"machine_model = {'/'.join(models) or backend}"


def for_backend(backend: str, module: str) -> MissingLibrary:
    """The error of a backend whose module is absent (its setting named by its models)."""
    return MissingLibrary.of(backend_setting(backend), module)


def backend_missing(backend: str) -> Optional[MissingLibrary]:
    """The first module the backend needs that is absent, or None (a backend probe's check)."""
    for module in BACKEND_MODULES.get(backend, ()):
        if not installed(module):
            return for_backend(backend, module)
    return None


def _machinetypes(names: List[str]) -> str:
    word = "machinetype" if len(names) == 1 else "machinetypes"
    return f"{word} {', '.join(sorted(names))}"


def wanted(config: Config) -> List[Tuple[str, str]]:
    """(setting, module) for every configured feature that needs an optional module."""
    s = config.settings
    found: List[Tuple[str, str]] = []
    if s.metrics_port:
        found.append(("metrics_port", "prometheus_client"))
    if s.status_port:
        found.append(("status_port", "jinja2"))
    if s.gocdb_sitename and s.hs06_per_processor is not None:
        found.append(("gocdb_sitename", "dirq"))       # job records queued for APEL
    found += _machinetype_wants(config)
    return found


def _machinetype_wants(config: Config) -> List[Tuple[str, str]]:
    from vac.backends import MODEL_BACKENDS

    groups: Dict[Tuple[str, str], List[str]] = {}
    for name, mt in config.machinetypes.items():
        model = mt.machine_model
        for module in BACKEND_MODULES.get(MODEL_BACKENDS.get(model, ""), ()):
            groups.setdefault((f"machine_model = {model}", module), []).append(name)
        if mt.user_data_proxy:
            groups.setdefault(("user_data_proxy", "cryptography"), []).append(name)
        if mt.image_signing_dn and model in ("cernvm3", "cernvm4"):
            groups.setdefault(("image_signing_dn", "cryptography"), []).append(name)
        if (mt.root_image or "").startswith(("http://", "https://")):
            groups.setdefault(("root_image = <URL>", "pycurl"), []).append(name)
    return [(f"{setting} ({_machinetypes(names)})", module)
            for (setting, module), names in groups.items()]


def missing_libraries(config: Config) -> List[MissingLibrary]:
    """Every configured feature whose library is absent, in a stable order."""
    return [MissingLibrary.of(setting, module) for setting, module in wanted(config)
            if not installed(module)]
