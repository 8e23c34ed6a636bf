# SPDX-License-Identifier: BSD-2-Clause
"""`vac config check` and `vac config get`: the admin's safety net and condor_config_val.

check loads the configuration as vacd does (pipes from their cache, or fetched now with
--fetch), adds what this host lacks for it (vac.config.hostcheck: local files, processors, a
share of 0) and the options accepted but not supported (vac.config.unsupported), and lists
[settings] and every option of every machinetype with its effective value and where it came
from (FILE:LINE, a pipe, a rule, or "default"). Exit status: 0 OK, 1 errors, 3 warnings with
--strict; --json carries the same. get prints one effective value (-v: and its origin).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any, Dict, List, Mapping, Optional, Tuple

from vac.config import hostcheck, pipes, unsupported
from vac.config import options as O
from vac.config.forcommand import load_with_pipes_for_command
from vac.config.model import SECTION, Config, MachineType
from vac.config.spelling import suggestion
from vac.errors import ConfigError, Problem

OK, ERRORS, USAGE, WARNINGS = 0, 1, 2, 3
WIDTH = 24      # the option column of the listing


def add_commands(config_sub: Any) -> None:
    """`config check` and `config get` (vac.1 documents each flag)."""
    check = config_sub.add_parser("check", help="validate config and pipes, show every value")
    check.add_argument("--json", action="store_true")
    check.add_argument("--fetch", action="store_true",
                       help="fetch pipes now (default: use the pipe cache only)")
    check.add_argument("--strict", action="store_true",
                       help="exit 3 when there are warnings (and no errors)")
    check.set_defaults(func=check_command)
    get = config_sub.add_parser("get", help="print one effective value")
    get.add_argument("-v", "--verbose", action="store_true",
                     help="also say where the value came from")
    get.add_argument("machinetype", nargs="?", metavar="MACHINETYPE",
                     help="a machinetype (without: an option of [settings])")
    get.add_argument("option", metavar="OPTION")
    get.set_defaults(func=get_command)


def _say(text: str) -> None:
    print(f"vac: {text}", file=sys.stderr, flush=True)


def _load(args: argparse.Namespace, fetch: bool = False) -> Tuple[Config, pipes.PipeResult]:
    """Raises ConfigError (also ConfigMissing) as assemble.load_config_with_pipes."""
    # --fetch: every pipe now, in parallel, saying so
    return load_with_pipes_for_command(args.config, fetch, _say if fetch else None)


# ---- config check ----------------------------------------------------------------------------

def check_command(args: argparse.Namespace) -> int:
    try:
        config, found = _load(args, args.fetch)
    except ConfigError as e:
        return _rejected(e, args.json)
    host = hostcheck.check(config)
    warnings = list(config.findings) + unsupported.findings(config) + host.warnings
    status = ERRORS if host.errors else WARNINGS if args.strict and (
        warnings or found.unfetched) else OK
    if args.json:
        print(json.dumps(_json(config, found, host.errors, warnings, status), indent=1,
                         sort_keys=True, allow_nan=False))
        return status
    _print_check(config, found, host.errors, warnings)
    if host.errors:
        _say(f"the configuration loads, but cannot work on this host ({_count(host.errors)}):")
        for problem in host.errors:
            print(f"  {problem.located()}", file=sys.stderr)
    elif status == WARNINGS:
        _say(f"--strict: {_count(warnings, 'warning')}"
             + (f", {len(found.unfetched)} pipes not fetched yet" if found.unfetched else ""))
    return status


def _count(items: List[Any], word: str = "error") -> str:
    return f"{len(items)} {word}" + ("" if len(items) == 1 else "s")


def _rejected(e: ConfigError, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "rejected": True, "exit_status": ERRORS,
                          "problems": [asdict(p) for p in e.problems]},
                         indent=1, allow_nan=False))
    else:
        print("vac: configuration rejected:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem.located()}", file=sys.stderr)
    return ERRORS


def _print_check(config: Config, found: pipes.PipeResult, errors: List[Problem],
                 warnings: List[Problem]) -> None:
    s = config.settings
    head = "configuration OK" if not errors else f"configuration with {_count(errors)}"
    print(f"{head}: space {s.vac_space}, factory {s.factory_name}, "
          f"{s.total_processors} processors, files: {', '.join(config.files)}")
    for problem in errors:
        print(f"error: {problem.located()}")
    for problem in warnings:
        print(f"warning: {problem.located()}")
    for note in found.unfetched:
        print(f"pipe: {note}")
    zero = zero_share(config)
    if zero:
        print(f"target_share 0 (no slots): {', '.join(zero)}")
    print("\n[settings]")
    _print_rows(settings_rows(config))
    for name, mt in config.machinetypes.items():
        print(f"\n[machinetype {name}]" + (f"  (pipe {mt.pipe})" if mt.pipe else ""))
        _print_rows(machinetype_rows(config, mt))
    if not config.machinetypes:
        print("\nno machinetypes configured: this factory will create nothing"
              + (" (until its pipes are fetched)" if found.unfetched else ""))


def _print_rows(rows: List[Tuple[str, Any, str, Optional[int]]]) -> None:
    for option, value, origin, line in rows:
        print(f"  {option:{WIDTH}} = {shown(value)!s:40}  # {origin_text(origin, line)}")


def zero_share(config: Config) -> List[str]:
    """Every machinetype whose effective target share is 0 (it gets no slots)."""
    return sorted(name for name, mt in config.machinetypes.items() if mt.target_share <= 0)


def _json(config: Config, found: pipes.PipeResult, errors: List[Problem],
          warnings: List[Problem], status: int) -> Dict[str, Any]:
    s = config.settings
    return {"ok": not errors, "rejected": False, "exit_status": status,
            "files": list(config.files),
            "warnings": list(config.warnings),
            "unsupported": [p.located() for p in unsupported.findings(config)],
            "problems": [asdict(p) for p in errors],
            "findings": [asdict(p) for p in warnings],
            "space": s.vac_space, "factory": s.factory_name,
            "settings": _values_json(settings_rows(config)),
            "machinetypes": {name: _values_json(machinetype_rows(config, mt))
                             for name, mt in config.machinetypes.items()},
            "lines": {"settings": _lines_json(settings_rows(config)),
                      "machinetypes": {name: _lines_json(machinetype_rows(config, mt))
                                       for name, mt in config.machinetypes.items()}},
            "target_share_zero": zero_share(config),
            "pipes_not_fetched": list(found.unfetched)}


def _values_json(rows: List[Tuple[str, Any, str, Optional[int]]]) -> Dict[str, Any]:
    return {option: {"value": _jsonable(value), "from": origin}
            for option, value, origin, _ in rows}


def _lines_json(rows: List[Tuple[str, Any, str, Optional[int]]]) -> Dict[str, int]:
    return {option: line for option, _, _, line in rows if line}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return dict(value) if isinstance(value, Mapping) else value


# ---- the values and their origins ------------------------------------------------------------

Row = Tuple[str, Any, str, Optional[int]]   # (option, effective value, origin, line or None)


def settings_rows(config: Config) -> List[Row]:
    """Every [settings] option (the families by member) with its value and origin."""
    s = config.settings
    section = _section_origin(config, s.origins)
    rows = [_row(config, opt, getattr(s, opt.name), s.origins) for opt in O.SETTINGS_OPTIONS]
    for prefix, members in ((O.USER_DATA_OPTION, s.user_data_options),
                            (O.USER_DATA_FILE, s.user_data_files),
                            (O.MACHINEFEATURES_OPTION, s.machinefeatures_options)):
        for key, value in sorted(members.items()):
            name = prefix + key
            origin = s.origins.get(name, section)
            rows.append((name, value, origin, config.lines.get((origin, name))))
    return rows


def machinetype_rows(config: Config, mt: MachineType) -> List[Row]:
    """Every option of a machinetype (the families by member) with its value and origin."""
    rows = [_row(config, opt, getattr(mt, opt.name), mt.origins)
            for opt in O.MACHINETYPE_OPTIONS]
    for prefix, members in ((O.USER_DATA_OPTION, mt.user_data_options),
                            (O.USER_DATA_FILE, mt.user_data_files)):
        for key, value in sorted(members.items()):
            name = prefix + key
            origin = mt.origins.get(name, "[settings]")
            rows.append((name, value, origin, config.lines.get((origin, name))))
    return rows


def _row(config: Config, opt: O.Option, value: Any, origins: Mapping[str, str]) -> Row:
    origin = origins.get(opt.name, "default")
    line = None
    for name in (opt.name,) + opt.aliases:      # a deprecated alias keeps its own line
        line = line or config.lines.get((origin, name))
    return opt.name, value, origin, line


def _section_origin(config: Config, origins: Mapping[str, str]) -> str:
    return next((o for o in origins.values() if o.endswith("[settings]")),
                "[settings]")


def shown(value: Any) -> str:
    """A value as vac.conf would spell it ("(unset)" for none)."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return " ".join(value)
    return str(value)


