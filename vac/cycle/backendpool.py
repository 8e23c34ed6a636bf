# SPDX-License-Identifier: BSD-2-Clause
"""The backends one factory uses, built lazily, probed once per cycle."""
from __future__ import annotations

import logging
from typing import Dict, Mapping, Optional

from vac.backends import backend_for_model, get_backend_class
from vac.backends.base import Backend, Probe
from vac.config.model import Settings
from vac.errors import BackendUnavailable

log = logging.getLogger(__name__)


class BackendPool:
    """Backend instances by name, with this cycle's probe results.

    A backend whose library is missing or whose engine is down is "unavailable" for the
    cycle: its machines are left alone (not finished, not destroyed) and its machinetypes
    wait. The reason is logged once per cycle.
    """

    def __init__(self, settings: Settings, instances: Optional[Mapping[str, Backend]] = None):
        self.settings = settings
        self._instances: Dict[str, Backend] = dict(instances or {})
        self._probes: Dict[str, Probe] = {}

    def reconfigure(self, settings: Settings) -> None:
        self.settings = settings
        for backend in self._instances.values():
            backend.settings = settings

    def start_cycle(self) -> None:
        self._probes = {}

    def get(self, name: str) -> Backend:
        """The backend instance; raises BackendUnavailable if it cannot be built here."""
        if name not in self._instances:
            self._instances[name] = get_backend_class(name)(self.settings)
        return self._instances[name]

    def for_model(self, model: str) -> Backend:
        return self.get(backend_for_model(model))

    def probe(self, name: str) -> Probe:
        """This cycle's probe of a backend (cached for the cycle, logged when unavailable)."""
        if name not in self._probes:
            try:
                result = self.get(name).probe()
            except BackendUnavailable as e:
                result = Probe(False, reason=str(e))
            self._probes[name] = result
            if not result.available:
                log.warning("backend %s unavailable this cycle: %s", name, result.reason)
        return self._probes[name]

    def available_for_model(self, model: str) -> Probe:
        try:
            return self.probe(backend_for_model(model))
        except BackendUnavailable as e:
            return Probe(False, reason=str(e))

    def probed(self) -> Dict[str, Probe]:
        return dict(self._probes)
