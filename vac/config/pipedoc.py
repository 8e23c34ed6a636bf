# SPDX-License-Identifier: BSD-2-Clause
"""A pipe document's structure: parsed as bounded JSON, hostile to the last byte.

A pipe (a Vacuum Pipe) is a JSON object with a list `machinetypes` of at most MAX_ENTRIES
objects and an optional `cache_seconds`; numbers must be finite and short, NaN and Infinity are
refused. What each entry's values may be is vac.config.pipes' job (expand).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Tuple

from vac.config.pipecache import MAX_PIPE_BYTES
from vac.config.pipeshares import MAX_NUMBER_CHARS, share_of
from vac.errors import PipeError

MAX_ENTRIES = 100
DEFAULT_CACHE_SECONDS = 3600
MAX_CACHE_SECONDS = 7 * 86400


@dataclass(frozen=True)
class PipeDocument:
    """A parsed, structurally valid pipe document."""

    cache_seconds: float
    entries: Tuple[Mapping[str, Any], ...]
    body: Mapping[str, Any]
    warnings: Tuple[str, ...] = ()


def parse_document(data: bytes, url: str, limit: int = MAX_PIPE_BYTES) -> PipeDocument:
    """Check the structure of a pipe document.

    Raises:
        PipeError: too large, not JSON, not an object, machinetypes not a list of at most
            MAX_ENTRIES objects.
    """
    if len(data) > limit:
        raise PipeError(url, f"document is larger than {limit} bytes")
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_no_constant,
                          parse_float=_finite_float, parse_int=_bounded_int)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PipeError(url, f"not valid JSON: {_one_line(e)}") from e
    if not isinstance(body, dict):
        raise PipeError(url, "not a JSON object")
    entries = body.get("machinetypes", [])
    if not isinstance(entries, list):
        raise PipeError(url, "machinetypes is not a list")
    if len(entries) > MAX_ENTRIES:
        raise PipeError(url, f"more than {MAX_ENTRIES} machinetypes")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise PipeError(url, f"machinetypes[{index}] is not an object")
    seconds, warnings = _cache_seconds(body.get("cache_seconds"), url)
    return PipeDocument(cache_seconds=seconds, entries=tuple(entries), body=body,
                        warnings=warnings)


def _cache_seconds(value: Any, url: str) -> Tuple[float, Tuple[str, ...]]:
    if value is None:
        return DEFAULT_CACHE_SECONDS, ()
    number = share_of(value)
    if number is None:
        return DEFAULT_CACHE_SECONDS, (f"{url}: cache_seconds {show(value)} is not a "
                                       f"non-negative number; using {DEFAULT_CACHE_SECONDS}",)
    return min(number, MAX_CACHE_SECONDS), ()


def show(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."



def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:200]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS or not math.isfinite(float(text)):
        raise ValueError(f"number {text[:MAX_NUMBER_CHARS]} is too long or not finite")
    return float(text)


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"number {text[:MAX_NUMBER_CHARS]}... is too long")
    return int(text)
