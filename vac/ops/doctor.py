# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`: is this host ready for what vac.conf asks, and what to fix; one line a check.

Exit status 0 when no check failed (warnings allowed), 1 when one did. The configuration is
read with the cached pipes only, like `vac config check`; its warnings make the config line a
warning, each listed. A rejected (or missing) configuration is a failed line per problem, and
the host checks still run: with the file's [settings] alone when they are valid, else with the
defaults (a line says which).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import socket
from typing import Callable, List, Optional, Sequence, Tuple

from vac import optional
from vac.config import hostcheck, load
from vac.config.forcommand import load_for_command
from vac.config.load import config_files
from vac.config.model import Config, RawConfig
from vac.config.unsupported import notes as unsupported_notes
from vac.errors import ConfigError, ConfigMissing
from vac.host.facts import HostFacts
from vac.ops import (
    backendchecks,
    checks,
    delegationcheck,
    diskcheck,
    filechecks,
    namecheck,
    pressurecheck,
    scratchcheck,
    servicechecks,
)
from vac.ops.checks import FAIL, OK, WARN, Check

WARNING_FIX = "correct it where it says (vac config check lists each with its file and line)"
UNSUPPORTED_FIX = "remove the option: it has no effect here"
DEFAULT_SPACE = "vac.invalid"      # what the defaults stand on when no [settings] is usable
DEFAULT_FACTORY = "factory.vac.invalid"


def run_checks(config: Config, now: Optional[float] = None) -> List[Check]:
    """Every check for this configuration, in the order an admin would fix them."""
    used = backendchecks.backends_in_use(config)
    return config_lines(config, used) + host_checks(config, now, used)


def config_lines(config: Config, used: dict) -> List[Check]:
    """The configuration's line: ok, or a warning with each warning on a line of its own."""
    warnings = [(text, WARNING_FIX) for text in config.warnings] + \
        [(text, UNSUPPORTED_FIX) for text in unsupported_notes(config)]
    found = (f"{len(config.machinetypes)} machinetypes, backends "
             f"{' '.join(sorted(used)) or 'none'}; files: {', '.join(config.files)}")
    if not warnings:
        return [Check("config", OK, found)]
    return [Check("config", WARN, f"{found}; {len(warnings)} warnings",
                  "see the config-warning lines")] + \
        [Check("config-warning", WARN, text, fix) for text, fix in warnings]


def machinetype_fit(config: Config) -> List[Check]:
    """What `vac config check` finds of the machinetypes against this host, files apart (the
    files lines check those): a smallest machine larger than the host or a superslot, a share
    of 0. Nothing to say: no line."""
    found = hostcheck.fit(config)
    return [Check("machinetype-fit", FAIL, p.located(), "lower min_processors, or raise "
                  "the limit it names (on a host that has the processors)")
            for p in found.errors] + \
        [Check("machinetype-fit", WARN, p.located(), "give it a target_share above 0, or "
               "remove it") for p in found.warnings]


def host_checks(config: Config, now: Optional[float], used: dict) -> List[Check]:
    """What this host has for the configuration: vacd, state directory, clock, libraries,
    the machinetypes' files, cgroups, engines and images, ports."""
    s = config.settings
    lines, holder = checks.vacd_running(s)
    groups: List[Tuple[str, Callable[[], List[Check]]]] = [
        ("state-dir", lambda: checks.state_dir(s)), ("clock", lambda: checks.clock(now)),
        ("libraries", lambda: libraries(config))]
    groups.append(("machinetype-fit", lambda: machinetype_fit(config)))
    for mt in config.machinetypes.values():
        groups.append((f"files {mt.name}", lambda mt=mt: filechecks.machinetype_files(mt)))
    if backendchecks.host_cgroups(used, s):
        groups.append(("cgroups", checks.cgroup_setup))
        groups.append((delegationcheck.NAME, delegationcheck.host_delegation))
    for name in sorted(used):
        groups.append((f"{name}-engine",
                       lambda name=name: backendchecks.for_backend(name, used[name], s)))
    groups.append(("ports", lambda: _ports(config, holder, used)))
    groups.append((namecheck.NAME, lambda: namecheck.own_name(s)))
    groups.append(("pressure", lambda: pressurecheck.host_pressure(s)))
    groups.append(("scratch", lambda: scratchcheck.host_scratch(s, used)))
    groups.append((diskcheck.NAME, lambda: diskcheck.host_disk(s)))
    for name, run in groups:
        try:
            lines += run()
        except Exception as e:  # noqa: BLE001 (a broken check must not hide the others)
            lines.append(Check(name, FAIL, f"the check itself failed: {type(e).__name__}: {e}",
                               "report this as a bug in vac doctor"))
    return lines


