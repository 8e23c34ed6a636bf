# SPDX-License-Identifier: BSD-2-Clause
"""Vacuum Pipes: fetch and cache pipe documents, validate their hostile values, expand them.

A [vacuum_pipe PREFIX] section names a JSON document (standards.md §2.7) whose entries become
machinetypes PREFIX-SUFFIX. This module produces only the values the *document* gives; the
section's inherited options and local [machinetype] overrides are layered on by load.build
(pipe document < [vacuum_pipe] section < local section).

Differences from the original, on purpose:
- A failed fetch or an invalid document keeps the last good cached copy in use and records an
  error naming the URL (the original hid the pipe for that cycle, §17.14).
- A bad suffix, a bad value or a value of the wrong type drops that entry or option with a
  warning; a pipe can never make the whole configuration fail (load_config drops a pipe
  machinetype that load.build still rejects, with an error).
- Values must be scalars, at most MAX_VALUE_CHARS long, without control characters; JSON
  true/false become "true"/"false"; machine_model "fake" is never taken from a pipe.
- The cache is written once, atomically, with the URL it came from (key CACHE_URL_KEY): a
  cache fetched from another URL (the site changed vacuum_pipe_url) is not used. A cache
  written by the original Vac (no such key) is used as it is, and so is 03.00.02's, named by
  the URL-quoted URL (legacy_cache_path), while ours is missing; it is never removed.
- cache_seconds is capped at MAX_CACHE_SECONDS, and a cache dated in the future (the clock
  went back) is refetched.
"""
from __future__ import annotations

import json
import logging
import math
import os
import unicodedata
import urllib.parse
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from vac import fetch
from vac.config import check as configcheck
from vac.config import load, model
from vac.config import options as O
from vac.config.pipeshares import MAX_NUMBER_CHARS, PipeTotal, share_of
from vac.errors import ConfigError, PipeError, StateError, VacError
from vac.fsutil import atomic_write, mtime_or_none, read_bytes_nofollow
from vac.host.facts import HostFacts
from vac.paths import Paths

log = logging.getLogger(__name__)

MAX_PIPE_BYTES = 1024 * 1024
MAX_CACHE_BYTES = 4 * MAX_PIPE_BYTES      # re-serialised with ASCII escapes: at most ~3x
MAX_ENTRIES = 100
MAX_OPTIONS_PER_ENTRY = 200
MAX_VALUE_CHARS = 4096
MAX_SUFFIX_CHARS = 63
MAX_WARNINGS_PER_PIPE = 50
DEFAULT_CACHE_SECONDS = 3600
MAX_CACHE_SECONDS = 7 * 86400
CLOCK_SLACK_SECONDS = 300
FETCH_TIMEOUT = 30
CACHE_URL_KEY = "vac_pipe_url"
FETCHABLE = ("https://", "http://", "file://")

NO_SLASH_OPTIONS = ("cvmfs_repositories", "heartbeat_file")
USER_DATA_STARTS = ("http://", "https://")
ROOT_IMAGE_STARTS = ("docker://", "/cvmfs/", "http://", "https://")
PIPE_MODELS = tuple(m for m in O.MODELS if m != "fake")
_KINDS = {o.name: o.kind for o in O.MACHINETYPE_OPTIONS}
_BAD_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")  # controls, lone surrogates, line/para separators

RawValue = Tuple[str, str]
Fetcher = Callable[..., bytes]


@dataclass(frozen=True)
class PipeDocument:
    """A parsed, structurally valid pipe document."""

    cache_seconds: float
    entries: Tuple[Mapping[str, Any], ...]
    body: Mapping[str, Any]
    warnings: Tuple[str, ...] = ()


@dataclass(frozen=True)
class PipeResult:
    """What the pipes contribute to the configuration.

    values:   machinetype name -> option -> (value, origin "URL (pipe PREFIX)"), for load.build.
    warnings: every dropped entry or option, naming URL, entry and option.
    errors:   every pipe that could not be updated or used, naming URL and why.
    sources:  machinetype name -> "URL (pipe PREFIX)".
    """

    values: Dict[str, Dict[str, RawValue]] = field(default_factory=dict)
    warnings: Tuple[str, ...] = ()
    errors: Tuple[str, ...] = ()
    sources: Dict[str, str] = field(default_factory=dict)


def load_config(files: Sequence[str], host: HostFacts, *, update: bool, now: float,
                fetcher: Fetcher = fetch.fetch_bytes) -> model.Config:
    """Read the config files, the pipes (fetching them only if update), and build the Config.

    The factory calls this with update=True every cycle; the responder and the CLI with
    update=False (cache only). Pipe warnings and pipe errors are in Config.warnings (errors
    start "URL (pipe PREFIX): "); load_config_with_pipes also returns them apart.

    Raises:
        ConfigError: the local configuration is unusable (never because of a pipe).
    """
    return load_config_with_pipes(files, host, update=update, now=now, fetcher=fetcher)[0]


