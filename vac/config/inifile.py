# SPDX-License-Identifier: BSD-2-Clause
"""One INI file read with configparser, remembering the line of each section and option.

configparser keeps no line numbers. It stores what it reads in dictionaries of the class it
is given (dict_type): a section when its header line is read, an option (as a list of lines)
when its first line is read. A dictionary class that notes the line being read at those two
moments gives every section and option its line, with configparser doing all the parsing.
"""
from __future__ import annotations

import configparser
from typing import Dict, Iterator, Optional, TextIO, Tuple

# (section title, option) -> line; option "" is the section's header line.
Lines = Dict[Tuple[str, str], int]


class _Reading:
    """The line configparser is reading and the lines noted so far."""

    def __init__(self) -> None:
        self.number = 0
        self.lines: Lines = {}

    def numbered(self, f: TextIO) -> Iterator[str]:
        for self.number, text in enumerate(f, start=1):
            yield text


def _noting_dict(reading: _Reading) -> type:
    class Noting(dict):
        """A section's options (title set when its header is read) or the sections."""

        title: Optional[str] = None

        def __setitem__(self, key, value):
            if isinstance(value, Noting):                   # a new section
                value.title = key
                reading.lines.setdefault((key, ""), reading.number)
            elif self.title is not None and isinstance(value, list):   # an option's first line
                reading.lines[(self.title, key)] = reading.number
            super().__setitem__(key, value)

    return Noting


def read(path: str) -> Tuple[configparser.RawConfigParser, Lines]:
    """The parsed file and the line of each section and option (the last one given wins).

    Raises:
        OSError, UnicodeDecodeError, configparser.Error: as configparser.read_file.
    """
    reading = _Reading()
    parser = configparser.RawConfigParser(strict=False, interpolation=None,
                                          dict_type=_noting_dict(reading))
    with open(path) as f:
        parser.read_file(reading.numbered(f), source=path)
    return parser, reading.lines