def libraries(config: Config) -> List[Check]:
    """Every configured feature's Python module imports (vac.optional's table)."""
    missing = optional.missing_libraries(config)
    if not missing:
        wanted = sorted({module for _, module in optional.wanted(config)})
        return [Check("libraries", OK, f"the modules configured features need import: "
                      f"{' '.join(wanted) or 'none needed'}")]
    return [Check(f"library {m.module}", FAIL, m.text(), m.package) for m in missing]


def _ports(config: Config, holder: Optional[int], used: dict) -> List[Check]:
    """While vacd runs: its listeners answer; else: each port is free to bind."""
    s = config.settings
    if holder:
        lines = servicechecks.served(s)
    else:
        lines = [checks.port("vacquery-port", socket.SOCK_DGRAM, s.vacquery_address,
                             s.vacquery_port, holder)]
        if s.metrics_port:
            lines.append(checks.port("metrics-port", socket.SOCK_STREAM, s.metrics_address,
                                     s.metrics_port, holder))
        if s.status_port and s.status_port != s.metrics_port:  # equal: one listener for both
            lines.append(checks.port("status-port", socket.SOCK_STREAM, s.status_address,
                                     s.status_port, holder))
    return lines + [checks.port(name, socket.SOCK_STREAM, address, number, holder)
                    for name, address, number in backendchecks.listeners(used, s)]


def rejected_lines(e: ConfigError, files: Sequence[str],
                   now: Optional[float] = None) -> List[Check]:
    """A rejected configuration: a FAIL line per problem, then the host checks on what can
    be used of it ([settings] alone when valid, else the defaults)."""
    if isinstance(e, ConfigMissing):
        lines = [Check("config", FAIL, str(e), f"write {e.path} (vac.conf(5) lists the options; "
                       "vac_space is required), or name an existing file with --config")]
    else:
        lines = [Check("config", FAIL, problem.located(), "correct it (vac config check lists "
                       "them all)") for problem in e.problems] or \
            [Check("config", FAIL, str(e), "correct it")]
    config, which = fallback_config(files)
    lines.append(Check("config-fallback", WARN, f"the host checks below use {which}: "
                       "the machinetypes' files, engines and images are not checked",
                       "correct the configuration and run vac doctor again"))
    return lines + host_checks(config, now, {})


def fallback_config(files: Sequence[str]) -> Tuple[Config, str]:
    """The configuration's [settings] alone, else the defaults; and which of them it is."""
    host = HostFacts.read()
    try:
        raw = load.read_raw(files)
        alone = dataclasses.replace(raw, sections={k: v for k, v in raw.sections.items()
                                                   if k == ("settings", "")})
        return load.build(alone, host), "the [settings] of the configuration alone"
    except ConfigError:
        pass
    defaults = RawConfig(sections={("settings", ""): {
        "vac_space": (DEFAULT_SPACE, "default"), "factory_name": (DEFAULT_FACTORY, "default")}})
    config = load.build(defaults, host)
    return config, f"the default settings (state_dir {config.settings.state_dir})"


def command(args: argparse.Namespace) -> int:
    try:
        config = load_for_command(args.config)
    except ConfigError as e:
        lines = rejected_lines(e, config_files(args.config))
    else:
        lines = run_checks(config)
    failed = any(line.status == FAIL for line in lines)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [c.as_dict() for c in lines]}, indent=1))
    else:
        for line in lines:
            print(line.line())
        print(f"vac doctor: {sum(c.status == FAIL for c in lines)} failed, "
              f"{sum(c.status == WARN for c in lines)} warnings, "
              f"{sum(c.status == OK for c in lines)} ok")
    return 1 if failed else 0