def load_config_with_pipes(files: Sequence[str], host: HostFacts, *, update: bool, now: float,
                           fetcher: Fetcher = fetch.fetch_bytes
                           ) -> Tuple[model.Config, PipeResult]:
    """load_config, also returning what the pipes gave (errors, warnings, sources) apart.

    Raises:
        ConfigError: the local configuration is unusable (never because of a pipe).
    """
    raw = load.read_raw(files)
    sections = load.pipe_sections(raw)
    result = PipeResult()
    if sections:
        result = load_pipes(sections, _paths_of(raw), update=update, now=now, fetcher=fetcher)
    return _build(raw, host, result)


def load_pipes(pipe_sections: Sequence[model.PipeSection], paths: Paths, *, update: bool,
               now: float, fetcher: Fetcher = fetch.fetch_bytes) -> PipeResult:
    """Each pipe's document (fetched if update and due, else cached), validated and expanded."""
    prefixes = [s.prefix for s in pipe_sections]
    values: Dict[str, Dict[str, RawValue]] = {}
    sources: Dict[str, str] = {}
    warnings: List[str] = []
    errors: List[str] = []
    for section in pipe_sections:
        doc, errs = _obtain(section, paths, update=update, now=now, fetcher=fetcher)
        errors.extend(errs)
        if doc is None:
            continue
        found, notes = expand(section, doc, prefixes)
        warnings.extend(_bounded(notes, _where(section)))
        for name, opts in found.items():
            values[name] = opts
            sources[name] = _where(section)
    return PipeResult(values=values, warnings=tuple(warnings), errors=tuple(errors),
                      sources=sources)


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


def expand(section: model.PipeSection, doc: PipeDocument,
           prefixes: Sequence[str]) -> Tuple[Dict[str, Dict[str, RawValue]], List[str]]:
    """The document's entries as machinetype values, and a warning for everything dropped."""
    where = _where(section)
    warnings = list(doc.warnings)
    shares = [share_of(entry.get("target_share")) for entry in doc.entries]
    t_pipe = PipeTotal([s for s in shares if s is not None])
    values: Dict[str, Dict[str, RawValue]] = {}
    for index, entry in enumerate(doc.entries):
        label = f"{where} machinetypes[{index}]"
        name, problem = _entry_name(section.prefix, entry, prefixes)
        if name is None:
            warnings.append(f"{label}: entry skipped: {problem}")
            continue
        label = f"{label} (suffix {name[len(section.prefix) + 1:]})"
        if name in values:
            warnings.append(f"{label}: entry skipped: a previous entry has the same suffix")
        elif len(entry) > MAX_OPTIONS_PER_ENTRY:
            warnings.append(f"{label}: entry skipped: more than {MAX_OPTIONS_PER_ENTRY} options")
        else:
            values[name] = _entry_values(section, entry, t_pipe, label, warnings)
    return values, warnings


# ---- fetching and the cache ----------------------------------------------------------------

def _obtain(section: model.PipeSection, paths: Paths, *, update: bool, now: float,
            fetcher: Fetcher) -> Tuple[Optional[PipeDocument], List[str]]:
    """The document to use for this pipe and the errors met getting it."""
    where = _where(section)
    cache = paths.pipe_cache(section.prefix)
    doc, mtime, problem = _read_cache(cache, section.url)
    legacy = legacy_cache_path(paths, section.url)
    if doc is None and problem is None and legacy is not None:
        doc, mtime, problem = _read_cache(legacy, section.url)
    errors: List[str] = []
    if update and (doc is None or _due(doc, mtime, now)):
        if section.url.startswith(FETCHABLE):
            fresh, error = _fetch(section, cache, now, fetcher)
            if fresh is not None:
                return fresh, [error] if error else []
            errors.append(f"{where}: cannot update: {error}{_fallback(doc)}")
        else:
            errors.append(f"{where}: cannot fetch: vacuum_pipe_url must start with https://, "
                          f"http:// or file://{_fallback(doc)}")
    if doc is None and problem:
        errors.append(f"{where}: {problem}")
    return doc, errors