def origin_text(origin: str, line: Optional[int]) -> str:
    """"FILE:LINE [SECTION]" for a value from a file (as a located problem), else the origin
    as it is: "default", a pipe's "URL (pipe PREFIX)", or the rule that gave the value."""
    file, bracket, title = origin.rpartition(" [")
    return f"{file}:{line} [{title}" if line and bracket else origin


# ---- config get ------------------------------------------------------------------------------

def get_command(args: argparse.Namespace) -> int:
    try:
        config, _ = _load(args)
    except ConfigError as e:
        return _rejected(e, False)
    if args.machinetype is None:
        rows, where = settings_rows(config), "[settings]"
    elif args.machinetype in config.machinetypes:
        rows = machinetype_rows(config, config.machinetypes[args.machinetype])
        where = f"[machinetype {args.machinetype}]"
    else:
        _say(f"no machinetype {args.machinetype}"
             + suggestion(args.machinetype, config.machinetypes)
             + f" (machinetypes: {', '.join(sorted(config.machinetypes)) or 'none'})")
        return ERRORS
    found = {row[0]: row for row in rows}
    row = found.get(args.option)
    if row is None:
        _say(f"{where} has no option {args.option}" + _option_hint(args.option, found))
        return ERRORS
    option, value, origin, line = row
    print(f"{shown(value)}  # {origin_text(origin, line)}" if args.verbose else shown(value))
    return OK


def _option_hint(option: str, found: Mapping[str, Row]) -> str:
    near = suggestion(option, found)
    if near:
        return near
    for other, table in (("[machinetype NAME]", O.MACHINETYPE_OPTIONS),
                         ("[settings]", O.SETTINGS_OPTIONS)):
        if option in O.by_name(table) and option not in found:
            return f" (it is a {other} option)"
    return ""
