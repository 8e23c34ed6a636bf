# SPDX-License-Identifier: BSD-2-Clause
"""The configuration a `vac` command runs with: the files (--config, else the defaults), this
host's facts, and the pipes from their cache only (a command never fetches; vacd does). The one
way the commands load it (vac factories/machines, squid-conf, apel-sync, doctor).
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

from vac.config import pipes
from vac.config.load import config_files
from vac.config.model import Config
from vac.host.facts import HostFacts


def load_for_command(explicit: Optional[Sequence[str]], now: Optional[float] = None) -> Config:
    """Raises ConfigError (ConfigMissing when there is no configuration) as pipes.load_config."""
    return pipes.load_config(config_files(explicit), HostFacts.read(), update=False,
                             now=time.time() if now is None else now)
