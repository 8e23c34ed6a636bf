# SPDX-License-Identifier: BSD-2-Clause
"""Fuzz: generated and mutated Vacuum Pipe documents through parse_document, expand
and load_config with a file:// URL: never a traceback, every warning and error names the pipe
URL (and the entry, for an entry's), the last good pipe stays in use when a new fetch is bad,
and every share is finite.

The seeds are the real pipes of tests/data/realpipes/pipes/. Mutations work on the decoded
document (hostile values for real and unknown keys, hostile suffixes, entries dropped,
duplicated or multiplied past the limits, cache_seconds) and on its bytes (spliced, cut,
non-finite number literals, non-UTF-8).
"""
from __future__ import annotations

import contextlib
import glob
import io
import json
import math
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from vac import cli
from vac.config import options as O
from vac.config import assemble, pipes
from vac.config.model import PipeSection
from vac.errors import PipeError
from vac.host.facts import HostFacts
from vac.paths import Paths

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIPE_FILES = sorted(glob.glob(os.path.join(REPO, "tests", "data", "realpipes", "pipes",
                                           "*.pipe")))
NOW = 1_700_000_000.0
LATER = NOW + pipes.MAX_CACHE_SECONDS + 10        # every cached copy is due again
FUZZ = dict(deadline=None, database=None, derandomize=True,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seed(path: str) -> dict:
    with open(path, "rb") as f:
        return json.loads(f.read())


SEEDS = [_seed(p) for p in PIPE_FILES]
KEYS = sorted(O.PIPE_OPTIONS | {"vm_model", "machines_dir_days", "docker_network_mode",
                                "kernel", "user_data_option_x", "user_data_file_y",
                                "user_data_option_A", "user_data_file_../z", "", "\x00"})
HOSTILE_STRINGS = [
    "", "nan", "inf", "-inf", "1e309", "-1", "0", "9" * 60, "\x00", "a\x00b", "\x1b[2J",
    "\u2028", "\ud800", "x" * 5000, "../../etc/shadow", "/etc/shadow", "..", ".", "a/b",
    "/cvmfs/../etc", "docker://x", "https://h/../x", "$(touch /tmp/vac-fuzz-pipe-x)",
    "{{ 7 * 7 }}", "##user_data_uuid##", "fake", "docker", "apptainer", "cernvm3", "true",
    "prod", "PROD", "a" * 64, "a" * 63, "-", "a_b", "p-prod", "\u00e9",
]
_json_scalars = st.one_of(
    st.sampled_from(HOSTILE_STRINGS), st.text(max_size=30), st.booleans(), st.none(),
    st.integers(min_value=-(10 ** 50), max_value=10 ** 50),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, 1.7976931348623157e308, 5e-324, -0.0, 0.0, 1e-300]))
_json_values = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)

_doc_ops = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 50), st.sampled_from(KEYS), _json_values),
    st.tuples(st.just("share"), st.integers(0, 50), st.just("target_share"),
              st.one_of(_json_scalars, st.sampled_from([1e308, 1.7976931348623157e308, 1e300,
                                                        "1e308", "-0", "0x1p1023"]))),
    st.tuples(st.just("suffix"), st.integers(0, 50), st.just("suffix"), _json_scalars),
    st.tuples(st.just("del"), st.integers(0, 50), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("drop"), st.integers(0, 50), st.just(""), st.none()),
    st.tuples(st.just("dup"), st.integers(0, 50), st.just(""), st.none()),
    st.tuples(st.just("many"), st.integers(90, 130), st.just(""), st.none()),
    st.tuples(st.just("top"), st.integers(0, 0), st.sampled_from(
        ["cache_seconds", "machinetypes", "vac_pipe_url", "x"]), _json_values),
    st.tuples(st.just("entry"), st.integers(0, 50), st.just(""), _json_values),
)
_byte_ops = st.one_of(
    st.tuples(st.just("splice"), st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=6)),
    st.tuples(st.just("cut"), st.integers(0, 10 ** 6), st.just(b"")),
    st.tuples(st.just("splice"), st.integers(0, 10 ** 6),
              st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"9" * 80,
                               b"\xff\xfe", b"\x00", b"[" * 2000, b'"\\ud800"', b"\\u0000"])),
)


