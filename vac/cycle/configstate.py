# SPDX-License-Identifier: BSD-2-Clause
"""The configuration a cycle manages with, and its state for every monitor.

A configuration that is rejected or missing never stops the cycle: the machines that run are
managed (heartbeats, finishing, accounting) with the last good configuration, or, when there
never was one, with what the state directory says (its slots, each machine's recorded model,
the defaults for everything else), and nothing is created. The state (ok, rejected, missing)
and its reason go into plan.json and factory-error, and into the log at ERROR each cycle while
it holds, as configuration warnings are logged at WARNING each cycle while they hold: vacd's
log filter (vac.service.journal.Repeats, the one place for that rule) lets a line through
when it appears and says when it clears, so the journal has one line per distinct reason.
"""
from __future__ import annotations

import collections
import logging
import os
from dataclasses import dataclass
from typing import Callable, List, Optional

from vac import planfile
from vac.config import load
from vac.config.model import Config, RawConfig
from vac.errors import ConfigError, ConfigMissing
from vac.host.facts import HostFacts
from vac.machine.slots import ordinal_of
from vac.paths import Paths
from vac.planfile import IdleReason

log = logging.getLogger(__name__)

PLACEHOLDER = "unconfigured.invalid"   # space and factory name when nothing says better
ORIGIN = "the state directory (no configuration accepted yet)"


@dataclass(frozen=True)
class Loaded:
    """This cycle's configuration: the one to manage with, and the file's state.

    `own` is False when `config` was made from the state directory (there never was a good
    configuration): then the cycle only looks after what runs (no zombie hunt, no expiry,
    no host services, no reports to the space; APEL records of the machines it finishes
    wait for a configuration)."""

    config: Config
    state: str = planfile.CONFIG_OK
    error: Optional[str] = None
    own: bool = True

    @property
    def ok(self) -> bool:
        return self.state == planfile.CONFIG_OK

    def reason(self) -> Optional[IdleReason]:
        """Why nothing is created while the file is rejected or missing (None when ok)."""
        if self.ok:
            return None
        if self.state == planfile.CONFIG_MISSING:
            return IdleReason(planfile.NOT_CONFIGURED, self.error or "not configured yet")
        return IdleReason(planfile.CONFIG_REJECTED, f"configuration rejected: {self.error}")


class ConfigKeeper:
    """Loads the configuration each cycle and keeps the last good one."""

    def __init__(self, load_config: Callable[[], Config], state_dir: str,
                 host: Optional[HostFacts] = None):
        self.load_config = load_config
        self.state_dir = state_dir
        self.host = host
        self.last_good: Optional[Config] = None

    def refresh(self) -> Loaded:
        try:
            config = self.load_config()
        except ConfigMissing as e:
            return self._without(planfile.CONFIG_MISSING, str(e))
        except ConfigError as e:
            return self._without(planfile.CONFIG_REJECTED_STATE, str(e))
        for warning in config.warnings:
            log.warning("%s", warning)
        self.last_good = config
        return Loaded(config)

    def _without(self, state: str, error: str) -> Loaded:
        what = "configuration missing" if state == planfile.CONFIG_MISSING \
            else "configuration rejected"
        log.error("%s, no machines will be created (running machines are still managed): %s",
                  what, error)
        if self.last_good is not None:
            return Loaded(self.last_good, state, error)
        return Loaded(state_dir_config(self.state_dir, self._host()), state, error, own=False)

    def _host(self) -> HostFacts:
        if self.host is None:
            self.host = HostFacts.read()
        return self.host


def state_dir_config(state_dir: str, host: HostFacts) -> Config:
    """A configuration with no machinetypes from the state directory alone: its slots (the
    factory name and slot count their records give), defaults for everything else, no
    version logger. For managing what runs while no configuration was ever accepted."""
    names = _slot_names(Paths(state_dir))
    factory = _factory_of(names) or PLACEHOLDER
    ordinals = [ordinal_of(factory, n) for n in names]
    slots = max([host.processors] + [o + 1 for o in ordinals if o >= 0])
    values = {"vac_space": PLACEHOLDER, "factory_name": factory, "state_dir": state_dir,
              "host_processors": str(slots), "version_logger": "0"}
    raw = RawConfig()
    raw.sections[("settings", "")] = {k: (v, ORIGIN) for k, v in values.items()}
    return load.build(raw, host)


def _slot_names(paths: Paths) -> List[str]:
    try:
        return sorted(n for n in os.listdir(paths.slots) if not n.startswith("."))
    except OSError:
        return []


def _factory_of(names: List[str]) -> Optional[str]:
    """The factory most slot records belong to: host-NN.domain -> host.domain."""
    found = collections.Counter()
    for name in names:
        head, dot, domain = name.partition(".")
        host, dash, digits = head.rpartition("-")
        if dot and dash and host and digits.isdigit():
            found[f"{host}.{domain}".lower()] += 1
    return found.most_common(1)[0][0] if found else None
