# SPDX-License-Identifier: BSD-2-Clause
"""VacMon: VacQuery status datagrams sent unasked to each `vacmon_hostport`, the same
bodies the responder answers with (vac.space.replies), and the version logger's copies.

Each cycle one factory_status and every machinetype_status; at each finish one machine_status
for that machine, sent after its `finished` file so it carries the final state and shutdown
message (the original built it too early). Cookie "0", client name vacd-factory. Sending is
best effort: an unresolvable name or a refused datagram is logged, never raised.
"""
from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from vac import __version__
from vac.config.model import Config, Settings
from vac.machine.directory import MachineDir, read_slot_record
from vac.space import messages, replies

log = logging.getLogger(__name__)

PROGRAM = "vacd-factory"
COOKIE = "0"
MESSAGE_LIMIT = 1400    # below a 1500-byte MTU


def _destinations(hostports: Iterable[str]) -> List[Tuple[str, int]]:
    found = []
    for hp in hostports:
        host, _, port = hp.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            found.append((host, int(port)))
    return found


class Sender:
    """Sends VacMon datagrams from one UDP socket to fixed destinations."""

    def __init__(self, destinations: List[Tuple[str, int]],
                 clock: Callable[[], float] = time.time):
        self.destinations = destinations
        self.clock = clock
        self.sent = 0
        self.failures = 0

    @classmethod
    def for_settings(cls, settings: Settings) -> Sender:
        return cls(_destinations(settings.vacmon_hostport))

    def _header(self, config: Config, kind: str) -> Dict[str, Any]:
        s = config.settings
        version = messages.version_string(__version__, PROGRAM)
        return messages.reply_header(kind, COOKIE, s.vac_space, s.factory_name, s.site,
                                     version, int(self.clock()))

    def send(self, messages_: Iterable[Dict[str, Any]]) -> int:
        """Send each message to each destination; return how many datagrams went out."""
        if not self.destinations:
            return 0
        sent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for message in messages_:
                try:
                    data = messages.encode(message, MESSAGE_LIMIT)
                except ValueError as e:
                    log.warning("VacMon: %s not sent: %s", message.get("message_type"), e)
                    self.failures += 1
                    continue
                for host, port in self.destinations:
                    try:
                        sock.sendto(data, (host, port))
                        sent += 1
                    except OSError as e:
                        log.warning("VacMon: sending to %s:%d failed: %s", host, port, e)
                        self.failures += 1
        self.sent += sent
        return sent

    def machine_finished(self, config: Config, directory: MachineDir,
                         model: Optional[str] = None) -> int:
        """One machine_status for a machine that has its `finished` file."""
        if not self.destinations:
            return 0
        record = read_slot_record(config.settings.paths, directory.name)
        model = model or (record.model if record is not None else "")
        message = self._header(config, messages.MACHINES)
        message.update({"num_machines": 1, "machine": directory.name})
        message.update(replies.machine_body(directory, model))
        return self.send([message])

    def cycle_status(self, config: Config, now: float, machinetypes: bool = True) -> int:
        """One factory_status and (unless told not to) every machinetype_status."""
        if not self.destinations:
            return 0
        try:
            factory = self._header(config, messages.FACTORY)
            factory.update(replies.factory_status(config, now))
            bodies = replies.machinetype_statuses(config, now) if machinetypes else []
        except (OSError, ValueError) as e:
            log.warning("VacMon: status not built: %s", e)
            self.failures += 1
            return 0
        types = []
        for body in bodies:
            message = self._header(config, messages.MACHINETYPES)
            message["num_machinetypes"] = len(bodies)
            message.update(body)
            types.append(message)
        return self.send([factory] + types)