def _mutate_doc(doc: dict, ops) -> dict:
    doc = json.loads(json.dumps(doc))
    entries = doc.setdefault("machinetypes", [])
    for op, where, key, value in ops:
        if not isinstance(entries, list):
            break
        entry = entries[where % len(entries)] if entries else None
        if op in ("set", "share", "suffix") and isinstance(entry, dict):
            entry[key] = value
        elif op == "del" and isinstance(entry, dict):
            entry.pop(key, None)
        elif op == "drop" and entries:
            entries.remove(entry)
        elif op == "dup" and entries:
            entries.append(json.loads(json.dumps(entry)))
        elif op == "many" and entries:
            entries.extend(dict(entry, suffix=f"m{i}") if isinstance(entry, dict) else entry
                           for i in range(where))
        elif op == "top":
            doc[key] = value
            entries = doc.get("machinetypes")
        elif op == "entry":
            entries.append(value)
    return doc


def _mutate_bytes(data: bytes, ops) -> bytes:
    for op, where, what in ops:
        at = where % (len(data) + 1)
        data = data[:at] + what + data[at:] if op == "splice" else data[:at] + data[at + 7:]
    return data


@st.composite
def pipe_documents(draw) -> bytes:
    doc = _mutate_doc(draw(st.sampled_from(SEEDS)), draw(st.lists(_doc_ops, max_size=6)))
    data = json.dumps(doc, indent=draw(st.sampled_from([None, 1]))).encode()
    return _mutate_bytes(data, draw(st.lists(_byte_ops, max_size=2)))


def _finite_share(text: str) -> bool:
    number = float(text)
    return math.isfinite(number) and number >= 0


def _section(url: str, prefix: str = "p", share: float = 5.0) -> PipeSection:
    return PipeSection(prefix=prefix, url=url, target_share=share, options={},
                       origin="vac.conf [vacuum_pipe p]")


@settings(max_examples=1000, **FUZZ)
@given(data=pipe_documents())
def test_parse_and_expand_never_raise_and_name_the_url_and_entry(data):
    url = "https://pipes.example.org/x.pipe"
    try:
        doc = pipes.parse_document(data, url)
    except PipeError as e:
        assert str(e).startswith(url + ": ")
        return
    values, warnings = pipes.expand(_section(url), doc, ["p", "p-x"])
    for warning in warnings:
        assert "machinetypes[" in warning or warning.startswith(f"{url}: cache_seconds"), \
            warning
    for name, options in values.items():
        assert name.startswith("p-") and len(name) <= 2 + pipes.MAX_SUFFIX_CHARS
        assert "suffix" not in options
        for key, (value, origin) in options.items():
            assert O.pipe_accepted(key) and key != "suffix"
            assert origin == f"{url} (pipe p)"
            assert len(value) <= pipes.MAX_VALUE_CHARS and "\x00" not in value
        if "target_share" in options:
            assert _finite_share(options["target_share"][0])
        assert options.get("machine_model", ("cernvm3", ""))[0] != "fake"
    assert 0 <= doc.cache_seconds <= pipes.MAX_CACHE_SECONDS


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="vac-fuzz-pipes-") as d:
        yield d


HOST = HostFacts(fqdn="f1.example.com", processors=64, uid_of={"vacsngly": 990}.get,
                 vg_exists=lambda n: n == "vac_volume_group")


HOST_NEEDS = ("min_processors", "user_data", "root_image", "kernel", "initrd")   # and user_data_file_*


def _conf(workdir: str, state: str, pipe: str) -> str:
    path = os.path.join(workdir, "vac.conf")
    with open(path, "w") as f:
        f.write(f"[settings]\nstate_dir = {state}\nvac_space = s.example.com\n"
                "factory_name = f1.example.com\n"
                f"[vacuum_pipe p]\nvacuum_pipe_url = file://{pipe}\ntarget_share = 5\n"
                "[machinetype local]\nmachine_model = docker\nroot_image = docker://x\n"
                "target_share = 1\n")
    return path


def _load(conf: str, now: float):
    config, result = assemble.load_config_with_pipes([conf], HOST, update=True, now=now)
    url = config.pipes[0].url
    for text in result.warnings + result.errors:
        assert url in text, text
    for text in result.warnings:
        assert "machinetypes[" in text or "cache_seconds" in text or "more warnings" in text, \
            text
    for name, mt in config.machinetypes.items():
        assert math.isfinite(mt.target_share) and mt.target_share >= 0, name
        assert name == "local" or (name.startswith("p-") and mt.pipe == "p")
    return config, result


