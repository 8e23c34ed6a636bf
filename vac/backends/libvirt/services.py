# SPDX-License-Identifier: BSD-2-Clause
"""The servers vacd runs beside its cycles: the VMs' metadata service, started on demand.

vacd passes MetadataSupervisor.ensure to Factory(after_prepare=...): every cycle, after the
backends have prepared the host (the libvirt NAT network that carries 169.254.169.253/.254),
it starts or re-binds the metadata servers if some configured machinetype's backend wants one
(Capabilities.needs_metadata_server: the VM models), and returns what could not be bound.
Once started they keep serving (running VMs still PUT their joboutputs) until close(), or
until the state directory or factory name changes, when they are rebuilt for the new ones.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple

from vac.backends import backend_for_model, get_backend_class
from vac.backends.libvirt.metadata import MetadataServers, MetadataService
from vac.config.model import Config
from vac.errors import BackendUnavailable
from vac.machine import joboutputs
from vac.machine.slots import BRIDGE_ADDRESS, METADATA_ADDRESS

log = logging.getLogger(__name__)

DEFAULT_ADDRESSES = (BRIDGE_ADDRESS, METADATA_ADDRESS)
DEFAULT_PORT = 80


def needs_metadata(config: Config) -> bool:
    """True if some configured machinetype's backend serves machines that need the
    metadata service (decided from the backend's class, without importing its library)."""
    for mt in config.machinetypes.values():
        try:
            cls = get_backend_class(backend_for_model(mt.machine_model))
        except BackendUnavailable:
            continue
        if cls.CAPABILITIES.needs_metadata_server:
            return True
    return False


def set_joboutputs_bounds(service: MetadataService, settings) -> None:
    """The joboutputs bounds of vac.conf's [settings] (a reload applies to the next PUT)."""
    bounds = joboutputs.Bounds.of(settings)
    service.max_put_bytes = bounds.file_bytes
    service.max_total_bytes = bounds.total_bytes
    service.max_files = bounds.files


class MetadataSupervisor:
    """Owns vacd's MetadataServers: built when first needed, re-bound every cycle, closed on
    exit. Addresses and port are arguments so that tests can use 127.0.0.1 and port 0."""

    def __init__(self, addresses: Sequence[str] = DEFAULT_ADDRESSES, port: int = DEFAULT_PORT):
        self.addresses = tuple(addresses)
        self.port = port
        self.servers: Optional[MetadataServers] = None
        self._key: Optional[Tuple[str, str]] = None

    def ensure(self, config: Config) -> List[str]:
        """Start or re-bind the servers if this config wants them; return the problems."""
        settings = config.settings
        key = (settings.state_dir, settings.factory_name)
        if self.servers is not None and self._key != key:
            log.info("state directory or factory name changed: restarting the metadata service")
            self.close()
        if self.servers is None:
            if not needs_metadata(config):
                return []
            service = MetadataService(settings.paths, settings.factory_name)
            self.servers = MetadataServers(service, self.addresses, self.port)
            self._key = key
        set_joboutputs_bounds(self.servers.service, settings)
        return self.servers.ensure()

    def bound(self) -> List[Tuple[str, int]]:
        """(address, port) of every server listening now (port 0 resolved)."""
        if self.servers is None:
            return []
        return [server.server_address[:2] for server in self.servers.servers.values()]

    def close(self) -> None:
        if self.servers is not None:
            self.servers.close()
            log.info("metadata service stopped")
        self.servers = None
        self._key = None
