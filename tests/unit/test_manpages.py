# SPDX-License-Identifier: BSD-2-Clause
"""The man pages against the code, both ways, with the lists taken from the code at test time:
every vac.conf option (and alias) in vac.conf.5 under its section, every vac command and flag
in vac.1, every vacd flag in vacd.8, and nothing documented that the code does not know."""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List, Set, Tuple

import pytest
from testbed import REPO

from vac import cli, daemon
from vac.config import options as O

MAN = os.path.join(REPO, "man")
FAMILY = "XXX"  # how a family of options (user_data_option_XXX) is written in vac.conf.5


def _read(name: str) -> List[str]:
    with open(os.path.join(MAN, name), encoding="utf-8") as f:
        return f.read().splitlines()


def _plain(text: str) -> str:
    text = re.sub(r"\\f[BIRP]", "", text).replace("\\-", "-").replace("\\(em", "-")
    return text.replace("\\", "")


def _items(lines: List[str]) -> Dict[str, List[Tuple[List[str], str]]]:
    """Heading (.SH or .SS text) -> its items: (the item line's words, the item's paragraph)."""
    found: Dict[str, List[Tuple[List[str], str]]] = {}
    heading, item, body = "", None, []

    def close():
        if item is not None:
            found.setdefault(heading, []).append((item, _plain(" ".join(body))))

    for i, line in enumerate(lines):
        if line.startswith((".SH", ".SS")):
            close()
            item, body = None, []
            heading = _plain(line[3:].strip().strip('"'))
        elif line.startswith(".TP"):
            close()
            item, body = None, []
            tag = lines[i + 1]
            if re.match(r"\.(B|BR|BI|I)\s", tag):
                item = [w.strip() for w in shlex.split(_plain(tag.split(None, 1)[1]))]
        elif item is not None and not line.startswith(".\\\""):
            body.append(line)
    close()
    return found


def _names(items: List[Tuple[List[str], str]]) -> Dict[str, str]:
    return {words[0].split()[0]: body for words, body in items}


def _families(prefixes) -> Set[str]:
    return {p + FAMILY for p in prefixes}


CONF_SECTIONS = {
    "SETTINGS": (O.SETTINGS_OPTIONS,
                 _families((O.USER_DATA_OPTION, O.USER_DATA_FILE, O.MACHINEFEATURES_OPTION))),
    "MACHINETYPE OPTIONS": (O.MACHINETYPE_OPTIONS,
                            _families((O.USER_DATA_OPTION, O.USER_DATA_FILE))),
}


@pytest.mark.parametrize("heading", sorted(CONF_SECTIONS))
def test_every_option_is_documented_in_its_section_and_nothing_else(heading):
    table, families = CONF_SECTIONS[heading]
    documented = _names(_items(_read("vac.conf.5"))[heading])
    in_code = {o.name for o in table} | families
    assert sorted(in_code - set(documented)) == [], "options missing from vac.conf.5"
    assert sorted(set(documented) - in_code) == [], "vac.conf.5 documents unknown options"


@pytest.mark.parametrize("heading", sorted(CONF_SECTIONS))
def test_aliases_and_defaults_match_the_table(heading):
    table, _ = CONF_SECTIONS[heading]
    documented = _names(_items(_read("vac.conf.5"))[heading])
    for opt in table:
        body = documented[opt.name]
        said = re.search(r"Alias(?:es)?: ([a-z0-9_, ]+)\.", body)
        said_aliases = set(re.findall(r"[a-z0-9_]+", said.group(1))) if said else set()
        assert said_aliases == set(opt.aliases), f"{opt.name}: aliases in vac.conf.5"
        default = re.search(r"Default: ([^ ]+?)\.?(?: |$)", body)
        if default and isinstance(opt.default, (int, float)) and not isinstance(opt.default, bool):
            assert float(default.group(1)) == float(opt.default), f"{opt.name}: default"
        elif default and isinstance(opt.default, bool):
            word = default.group(1).lower()
            assert (word in ("true", "yes")) == opt.default, f"{opt.name}: default {word}"


def test_obsolete_options_are_listed():
    documented = _names(_items(_read("vac.conf.5"))["OBSOLETE OPTIONS"])
    assert set(documented) == set(O.SETTINGS_OBSOLETE) | set(O.MACHINETYPE_OBSOLETE)


