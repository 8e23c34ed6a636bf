# SPDX-License-Identifier: BSD-2-Clause
"""Vacuum Pipes: fetch and cache pipe documents, validate their hostile values, expand them.

A [vacuum_pipe PREFIX] section names a JSON document (the Vacuum Pipe format) whose entries become
machinetypes PREFIX-SUFFIX. This module produces only the values the *document* gives; the
section's inherited options and local [machinetype] overrides are layered on by load.build
(pipe document < [vacuum_pipe] section < local section); vac.config.assemble merges the pipes'
values with the files into the whole configuration.

Differences from the original, on purpose:
- A failed fetch or an invalid document keeps the last good cached copy in use and records an
  error naming the URL (the original hid the pipe for that cycle).
- Fetches never hold up vacd's cycle: vacd reads the cache only (update=False) and hands the
  pipes that are due (PipeResult.states) to vac.config.pipefetch, which fetches them in the
  background, in parallel, with a backoff for a failing URL (see refresh). update=True
  fetches the due pipes now, in parallel; force=True every pipe whatever its cache's age.
- A bad suffix, a bad value or a value of the wrong type drops that entry or option with a
  warning; a pipe can never make the whole configuration fail (vac.config.assemble drops a
  pipe machinetype that load.build still rejects, with an error).
- Values must be scalars, at most MAX_VALUE_CHARS long, without control characters; JSON
  true/false become "true"/"false"; machine_model "fake" is never taken from a pipe.
- The cache (vac.config.pipecache) is written once, atomically, with the URL it came from: a
  cache fetched from another URL (the site changed vacuum_pipe_url) is not used. A cache
  written by the original Vac (no such key) is used as it is, and so is 03.00.02's, named by
  the URL-quoted URL (legacy_cache_path), while ours is missing; it is never removed.
- cache_seconds is capped at MAX_CACHE_SECONDS, and a cache dated in the future (the clock
  went back) is refetched.
"""
from __future__ import annotations

import logging
import math
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from vac import fetch
from vac.config import check as configcheck
from vac.config import model, pipecache, pipefetch
from vac.config import options as O
from vac.config.pipecache import (  # noqa: F401 - CACHE_URL_KEY, legacy_cache_path re-exported
    CACHE_URL_KEY,
    FETCHABLE,
    MAX_CACHE_BYTES,
    MAX_PIPE_BYTES,
    PipeState,
    legacy_cache_path,
)
from vac.config.pipedoc import (  # noqa: F401 - the document's names, re-exported
    DEFAULT_CACHE_SECONDS,
    MAX_CACHE_SECONDS,
    MAX_ENTRIES,
    PipeDocument,
    parse_document,
)
from vac.config.pipedoc import show as _show
from vac.config.pipeshares import PipeTotal, share_of
from vac.errors import PipeError, StateError, VacError
from vac.paths import Paths

log = logging.getLogger(__name__)

MAX_OPTIONS_PER_ENTRY = 200
MAX_VALUE_CHARS = 4096
MAX_SUFFIX_CHARS = 63
MAX_WARNINGS_PER_PIPE = 50
FETCH_TIMEOUT = 30          # the whole transfer; connecting has fetch.CONNECT_TIMEOUT

NO_SLASH_OPTIONS = ("cvmfs_repositories", "heartbeat_file")
USER_DATA_STARTS = ("http://", "https://")
ROOT_IMAGE_STARTS = ("docker://", "/cvmfs/", "http://", "https://")
PIPE_MODELS = tuple(m for m in O.MODELS if m != "fake")
_KINDS = {o.name: o.kind for o in O.MACHINETYPE_OPTIONS}
_BAD_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")  # controls, lone surrogates, line/para separators

RawValue = Tuple[str, str]
Fetcher = Callable[..., bytes]
Progress = Optional[Callable[[str], None]]


