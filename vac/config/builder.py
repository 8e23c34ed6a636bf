# SPDX-License-Identifier: BSD-2-Clause
"""The Builder: collects the problems and warnings found while vac.config.check turns the raw
values of vac.conf into typed ones, each located at its file, section, option and line.

It imports no other part of the configuration's checks, so vac.config.check and
vac.config.spelling both report through it without importing each other.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from vac.config import booleans
from vac.config import options as O
from vac.errors import Problem

if TYPE_CHECKING:
    from vac.config.model import RawValue


class Builder:
    """Collects problems and warnings while turning raw values into typed ones.

    lines: (origin, option) -> line number, from RawConfig.lines (empty: no lines known).
    """

    def __init__(self, lines: Optional[Mapping[Tuple[str, str], int]] = None) -> None:
        self.problems: List[Problem] = []
        self.notes: List[Problem] = []
        self.lines = lines or {}

    @property
    def warnings(self) -> List[str]:
        return [note.located() for note in self.notes]     # FILE:LINE [SECTION] OPTION: ...

    def locate(self, message: str, origin: str = "", option: Optional[str] = None) -> Problem:
        """A Problem located at an origin "FILE [SECTION]" (and the option's line in it)."""
        file, _, section = origin.partition(" [")
        line = self.lines.get((origin, option or ""))
        return Problem(message, file=file or None, section=section.rstrip("]") or None,
                       option=option, line=line)

    def problem(self, message: str, origin: str = "", option: Optional[str] = None) -> None:
        found = self.locate(message, origin, option)
        if found not in self.problems:
            self.problems.append(found)

    def warn(self, message: str, origin: str = "", option: Optional[str] = None) -> None:
        found = self.locate(message, origin, option)
        if found not in self.notes:
            self.notes.append(found)

    def _reported(self, origin: str, option: str) -> bool:
        where = self.locate("", origin, option)
        return any((p.file, p.section, p.option) == (where.file, where.section, where.option)
                   for p in self.problems)

    def convert(self, opt: O.Option, value: str, origin: str, name: str) -> Any:
        try:
            converted = _convert(opt.kind, value)
        except ValueError as e:
            text = str(e) if opt.kind == "bool" else \
                f"{value!r} is not a valid {_KIND_WORDS[opt.kind]}"
            if not self._reported(origin, name):    # a comment or a joined line: said once
                self.problem(text, origin, name)
            return opt.default
        if opt.kind == "bool":
            otherwise = booleans.reads_otherwise(name, value, opt.legacy, opt.legacy_by)
            if otherwise:
                self.warn(otherwise, origin, name)
        return converted

    def apply_table(self, table: Tuple[O.Option, ...], section: Mapping[str, RawValue],
                    context: str) -> Tuple[Dict[str, Any], Dict[str, str]]:
        """Values for every option of the table, new names beating deprecated aliases."""
        values: Dict[str, Any] = {}
        origins: Dict[str, str] = {}
        for opt in table:
            chosen = None
            for alias in opt.aliases:
                if alias in section:
                    self.warn(f"deprecated; use {opt.name}", section[alias][1], alias)
                    chosen = (alias, section[alias])
            if opt.name in section:
                chosen = (opt.name, section[opt.name])
            if chosen is None:
                values[opt.name] = opt.default
                origins[opt.name] = "default"
                continue
            name, (value, origin) = chosen
            values[opt.name] = self.convert(opt, value, origin, name)
            origins[opt.name] = origin
        return values, origins


_KIND_WORDS = {"int": "integer", "optint": "integer", "float": "number", "optfloat": "number",
               "str": "string", "words": "list", "bool": "boolean"}


def _convert(kind: str, value: str) -> Any:
    if kind in ("int", "optint"):
        return None if kind == "optint" and value == "" else int(value)
    if kind in ("float", "optfloat"):
        if kind == "optfloat" and value == "":
            return None
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        return number
    if kind == "bool":
        return booleans.parse(value)
    if kind == "words":
        return tuple(value.split())
    return value