def _flags(parser: argparse.ArgumentParser, with_help: bool) -> Set[str]:
    return {s for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS
            and (with_help or not isinstance(a, argparse._HelpAction)) for s in a.option_strings}


def _commands(parser: argparse.ArgumentParser, path: Tuple[str, ...] = ()):
    """(command words, positional metavars, flags) for every leaf command of vac."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        positionals = [a.metavar or a.dest.upper() for a in parser._actions
                       if not a.option_strings]
        yield " ".join(path), positionals, _flags(parser, with_help=False)
        return
    for name, child in subs[0].choices.items():
        yield from _commands(child, path + (name,))


def _documented_flags(items) -> Set[str]:
    return {w.split()[0] for words, _ in items for w in words if w.startswith("-")}


def test_vac_1_documents_every_command_and_flag_and_nothing_else():
    parser = cli.build_parser()
    sections = _items(_read("vac.1"))
    headings = {h for h in sections}
    ss = [line[3:].strip().strip('"') for line in _read("vac.1") if line.startswith(".SS")]
    documented = {}
    for heading in ss:
        words = _plain(heading).split()
        path = [w for w in words if re.fullmatch(r"[a-z][a-z0-9-]*", w)]
        rest = [w.strip("[].") for w in words[len(path):]]
        documented[" ".join(path)] = (rest, _documented_flags(sections.get(_plain(heading), [])))
    in_code = {path: (pos, flags) for path, pos, flags in _commands(parser)}
    assert sorted(set(in_code) - set(documented)) == [], "commands missing from vac.1"
    assert sorted(set(documented) - set(in_code)) == [], "vac.1 documents unknown commands"
    for path, (positionals, flags) in in_code.items():
        rest, said = documented[path]
        assert [p for p in positionals if p not in rest] == [], f"vac {path}: arguments"
        assert sorted(flags ^ said) == [], f"vac {path}: flags in vac.1 differ from the code"
    assert "OPTIONS" in headings
    assert _documented_flags(sections["OPTIONS"]) == _flags(parser, with_help=True)


def test_vacd_8_documents_every_flag_and_nothing_else():
    said = _documented_flags(_items(_read("vacd.8"))["OPTIONS"])
    assert said == _flags(daemon.build_parser(), with_help=True)


def test_the_parser_walk_sees_a_flag_that_is_not_documented():
    # The check above must be able to fail: a parser with one more flag is caught.
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.choices["slots"].add_argument("--undocumented", action="store_true")
    flags = dict((p, f) for p, _, f in _commands(parser))
    assert "--undocumented" in flags["slots"]
    assert "--undocumented" not in _documented_flags(_items(_read("vac.1"))["slots"])


@pytest.mark.skipif(shutil.which("man") is None, reason="man not installed")
@pytest.mark.parametrize("page", sorted(os.listdir(MAN)))
def test_man_renders_each_page_without_warnings(page):
    out = subprocess.run(["man", "--warnings", "-l", os.path.join(MAN, page)],
                         capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, MANWIDTH="100", MANROFFOPT="-c", GROFF_NO_SGR="1"))
    text = re.sub(".\x08", "", out.stdout)
    assert out.returncode == 0
    assert out.stderr.strip() == ""
    assert "SEE ALSO" in text


def test_check_vacd_8_documents_the_flags_the_script_takes(tmp_path):
    said = _documented_flags(_items(_read("check-vacd.8"))["OPTIONS"])
    script = os.path.join(REPO, "scripts", "check-vacd")
    env = dict(os.environ, PYTHONPATH=REPO)     # the vac package, under any interpreter
    usage = subprocess.run([sys.executable, script, "--no-such-flag"], capture_output=True,
                           text=True, timeout=30, env=env).stdout
    assert usage.startswith("UNKNOWN: usage:")
    assert set(re.findall(r"--[a-z-]+", usage)) == said
    for flag in said:
        done = subprocess.run([sys.executable, script, flag, str(tmp_path)],
                              capture_output=True, text=True, timeout=30, env=env)
        assert done.returncode != 3, f"check-vacd refuses its documented {flag}"
