# SPDX-License-Identifier: BSD-2-Clause
"""Paths: every location Vac reads or writes, rooted so tests can point it at a tmp dir."""
from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass

CONFIG_DIR_DEFAULT = "/etc/vac.d"
CONFIG_FILES_DEFAULT = ("/etc/vac.conf", "/var/run/vac.conf")
GRID_CA_DIR = "/etc/grid-security/certificates"   # the IGTF CAs: downloads, GOCDB, signatures

# Directories the package (or vacd at start) creates under the state directory.
STATE_SUBDIRS = ("tmp", "imagecache", "machinetypes", "pipescache", "apel-archive",
                 "apel-outgoing", "slots", "finishes", "machines")


@dataclass(frozen=True)
class Paths:
    """Locations under the state directory (default /var/lib/vac), in the original's layout."""

    state_dir: str = "/var/lib/vac"

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", os.path.abspath(self.state_dir))

    def _at(self, *parts: str) -> str:
        return os.path.join(self.state_dir, *parts)

    @property
    def tmp(self) -> str:
        return self._at("tmp")

    @property
    def machines(self) -> str:
        return self._at("machines")

    @property
    def slots(self) -> str:
        return self._at("slots")

    @property
    def finishes(self) -> str:
        return self._at("finishes")

    @property
    def pipescache(self) -> str:
        return self._at("pipescache")

    @property
    def imagecache(self) -> str:
        return self._at("imagecache")

    @property
    def apel_archive(self) -> str:
        return self._at("apel-archive")

    @property
    def apel_outgoing(self) -> str:
        return self._at("apel-outgoing")

    @property
    def factory_heartbeat(self) -> str:
        return self._at("factory-heartbeat")

    @property
    def factory_error(self) -> str:
        return self._at("factory-error")

    @property
    def counts(self) -> str:
        return self._at("counts")

    @property
    def plan(self) -> str:
        """The last cycle's per-slot explanations, read by `vac slots`."""
        return self._at("plan.json")

    @property
    def yield_state(self) -> str:
        """Opportunistic mode: since when the owner's load is high, the pause, the last
        reading of the host's and the machines' CPU time (vac.cycle.ownerload)."""
        return self._at("yield.json")

    @property
    def docker_images(self) -> str:
        """The Docker tags vacd refreshes from their registries, read by `vac slots`."""
        return self._at("docker-images.json")

    @property
    def podman_images(self) -> str:
        """The Podman backend's tags refreshed from their registries (as docker_images)."""
        return self._at("podman-images.json")

    def image_version(self, cache_path: str) -> str:
        """The sha256 record of a cached root image ('+' never appears in a cached name)."""
        return cache_path + "+sha256"

    def slot_record(self, machine_name: str) -> str:
        return self._at("slots", machine_name)

    def machine_dir(self, created: int, machinetype: str, machine_name: str) -> str:
        return self._at("machines", f"{int(created)}_{machinetype}_{machine_name}")

    def finish_record(self, machinetype: str) -> str:
        return self._at("finishes", machinetype)

    def machinetype_dir(self, name_or_prefix: str) -> str:
        return self._at("machinetypes", name_or_prefix)

    def pipe_cache(self, prefix: str) -> str:
        return self._at("pipescache", f"{prefix}.pipe")

    def image_cache(self, url: str) -> str:
        return self._at("imagecache", urllib.parse.quote(url, safe=""))

    def ensure(self) -> None:
        """Create the state directory and its standard subdirectories (idempotent)."""
        for sub in STATE_SUBDIRS:
            os.makedirs(self._at(sub), mode=0o755, exist_ok=True)
