# SPDX-License-Identifier: BSD-2-Clause
"""Names and shapes in vac.conf: unknown sections and options (with "did you mean"), the
original's ignored options (warnings), and values that swallowed a comment or the next line.

configparser keeps a " # ..." after a value as part of the value, and joins an indented line
to the value before it; for an option that takes one value either is a mistake that would
otherwise pass unseen (a vac_space VacQuery never matches, a user_data of two lines).
"""
from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Iterable, Mapping, Optional, Sequence, Tuple

from vac.config import options as O

if TYPE_CHECKING:
    from vac.config.builder import Builder
    from vac.config.model import RawConfig, RawValue

INLINE_COMMENT = re.compile(r"\s[#;]")
FAMILIES = (O.USER_DATA_OPTION, O.USER_DATA_FILE, O.MACHINEFEATURES_OPTION)
_SINGLE_FAMILIES = (O.USER_DATA_FILE,)


def suggestion(word: str, candidates: Iterable[str]) -> str:
    """ " (did you mean X?)" for the closest candidate, or "" if none is close."""
    found = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.75)
    return f" (did you mean {found[0]}?)" if found else ""


def check_section_titles(raw: RawConfig, b: Builder) -> None:
    """Every section is of a known kind; [settings] has no name."""
    for kind, name in raw.sections:
        origin = raw.origin(kind, name)
        if kind not in O.SECTION_KINDS:
            found = difflib.get_close_matches(kind, O.SECTION_KINDS, n=1, cutoff=0.75)
            near = f" (did you mean [{_title(found[0], name)}]?)" if found else ""
            b.problem(f"unknown section [{_title(kind, name)}]{near}; it is not read", origin)
        elif kind == "settings" and name:
            b.problem(f"[settings] takes no name: [settings {name}] is not read", origin)


def _title(kind: str, name: str) -> str:
    return f"{kind} {name}" if name else kind


def check_options(section: Mapping[str, RawValue], kind: str, b: Builder) -> None:
    """Unknown options of a section are errors (with the nearest known name); the original's
    options that do nothing are warnings; values from files are checked for their shape."""
    known, families, obsolete, elsewhere = _names(kind)
    for option, (value, origin) in section.items():
        opt = known.get(option)
        if opt is None and not option.startswith(families):
            _unknown(option, origin, kind, known, obsolete, elsewhere, b)
            continue
        if b.lines.get((origin, option)) is not None:   # pipe values are checked by pipes
            _check_shape(option, value, origin, opt, b)


def _names(kind: str) -> Tuple[dict, Tuple[str, ...], Sequence[str], Mapping[str, str]]:
    if kind == "settings":
        return (O.by_name(O.SETTINGS_OPTIONS), FAMILIES, O.SETTINGS_OBSOLETE,
                _only_in(O.MACHINETYPE_OPTIONS, O.SETTINGS_OPTIONS, "[machinetype]"))
    known = O.by_name(O.MACHINETYPE_OPTIONS)
    if kind == "vacuum_pipe":
        known.update({name: O.Option(name, "str") for name in O.PIPE_SECTION_OPTIONS})
    return (known, FAMILIES[:2], O.MACHINETYPE_OBSOLETE,
            _only_in(O.SETTINGS_OPTIONS, O.MACHINETYPE_OPTIONS, "[settings]"))


def _only_in(table: Sequence[O.Option], other: Sequence[O.Option], where: str) -> dict:
    theirs = O.by_name(other)
    return {name: where for name in O.by_name(table) if name not in theirs}


def _unknown(option: str, origin: str, kind: str, known: Mapping[str, O.Option],
             obsolete: Sequence[str], elsewhere: Mapping[str, str], b: Builder) -> None:
    if option in obsolete:
        b.warn("an option of the original Vac that is accepted but ignored here", origin,
               option)
    elif option in elsewhere:
        b.problem(f"{option} is a {elsewhere[option]} option, not a [{_kind_word(kind)}] "
                  "one; move it there", origin, option)
    else:
        b.problem(f"unknown option {option}{suggestion(option, known)}", origin, option)


def _kind_word(kind: str) -> str:
    return {"vmtype": "machinetype"}.get(kind, kind)


def _check_shape(option: str, value: str, origin: str, opt: Optional[O.Option],
                 b: Builder) -> None:
    single = opt.kind != "words" if opt is not None else option.startswith(_SINGLE_FAMILIES)
    if single and "\n" in value:
        first, _, rest = value.partition("\n")
        joined = next(line for line in rest.splitlines() if line.strip()).strip()
        b.problem(f"the indented line after it ({joined!r}) was joined "
                  f"to its value {first!r}: a line that starts with spaces continues the "
                  "option above; start each option at the left margin", origin, option)
    elif (opt is None or opt.name not in O.FREE_TEXT) and INLINE_COMMENT.search(value):
        b.problem(f"{value!r} has a comment after the value, which would become part of "
                  "it: comments go on their own line", origin, option)