def _fetch(section: model.PipeSection, cache: str, now: float,
           fetcher: Fetcher) -> Tuple[Optional[PipeDocument], str]:
    """(new document or None, error text); a cache write failure still returns the document."""
    try:
        data = fetcher(section.url, timeout=FETCH_TIMEOUT, max_bytes=MAX_PIPE_BYTES)
        fresh = parse_document(data, section.url)
    except VacError as e:
        return None, _reason(e, section.url)
    try:
        _write_cache(cache, fresh, section.url, now)
    except (OSError, VacError) as e:
        return fresh, f"{_where(section)}: fetched, but cannot write {cache}: {_reason(e, cache)}"
    log.info("pipe %s: fetched %s (%d machinetypes)", section.prefix, section.url,
             len(fresh.entries))
    return fresh, ""


def legacy_cache_path(paths: Paths, url: str) -> Optional[str]:
    """Where Vac 03.00.02 cached this pipe: pipescache/<URL quoted, no safe characters>."""
    name = urllib.parse.quote(url, safe="")
    return os.path.join(paths.pipescache, name) if 0 < len(name) <= 255 else None


def _read_cache(path: str, url: str) -> Tuple[Optional[PipeDocument], Optional[float],
                                              Optional[str]]:
    """(document, mtime, problem) of the cached copy; a copy of another URL is not used."""
    try:
        data = read_bytes_nofollow(path, MAX_CACHE_BYTES)
        doc = parse_document(data, url, MAX_CACHE_BYTES)
    except FileNotFoundError:
        return None, None, None
    except (OSError, StateError, PipeError) as e:
        return None, None, f"cached copy {path} is unusable: {_reason(e, url)}"
    cached_url = doc.body.get(CACHE_URL_KEY)
    if cached_url is not None and cached_url != url:
        return None, None, f"cached copy {path} is of another URL; waiting for a fetch"
    return doc, mtime_or_none(path), None


def _write_cache(path: str, doc: PipeDocument, url: str, now: float) -> None:
    body = dict(doc.body)
    body[CACHE_URL_KEY] = url
    data = json.dumps(body, separators=(",", ":")).encode("ascii")
    if len(data) > MAX_CACHE_BYTES:
        raise PipeError(url, f"document is larger than {MAX_CACHE_BYTES} bytes once cached")
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    atomic_write(path, data, mtime=now)


def _due(doc: PipeDocument, mtime: Optional[float], now: float) -> bool:
    if mtime is None or doc.cache_seconds == 0 or mtime > now + CLOCK_SLACK_SECONDS:
        return True
    return mtime <= now - doc.cache_seconds


def _fallback(doc: Optional[PipeDocument]) -> str:
    if doc is not None:
        return "; still using the last good cached copy"
    return "; no usable cached copy, so this pipe gives no machinetypes"


def _cache_seconds(value: Any, url: str) -> Tuple[float, Tuple[str, ...]]:
    if value is None:
        return DEFAULT_CACHE_SECONDS, ()
    number = share_of(value)
    if number is None:
        return DEFAULT_CACHE_SECONDS, (f"{url}: cache_seconds {_show(value)} is not a "
                                       f"non-negative number; using {DEFAULT_CACHE_SECONDS}",)
    return min(number, MAX_CACHE_SECONDS), ()


# ---- entries and values --------------------------------------------------------------------

def _entry_name(prefix: str, entry: Mapping[str, Any],
                prefixes: Sequence[str]) -> Tuple[Optional[str], str]:
    if "suffix" not in entry:
        return None, "no suffix"
    try:
        suffix = _scalar(entry["suffix"])
    except ValueError as e:
        return None, f"suffix {e}"
    if not configcheck.NAME_RE.match(suffix) or len(suffix) > MAX_SUFFIX_CHARS:
        return None, (f"suffix {_show(suffix)} must be 1 to {MAX_SUFFIX_CHARS} characters "
                      "a-z, 0-9 and -")
    name = f"{prefix}-{suffix}"
    owner = max((p for p in prefixes if name.startswith(p + "-")), key=len)
    if owner != prefix:
        return None, f"the name {name} belongs to [vacuum_pipe {owner}]"
    return name, ""


def _entry_values(section: model.PipeSection, entry: Mapping[str, Any], t_pipe: PipeTotal,
                  label: str, warnings: List[str]) -> Dict[str, RawValue]:
    origin = _where(section)
    found: Dict[str, RawValue] = {}
    for key, raw in entry.items():
        if key == "suffix":
            continue
        if key == "target_share":
            found[key] = (_rescaled(section.target_share, raw, t_pipe, label, warnings), origin)
            continue
        try:
            _check_key(key)
            value = _scalar(raw)
            _check_text(value)
            _check_paths(key, value)
            _check_kind(key, value)
        except ValueError as e:
            warnings.append(f"{label}: option {_show(key)} dropped: {e}")
            continue
        found[key] = (value, origin)
    return found


