# SPDX-License-Identifier: BSD-2-Clause
"""Boolean option values: the words accepted, and how the original Vac would have read them.

Every boolean accepts yes/no, true/false, on/off and 1/0 in any case; anything else is an
error. The original read each boolean its own way (only "yes", only "true", anything but
"false"); where it would have read a value the other way, `vac config check` and vacd's log
say so once, so a site moving from the original sees the difference before it matters.
"""
from __future__ import annotations

from typing import Optional

TRUE_WORDS = ("yes", "true", "on", "1")
FALSE_WORDS = ("no", "false", "off", "0")
ACCEPTED = "yes/no, true/false, on/off or 1/0"

# How each legacy reading decided (see vac.config.options).
_LEGACY_RULES = {
    "yes": "only yes meant yes",
    "true": "only true meant yes",
    "notfalse": "anything but false meant yes",
}


def parse(value: str) -> bool:
    """True or False for an accepted word (any case).

    Raises:
        ValueError: the value is not one of the accepted words.
    """
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{value!r} is not a boolean ({ACCEPTED})")


def legacy_reading(rule: str, value: str) -> bool:
    """What the original (or an earlier release) made of this value under its rule."""
    word = value.strip().lower()
    if rule == "notfalse":
        return word != "false"
    return word == rule


def reads_otherwise(name: str, value: str, rule: Optional[str], by: str) -> Optional[str]:
    """A sentence if `by` would have read this accepted value the other way, else None."""
    if rule is None:
        return None
    now = parse(value)
    if legacy_reading(rule, value) == now:
        return None
    return (f"{name} = {value} now means {_word(now)}; {by} read it as {_word(not now)} "
            f"({_LEGACY_RULES[rule]})")


def _word(flag: bool) -> str:
    return "yes" if flag else "no"
