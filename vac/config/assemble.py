# SPDX-License-Identifier: BSD-2-Clause
"""The whole configuration: vac.d and vac.conf (read by vac.config.load) merged with what the
Vacuum Pipes give (vac.config.pipes), built into one Config.

vacd, the space responder and every command call this with update=False: the pipes come from
their cache only (vacd fetches due pipes in the background, vac.config.pipefetch).
update=True fetches the due pipes first; force=True every pipe whatever its cache's age.
A pipe can never make the whole configuration fail: a pipe machinetype that load.build
rejects is dropped with an error naming its pipe, and the rest is built without it.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, List, Sequence, Tuple

from vac import fetch
from vac.config import load, model, pipes
from vac.config import options as O
from vac.errors import ConfigError
from vac.host.facts import HostFacts
from vac.paths import Paths


def load_config(files: Sequence[str], host: HostFacts, *, update: bool, now: float,
                fetcher: pipes.Fetcher = fetch.fetch_bytes) -> model.Config:
    """Read the config files, the pipes (fetching them only if update), and build the Config.

    Pipe warnings and pipe errors are in Config.warnings (errors start "URL (pipe PREFIX): ");
    load_config_with_pipes also returns them apart.

    Raises:
        ConfigError: the local configuration is unusable (never because of a pipe).
    """
    return load_config_with_pipes(files, host, update=update, now=now, fetcher=fetcher)[0]


def load_config_with_pipes(files: Sequence[str], host: HostFacts, *, update: bool, now: float,
                           fetcher: pipes.Fetcher = fetch.fetch_bytes, force: bool = False,
                           progress: pipes.Progress = None
                           ) -> Tuple[model.Config, pipes.PipeResult]:
    """load_config, also returning what the pipes gave (errors, warnings, sources, states)
    apart. force fetches every pipe now whatever its cache's age (`config check --fetch`),
    in parallel, telling progress(text) what it waits for.

    Raises:
        ConfigError: the local configuration is unusable (never because of a pipe).
    """
    raw = load.read_raw(files)
    sections = load.pipe_sections(raw)
    result = pipes.PipeResult()
    if sections:
        result = pipes.load_pipes(sections, _paths_of(raw), update=update, now=now,
                                  fetcher=fetcher, force=force, progress=progress)
    return _build(raw, host, result)


def _build(raw: model.RawConfig, host: HostFacts,
           result: pipes.PipeResult) -> Tuple[model.Config, pipes.PipeResult]:
    """load.build with the pipe values; a pipe machinetype it rejects is dropped, not fatal."""
    try:
        return load.build(raw, host, result.values, result.warnings + result.errors), result
    except ConfigError:
        if not result.values:
            raise
    kept: Dict[str, Dict[str, pipes.RawValue]] = {}
    rejected: List[str] = []
    for name in sorted(result.values):
        trial = dict(kept)
        trial[name] = result.values[name]
        try:
            load.build(raw, host, trial)
        except ConfigError as e:
            rejected.append(f"{result.sources.get(name, 'pipe')}: machinetype {name} not "
                            f"used: {e}")
        else:
            kept = trial
    result = replace(result, values=kept, errors=result.errors + tuple(rejected),
                     sources={k: v for k, v in result.sources.items() if k in kept})
    return load.build(raw, host, kept, result.warnings + result.errors), result


def _paths_of(raw: model.RawConfig) -> Paths:
    """The state directory's Paths as the files give it (the pipes' cache is under it)."""
    value, _ = raw.section("settings").get("state_dir", ("", ""))
    return Paths(value or O.by_name(O.SETTINGS_OPTIONS)["state_dir"].default)