def _cli_json(conf: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = cli.main(["--config", conf, "config", "check", "--json"])

    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    shown = json.loads(out.getvalue(), parse_constant=refuse)
    assert rc == (0 if shown["ok"] else 1)
    return shown


@settings(max_examples=400, **FUZZ)
@given(seed=st.integers(0, len(SEEDS) - 1), data=pipe_documents())
def test_a_bad_fetch_keeps_the_last_good_pipe(workdir, seed, data):
    state = tempfile.mkdtemp(dir=workdir)
    try:
        pipe = os.path.join(state, "x.pipe")
        with open(pipe, "wb") as f:
            f.write(json.dumps(SEEDS[seed]).encode())
        conf = _conf(workdir, os.path.join(state, "state"), pipe)
        good, result = _load(conf, NOW)
        assert not result.errors and len(good.machinetypes) > 1
        with open(pipe, "wb") as f:
            f.write(data)
        try:
            fresh = pipes.parse_document(data, "file://" + pipe)
        except PipeError:
            fresh = None
        config, result = _load(conf, LATER)
        shown = _cli_json(conf)                 # what the cached pipe gives, as vac shows it
        assert shown["rejected"] is False
        assert set(shown["machinetypes"]) == set(config.machinetypes)
        # Not ok only for what a pipe's machinetypes need of this host (config check checks
        # it: a real pipe's min_processors 8 cannot fit a 1-processor superslot)
        assert shown["ok"] or all(p["option"].startswith(HOST_NEEDS) and "(pipe p)" in p["file"]
                                  for p in shown["problems"]), shown["problems"]
        if fresh is None:
            assert config.machinetypes == good.machinetypes
            assert any("still using the last good cached copy" in e for e in result.errors)
            with open(Paths(os.path.join(state, "state")).pipe_cache("p"), "rb") as f:
                assert pipes.parse_document(f.read(), "x").entries == \
                    pipes.parse_document(json.dumps(SEEDS[seed]).encode(), "x").entries
        else:
            assert "local" in config.machinetypes
            expanded, _ = pipes.expand(config.pipes[0], fresh, ["p"])
            assert set(config.machinetypes) - {"local"} <= set(expanded)
    finally:
        shutil.rmtree(state)


@pytest.mark.parametrize("share", [1e308, 1.7976931348623157e308, 5e-324, 1e-320])
def test_extreme_shares_rescale_to_finite_values(share):
    doc = pipes.parse_document(json.dumps({"machinetypes": [
        {"suffix": "a", "target_share": share}, {"suffix": "b", "target_share": share},
        {"suffix": "c", "target_share": 0}]}).encode(), "u")
    values, warnings = pipes.expand(_section("u", share=1e308), doc, ["p"])
    assert warnings == []
    shares = {name: float(v["target_share"][0]) for name, v in values.items()}
    assert shares == pytest.approx({"p-a": 5e307, "p-b": 5e307, "p-c": 0.0})


# ---- the background fetcher's backoff under any sequence of outcomes and cycle times --------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.floats(0, 4000, allow_nan=False), st.booleans()),
                      max_size=25),
       period=st.floats(1, 120, allow_nan=False))
def test_backoff_never_tries_early_and_always_tries_again(steps, period):
    from vac.config.pipecache import PipeState
    from vac.config.pipefetch import MAX_BACKOFF_SECONDS, Landed, PipeFetcher, backoff_seconds

    outcomes = []
    now = [1_700_000_000.0]
    fetcher = PipeFetcher(lambda s, t: outcomes.pop(0), clock=lambda: now[0])
    pipe = PipeState("p", "https://x.example/p.pipe", "/nonexistent/p.pipe", None, True)
    failures, next_try, last = 0, now[0], None
    try:
        for gap, ok in steps:
            now[0] += gap
            outcomes.append(Landed(ok, "" if ok else "refused", ok))
            queued = fetcher.schedule([pipe], now[0], period)
            allowed = now[0] >= next_try and (last is None or now[0] >= last + period)
            assert queued == (["p"] if allowed else []), (now[0], next_try, last)
            if not queued:
                outcomes.pop()
                continue
            assert fetcher.wait_idle(30)
            last = now[0]
            failures = 0 if ok else failures + 1
            next_try = now[0] + (backoff_seconds(failures, period) if failures else 0)
            assert backoff_seconds(failures or 1, period) <= MAX_BACKOFF_SECONDS
            assert (fetcher.failing().get("p") is None) == ok
    finally:
        fetcher.stop()