@dataclass(frozen=True)
class PipeResult:
    """What the pipes contribute to the configuration.

    values:   machinetype name -> option -> (value, origin "URL (pipe PREFIX)"), for load.build.
    warnings: every dropped entry or option, naming URL, entry and option.
    errors:   every pipe that could not be updated or used, naming URL and why.
    sources:  machinetype name -> "URL (pipe PREFIX)".
    states:   every pipe's cache as it stands (fetched when, due or not), in section order:
              what vacd's background fetcher is given, and `unfetched` for config check.
    """

    values: Dict[str, Dict[str, RawValue]] = field(default_factory=dict)
    warnings: Tuple[str, ...] = ()
    errors: Tuple[str, ...] = ()
    sources: Dict[str, str] = field(default_factory=dict)
    states: Tuple[PipeState, ...] = ()

    @property
    def unfetched(self) -> Tuple[str, ...]:
        """A sentence for each pipe that gives no machinetypes because it has not been
        fetched yet (no usable cached copy)."""
        return tuple(n for n in (s.note() for s in self.states) if n is not None)


def load_pipes(pipe_sections: Sequence[model.PipeSection], paths: Paths, *, update: bool,
               now: float, fetcher: Fetcher = fetch.fetch_bytes, force: bool = False,
               progress: Progress = None) -> PipeResult:
    """Each pipe's document, validated and expanded: the cached copy, unless a fetch is
    wanted (update and the pipe is due, or force whatever its age). The wanted fetches run
    in parallel; progress(text) is told what is being waited for."""
    prefixes = [s.prefix for s in pipe_sections]
    values: Dict[str, Dict[str, RawValue]] = {}
    sources: Dict[str, str] = {}
    warnings: List[str] = []
    errors: List[str] = []
    cached = [_Cached.read(s, paths, now) for s in pipe_sections]
    wanted = [c for c in cached if force or (update and c.state.due)]
    landed = _fetch_all(wanted, now, fetcher, progress)
    states = []
    for section, c in zip(pipe_sections, cached):
        doc, errs = _obtain(section, c, c in wanted, landed.get(section.prefix))
        states.append(c.after(landed.get(section.prefix), now))
        errors.extend(errs)
        if doc is None:
            continue
        found, notes = expand(section, doc, prefixes)
        warnings.extend(_bounded(notes, _where(section)))
        for name, opts in found.items():
            values[name] = opts
            sources[name] = _where(section)
    return PipeResult(values=values, warnings=tuple(warnings), errors=tuple(errors),
                      sources=sources, states=tuple(states))


def refresh(state: PipeState, now: float, fetcher: Fetcher = fetch.fetch_bytes
            ) -> pipefetch.Landed:
    """vacd's background fetch of one due pipe (the job of vac.config.pipefetch.PipeFetcher):
    fetched, checked and cached, or why not. A copy that cannot be cached is a failure too:
    the cycle reads the cache only."""
    fresh, error, changed = _fetch(state, now, fetcher)
    if fresh is not None and not error:
        return pipefetch.Landed(ok=True, error="", changed=changed)
    return pipefetch.Landed(ok=False, error=error, changed=False)


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

@dataclass(frozen=True)
class _Cached:
    """A pipe's cached copy as read at the start: its state, document, and why unusable."""

    state: PipeState
    doc: Optional[PipeDocument]
    problem: Optional[str]

    @classmethod
    def read(cls, section: model.PipeSection, paths: Paths, now: float) -> "_Cached":
        cache = paths.pipe_cache(section.prefix)
        doc, mtime, problem = _read_cache(cache, section.url)
        legacy = legacy_cache_path(paths, section.url)
        if doc is None and problem is None and legacy is not None:
            doc, mtime, problem = _read_cache(legacy, section.url)
        due = doc is None or pipecache.due(doc.cache_seconds, mtime, now)
        fetched = mtime if doc is not None else None
        return cls(PipeState(section.prefix, section.url, cache, fetched, due), doc, problem)

    def after(self, landed: Optional[_Landed], now: float) -> PipeState:
        """The state once this run's fetch (if any) landed and was cached."""
        if landed is not None and landed[0] is not None and not landed[1]:
            return replace(self.state, fetched=now, due=landed[0].cache_seconds == 0)
        return self.state


_Landed = Tuple[Optional[PipeDocument], str, bool]     # (document or None, error, changed)


