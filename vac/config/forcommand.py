# SPDX-License-Identifier: BSD-2-Clause
"""The configuration a `vac` command runs with: the files (--config, else the defaults), this
host's facts, and the pipes from their cache only (a command never fetches; vacd does, and
`vac config check --fetch` when asked). The one way every command loads it (vac slots,
factories/machines/machinetype, config, squid-conf, apel-sync, doctor); each command says
its own messages and exit codes for a rejected or missing configuration.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence, Tuple

from vac.config import assemble, pipes
from vac.config.load import config_files
from vac.config.model import Config
from vac.host.facts import HostFacts


def load_for_command(explicit: Optional[Sequence[str]], now: Optional[float] = None) -> Config:
    """Raises ConfigError (ConfigMissing when there is no configuration) as
    assemble.load_config."""
    return assemble.load_config(config_files(explicit), HostFacts.read(), update=False,
                                now=time.time() if now is None else now)


def load_with_pipes_for_command(explicit: Optional[Sequence[str]], fetch: bool = False,
                                progress: pipes.Progress = None
                                ) -> Tuple[Config, pipes.PipeResult]:
    """load_for_command, also returning what the pipes gave; fetch: every pipe now, in
    parallel, telling progress(text) what it waits for (`vac config check --fetch`).

    Raises:
        ConfigError: as assemble.load_config_with_pipes (ConfigMissing: no configuration).
    """
    return assemble.load_config_with_pipes(config_files(explicit), HostFacts.read(),
                                           update=False, now=time.time(), force=fetch,
                                           progress=progress)