def _rescaled(t_section: float, raw: Any, t_pipe: PipeTotal, label: str,
              warnings: List[str]) -> str:
    """T_section x value / T_pipe, or 0.0 (with a warning if the value itself is bad)."""
    share = share_of(raw)
    if share is None:
        warnings.append(f"{label}: target_share {_show(raw)} is not a non-negative number; "
                        "using 0.0")
        return "0.0"
    return repr(t_section * t_pipe.fraction(share))


def _check_key(key: str) -> None:
    if not O.pipe_accepted(key):
        raise ValueError("not accepted from a pipe")
    for family in (O.USER_DATA_OPTION, O.USER_DATA_FILE):
        if key.startswith(family) and not configcheck.KEY_RE.match(key[len(family):]):
            raise ValueError(f"the name after {family} must use only a-z, 0-9 and _")


def _scalar(raw: Any) -> str:
    """A JSON scalar as the string load.build parses (true -> "true", 600 -> "600")."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (int, float)):
        return repr(raw)
    if isinstance(raw, str):
        return raw
    if raw is None:
        raise ValueError("is null")
    raise ValueError("must be a string, number or boolean, not a list or object")


def _check_text(value: str) -> None:
    if len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"value is longer than {MAX_VALUE_CHARS} characters")
    if any(unicodedata.category(c) in _BAD_CATEGORIES for c in value):
        raise ValueError("value contains control characters or line breaks")


def _check_paths(key: str, value: str) -> None:
    """The original's path-safety rules, plus: never . or .. as a bare name."""
    if key in NO_SLASH_OPTIONS or key.startswith(O.USER_DATA_FILE):
        if "/" in value:
            raise ValueError(f"{_show(value)} must not contain /")
        if any(word in (".", "..") for word in value.split()):
            raise ValueError(f"{_show(value)} must not be . or ..")
    elif key in ("user_data", "root_image"):
        if "/../" in value or value.endswith("/..") or value.startswith("../") \
                or value in (".", ".."):
            raise ValueError(f"{_show(value)} must not contain /../")
        starts = USER_DATA_STARTS if key == "user_data" else ROOT_IMAGE_STARTS
        if "/" in value and not value.startswith(starts):
            raise ValueError(f"{_show(value)} contains / so must start with "
                             f"{' or '.join(starts)}")
    elif key == "tmp_binds":
        for word in value.split():
            if not word.startswith("/") or ".." in word.split("/"):
                raise ValueError(f"{_show(word)} must be an absolute path without ..")


def _check_kind(key: str, value: str) -> None:
    """Values load.build would reject (so failing the whole config) are dropped here."""
    kind = _KINDS.get(key)
    if key == "machine_model" and value not in PIPE_MODELS:
        raise ValueError(f"unknown machine_model {_show(value)}")
    if kind not in ("int", "optint", "float", "optfloat") or (kind.startswith("opt")
                                                             and value == ""):
        return
    try:
        number = int(value) if kind in ("int", "optint") else float(value)
    except ValueError:
        raise ValueError(f"{_show(value)} is not a valid "
                         f"{'integer' if 'int' in kind else 'number'}") from None
    lowest = 1 if key in ("min_processors", "max_processors") else 0
    if not math.isfinite(number) or number < lowest:
        raise ValueError(f"{_show(value)} must be at least {lowest}")


# ---- building the Config -------------------------------------------------------------------

def _build(raw: model.RawConfig, host: HostFacts,
           result: PipeResult) -> Tuple[model.Config, PipeResult]:
    """load.build with the pipe values; a pipe machinetype it rejects is dropped, not fatal."""
    try:
        return load.build(raw, host, result.values, result.warnings + result.errors), result
    except ConfigError:
        if not result.values:
            raise
    kept: Dict[str, Dict[str, RawValue]] = {}
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
    value, _ = raw.section("settings").get("state_dir", ("", ""))
    return Paths(value or O.by_name(O.SETTINGS_OPTIONS)["state_dir"].default)


# ---- small helpers -------------------------------------------------------------------------

def _where(section: model.PipeSection) -> str:
    return f"{section.url} (pipe {section.prefix})"


def _bounded(notes: List[str], where: str) -> List[str]:
    if len(notes) <= MAX_WARNINGS_PER_PIPE:
        return notes
    extra = len(notes) - MAX_WARNINGS_PER_PIPE
    return notes[:MAX_WARNINGS_PER_PIPE] + [f"{where}: {extra} more warnings not shown"]


def _show(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."


def _reason(e: Exception, url: str) -> str:
    text = str(e)
    return text[len(url) + 2:] if text.startswith(url + ": ") else text


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