def _fetch_all(wanted: Sequence[_Cached], now: float, fetcher: Fetcher,
               progress: Progress) -> Dict[str, _Landed]:
    """Fetch the fetchable pipes of wanted, in parallel: prefix -> what landed."""
    tasks = [(c.state.where, (lambda s=c.state: _fetch(s, now, fetcher)))
             for c in wanted if c.state.fetchable]
    results = pipefetch.run_parallel(tasks, progress)
    return {c.state.prefix: r for c, r in zip([c for c in wanted if c.state.fetchable],
                                              results)}


def _obtain(section: model.PipeSection, c: _Cached, wanted: bool, landed: Optional[_Landed]
            ) -> Tuple[Optional[PipeDocument], List[str]]:
    """The document to use for this pipe and the errors met getting it."""
    where = _where(section)
    doc = c.doc
    errors: List[str] = []
    if not c.state.fetchable:
        errors.append(f"{where}: cannot fetch: vacuum_pipe_url must start with https://, "
                      f"http:// or file://{_fallback(doc)}")
    elif wanted and landed is not None:
        fresh, error, _ = landed
        if fresh is not None:
            return fresh, [error] if error else []
        errors.append(f"{where}: cannot update: {error}{_fallback(doc)}")
    if doc is None and c.problem:
        errors.append(f"{where}: {c.problem}")
    return doc, errors


def _fetch(state: PipeState, now: float, fetcher: Fetcher) -> _Landed:
    """(new document or None, error text, cache changed); a cache write failure still
    returns the document (with the error)."""
    try:
        data = fetcher(state.url, timeout=FETCH_TIMEOUT, max_bytes=MAX_PIPE_BYTES)
        fresh = parse_document(data, state.url)
    except VacError as e:
        return None, _reason(e, state.url), False
    try:
        changed = _write_cache(state.cache, fresh, state.url, now)
    except (OSError, VacError) as e:
        return (fresh, f"{state.where}: fetched, but cannot write {state.cache}: "
                       f"{_reason(e, state.cache)}", False)
    log.info("pipe %s: fetched %s (%d machinetypes)", state.prefix, state.url,
             len(fresh.entries))
    return fresh, "", changed


def _read_cache(path: str, url: str) -> Tuple[Optional[PipeDocument], Optional[float],
                                              Optional[str]]:
    """(document, mtime, problem) of the cached copy; a copy of another URL is not used."""
    try:
        data, mtime = pipecache.read(path)
        if data is None:
            return None, None, None
        doc = parse_document(data, url, MAX_CACHE_BYTES)
    except (OSError, StateError, PipeError) as e:
        return None, None, f"cached copy {path} is unusable: {_reason(e, url)}"
    cached_url = doc.body.get(CACHE_URL_KEY)
    if cached_url is not None and cached_url != url:
        return None, None, f"cached copy {path} is of another URL; waiting for a fetch"
    return doc, mtime, None


def _write_cache(path: str, doc: PipeDocument, url: str, now: float) -> bool:
    data = pipecache.encode(doc.body, url)
    if len(data) > MAX_CACHE_BYTES:
        raise PipeError(url, f"document is larger than {MAX_CACHE_BYTES} bytes once cached")
    return pipecache.write(path, data, now)


def _fallback(doc: Optional[PipeDocument]) -> str:
    if doc is not None:
        return "; still using the last good cached copy"
    return "; no usable cached copy, so this pipe gives no machinetypes"


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


# ---- small helpers -------------------------------------------------------------------------

def _where(section: model.PipeSection) -> str:
    return f"{section.url} (pipe {section.prefix})"


def _bounded(notes: List[str], where: str) -> List[str]:
    if len(notes) <= MAX_WARNINGS_PER_PIPE:
        return notes
    extra = len(notes) - MAX_WARNINGS_PER_PIPE
    return notes[:MAX_WARNINGS_PER_PIPE] + [f"{where}: {extra} more warnings not shown"]


def _reason(e: Exception, url: str) -> str:
    text = str(e)
    return text[len(url) + 2:] if text.startswith(url + ": ") else text
