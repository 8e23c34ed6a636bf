# SPDX-License-Identifier: BSD-2-Clause
"""Fuzz: generated and mutated vac.conf texts through load_config and `vac config
check [--json]`: never a traceback, every problem located, strict JSON, nothing executed.

The seeds are the shipped etc/vac.conf and etc/vac.d files and a config made from the option
table itself (every option of vac/config/options.py with a value of its kind). Mutations
work on bytes: values, option names and section titles replaced by hostile ones (NUL, control
characters, non-UTF-8, huge and non-finite numbers, shell and template syntax, very long
lines), lines duplicated, deleted or inserted, raw bytes spliced in anywhere.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import time

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from vac import cli
from vac.config import options as O
from vac.config import assemble
from vac.errors import ConfigError
from vac.host.facts import HostFacts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIPE = os.path.join(REPO, "tests", "data", "realpipes", "pipes", "vacproject-vac__example.pipe")
HOST_OPTIONS = {"singularity_user", "volume_group", "factory_name", "total_processors"}
MARK = "@MARK@"         # replaced by a file that must never come to exist
NO_PATCHES = [Phase.explicit, Phase.generate, Phase.shrink]     # no .hypothesis/patches
FUZZ = settings(max_examples=600, deadline=None, database=None, derandomize=True,
                phases=NO_PATCHES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

HOSTILE_VALUES = [
    "", "nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1e309", "-1", "0", "1e308",
    "9" * 5000, "1" * 400, "0x10", "1_000", "\uff11\uff12", "\u00b2", "1.5.5", "+3", " 7 ",
    "$(touch @MARK@)", "`touch @MARK@`", "; touch @MARK@", "| touch @MARK@ #",
    "%(state_dir)s", "${HOME}", "{{ 7 * 7 }}", "{% raw %}", "##user_data_uuid##",
    "../../etc/shadow", "/etc/shadow", "/", ".", "..", "docker://x", "file:///etc/shadow",
    "a\x00b", "\x00", "\x01\x1b[31mred", "\x7f", "\u2028", "\ud800",
    "x" * 70000, "true", "yes", "false", "True", "no", "auto", "kvm", "fake", "docker",
    "apptainer", "singularity", "root", "vacsngly", "s.example.com", "a b c", "h:1 g:x",
]
HOSTILE_NAMES = [
    "", "vac_space", "state_dir", "target_share", "machine_model", "user_data_option_x",
    "user_data_option_", "user_data_option_A-B", "user_data_file_../x", "machinefeatures_option_",
    "machinefeatures_option_hs06", "mb_per_cpu", "vm_model", "a\x00b", "x" * 5000, "[", "=",
    "\x1b", "\u00e9t\u00e9", "vacuum_pipe_url", "domain_type", "root_public_key",
]
HOSTILE_TITLES = [
    "settings", "SETTINGS", "machinetype", "machinetype ", "machinetype a", "machinetype A_B",
    "machinetype ../x", "machinetype " + "a" * 5000, "vmtype old", "vacuum_pipe p",
    "vacuum_pipe P Q", "vacuum_pipe", "vacuum_pipe p-x", "targetshares", "factories",
    "machinetype p-prod", "a\x00b", "settings\x00", "DEFAULT", "\x01", "machinetype \u00e9",
]


# Options whose values have a syntax of their own: a valid value for the seed.
SEED_VALUES = {"docker_ulimits": "nofile=1024:2048 nproc=100"}


def _value_text(kind: str, default, name: str = "") -> str:
    if name in SEED_VALUES:
        return SEED_VALUES[name]
    if kind == "words":
        return " ".join(default) if default else "a.example.com"
    if default is None:
        return {"int": "1", "optint": "2", "float": "1.0", "optfloat": "10.5"}.get(kind, "x")
    return str(default).lower() if isinstance(default, bool) else str(default)


def _table_seed() -> str:
    """Every option of the table, with a value of its kind (defaults where they exist)."""
    skip = {"state_dir", "vac_space", "factory_name", "singularity_user", "volume_group",
            "gocdb_cert_file", "gocdb_key_file", "forward_dev", "vacmon_hostport", "factories",
            "podman_user"}
    lines = ["[settings]", "state_dir = @STATE@", "vac_space = s.example.com",
             "factory_name = f1.example.com", "factories = f1.example.com f2.example.com",
             "vacmon_hostport = mon.example.com:8884", "singularity_user = vacsngly",
             "podman_user = vacpodman",
             "enable_fake_backend = true", "user_data_option_site = x",
             "machinefeatures_option_hs06 = 10"]
    lines += [f"{o.name} = {_value_text(o.kind, o.default)}" for o in O.SETTINGS_OPTIONS
              if o.name not in skip and o.name != "enable_fake_backend"]
    lines += ["", "[machinetype fz]", "machine_model = fake", "user_data_file_x = f.txt"]
    lines += [f"{o.name} = {_value_text(o.kind, o.default, o.name)}" for o in O.MACHINETYPE_OPTIONS
              if o.name not in ("machine_model", "kernel", "initrd", "cmdline",
                                "fake_create_error")]
    lines += ["", "[vacuum_pipe p]", f"vacuum_pipe_url = file://{PIPE}", "target_share = 2",
              "", "[machinetype p-prod]", "target_share = 1", ""]
    return "\n".join(lines)


def _seeds() -> list:
    found = [_table_seed()]
    for path in ("etc/vac.conf", "etc/vac.d/example.conf"):
        with open(os.path.join(REPO, path)) as f:
            text = "\n".join(_uncommented(line) for line in f.read().split("\n"))
        found.append(text + "\n[settings]\nstate_dir = @STATE@\nfactory_name = f1.example.com\n"
                     "host_processors = 64\nsingularity_user = vacsngly\n")
    return found


def _uncommented(line: str) -> str:
    """The example's commented-out sections and options, made live."""
    body = re.sub(r"^# ?", "", line) if line.startswith("#") else ""     # "# x" and "#x"
    return body if re.match(r"\[|[a-z_0-9]+ = ", body) else line


SEEDS = _seeds()

OPTION_NAMES = sorted(set(O.by_name(O.SETTINGS_OPTIONS)) | set(O.by_name(O.MACHINETYPE_OPTIONS))
                      | {"vacuum_pipe_url"})
_any_value = st.one_of(st.sampled_from(HOSTILE_VALUES), st.text(max_size=40),
                       st.integers().map(str), st.floats().map(repr))
_ops = st.one_of(
    st.tuples(st.just("value"), st.integers(0, 200), _any_value),
    st.tuples(st.just("name"), st.integers(0, 200),
              st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(max_size=20))),
    st.tuples(st.just("title"), st.integers(0, 200),
              st.one_of(st.sampled_from(HOSTILE_TITLES), st.text(max_size=20))),
    st.tuples(st.just("insert"), st.integers(0, 200), st.text(max_size=60)),
    st.tuples(st.just("insert"), st.integers(0, 200),
              st.tuples(st.sampled_from(OPTION_NAMES), _any_value).map(" = ".join)),
    st.tuples(st.just("duplicate"), st.integers(0, 200), st.just("")),
    st.tuples(st.just("delete"), st.integers(0, 200), st.just("")),
    st.tuples(st.just("bytes"), st.integers(0, 10 ** 6), st.binary(min_size=1, max_size=8)),
)


def _mutate(seed: str, ops, state: str, mark: str) -> bytes:
    lines = seed.replace("@STATE@", state).split("\n")
    spliced = []
    for op, where, what in ops:
        index = where % len(lines)
        line = lines[index]
        if op == "value" and "=" in line:
            lines[index] = line.split("=", 1)[0] + "= " + what
        elif op == "name" and "=" in line:
            lines[index] = what + " =" + line.split("=", 1)[1]
        elif op == "title" and line.startswith("["):
            lines[index] = f"[{what}]"
        elif op == "insert":
            lines.insert(index, what)
        elif op == "duplicate":
            lines.insert(index, line)
        elif op == "delete" and len(lines) > 1:
            del lines[index]
        elif op == "bytes":
            spliced.append((where, what))
    data = "\n".join(lines).replace(MARK, mark).encode("utf-8", errors="surrogatepass")
    for where, what in spliced:
        at = where % (len(data) + 1)
        data = data[:at] + what + data[at:]
    return data


def _strict(text: str):
    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def _located(problem, texts: dict) -> bool:
    """A problem names its file, and the section it names is in that file (or, for
    whole-config problems, it says which files)."""
    if problem.file in texts:
        if problem.section is not None:
            title = problem.section.replace("\\0", "\x00").lower()
            if title not in texts[problem.file].lower():
                return False
        return problem.option is None or problem.section is not None
    if problem.file is None:
        return all(p in problem.message for p in texts) or "fully qualified" in problem.message
    return False


def _run_cli(args) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(args)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="vac-fuzz-config-") as d:
        os.mkdir(os.path.join(d, "state"))
        yield d


def _check_one(data, workdir: str) -> None:
    """data: the bytes of vac.conf, or a list of the bytes of several files read in order."""
    texts = {}
    for n, body in enumerate(data if isinstance(data, list) else [data]):
        path = os.path.join(workdir, f"{n:02d}-vac.conf")
        with open(path, "wb") as f:
            f.write(body)
        texts[path] = body.decode("utf-8", errors="replace")
    files = sorted(texts)
    host = HostFacts(fqdn="f1.example.com", processors=4,
                     uid_of={"vacsngly": 990, "vacpodman": 991, "root": 0}.get, vg_exists=lambda n: False)
    try:
        assemble.load_config(files, host, update=False, now=time.time())
        loaded = True
    except ConfigError as e:
        loaded = False
        assert e.problems
        for problem in e.problems:
            assert _located(problem, texts), problem
    args = [word for path in files for word in ("--config", path)]
    rc, out, err = _run_cli(args + ["config", "check", "--json"])
    assert rc in (0, 1), (rc, err)
    shown = _strict(out)
    assert shown["ok"] is (rc == 0)
    rejected = shown["rejected"]        # else loaded, and rc 1 is what this host lacks
    assert not rejected or rc == 1
    if rc == 1:
        assert shown["problems"] and all(p["file"] in texts or p["file"] is None or
                                         (not rejected and "(pipe " in p["file"])
                                         for p in shown["problems"])
    rc_text, out_text, err_text = _run_cli(args + ["config", "check"])
    assert rc_text == rc
    assert ("configuration OK" in out_text) if rc == 0 else \
        ("configuration rejected" in err_text) if rejected else \
        ("cannot work on this host" in err_text)
    rc_slots, out_slots, err_slots = _run_cli(args + ["slots", "--json"])
    assert rc_slots == (1 if rejected else 0)
    if not rejected:
        slots = _strict(out_slots)
        assert isinstance(slots, dict) and set(slots) == {"version", "time", "vacd", "slots",
                                                          "totals", "cycle", "images"}
    assert "Traceback" not in err + err_text + err_slots
    if loaded and rejected:     # only the host can differ (vac reads the real one)
        assert {p["option"] for p in shown["problems"]} <= HOST_OPTIONS, shown


@FUZZ
@given(seed=st.sampled_from(SEEDS), ops=st.lists(_ops, min_size=1, max_size=6))
def test_mutated_configs_are_accepted_or_rejected_with_located_problems(workdir, seed, ops):
    mark = os.path.join(workdir, "executed")
    _check_one(_mutate(seed, ops, os.path.join(workdir, "state"), mark), workdir)
    assert not os.path.exists(mark), "a config value was executed"


NUMERIC_HOSTILE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e309", "-1", "0", "-0", "1e308",
                   "9" * 5000, "9" * 30, "0x10", "1_000", "\uff11", "\u00b2", "1e-400", " ",
                   "a\x00b", "3.5", "2"]
_override = st.tuples(
    st.sampled_from(["settings", "machinetype fz", "vacuum_pipe p", "machinetype p-prod"]),
    st.sampled_from(OPTION_NAMES),
    st.one_of(st.sampled_from(NUMERIC_HOSTILE), st.sampled_from(HOSTILE_VALUES),
              st.text(max_size=12)))


@FUZZ
@given(overrides=st.lists(_override, min_size=1, max_size=4))
@example(overrides=[("settings", "singularity_user", "a\x00b")])
@example(overrides=[("settings", "state_dir", "/tmp/a\x00b")])
@example(overrides=[("machinetype fz", "target_share", "nan")])
@example(overrides=[("machinetype p-prod", "target_share", "inf")])
@example(overrides=[("machinetype fz", "min_processors", "2"),
                    ("machinetype fz", "max_processors", "")])
def test_each_option_with_hostile_values_is_accepted_or_located(workdir, overrides):
    """Options of the table set, section by section, to hostile values of every kind."""
    mark = os.path.join(workdir, "executed")
    tail = "".join(f"\n[{title}]\n{name} = {value}\n" for title, name, value in overrides)
    _check_one(_mutate(SEEDS[0] + tail, [], os.path.join(workdir, "state"), mark), workdir)
    assert not os.path.exists(mark), "a config value was executed"


@settings(max_examples=200, deadline=None, database=None, derandomize=True, phases=NO_PATCHES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=st.lists(st.tuples(st.integers(0, 2), _ops), min_size=1, max_size=6))
def test_mutated_vac_d_files_are_located_in_the_right_file(workdir, ops):
    """The table's config split into vac.d-style files read in order, each mutated."""
    mark = os.path.join(workdir, "executed")
    state = os.path.join(workdir, "state")
    parts = SEEDS[0].split("\n\n")            # [settings], [machinetype fz], the pipe
    files = [_mutate(part + "\n", [op for n, op in ops if n == i], state, mark)
             for i, part in enumerate(parts[:2] + ["\n\n".join(parts[2:])])]
    _check_one(files, workdir)
    assert not os.path.exists(mark), "a config value was executed"


@settings(max_examples=150, deadline=None, database=None, derandomize=True, phases=NO_PATCHES,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400))
def test_random_bytes_are_accepted_or_rejected_with_located_problems(workdir, data):
    _check_one(b"[settings]\n" + data, workdir)


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_the_seeds_themselves_are_valid(workdir, seed):
    """The mutations start from configs that load (else the fuzz explores only rejections)."""
    data = _mutate(SEEDS[seed], [], os.path.join(workdir, "state"), "")
    path = os.path.join(workdir, f"seed{seed}.conf")
    with open(path, "wb") as f:
        f.write(data)
    host = HostFacts(fqdn="f1.example.com", processors=4, uid_of={"vacsngly": 990, "vacpodman": 991}.get,
                     vg_exists=lambda n: False)
    config = assemble.load_config([path], host, update=False, now=time.time())
    assert config.machinetypes


def test_a_min_processors_above_the_default_max_is_located_at_min_processors(workdir):
    """Found writing this fuzz: the problem named the file "default" (max_processors' origin)."""
    path = os.path.join(workdir, "minmax.conf")
    with open(path, "w") as f:
        f.write(f"[settings]\nstate_dir = {workdir}/state\nvac_space = s.example.com\n"
                "factory_name = f1.example.com\n[machinetype a]\nmachine_model = docker\n"
                "root_image = docker://x\nmin_processors = 2\n")
    rc, out, _ = _run_cli(["--config", path, "config", "check", "--json"])
    assert rc == 1
    assert _strict(out)["problems"] == [{
        "message": "max_processors (1) is less than min_processors (2)", "file": path,
        "section": "machinetype a", "option": "min_processors", "line": 8}]


def test_shell_syntax_in_every_option_executes_nothing(workdir):
    mark = os.path.join(workdir, "executed-all")
    names = [n for n in OPTION_NAMES if n not in ("state_dir",)]
    for value in [v for v in HOSTILE_VALUES if MARK in v]:
        value = value.replace(MARK, mark)
        body = "\n".join(f"{n} = {value}" for n in names)
        path = os.path.join(workdir, "shell.conf")
        with open(path, "w") as f:
            f.write(f"[settings]\nstate_dir = {workdir}/state\n{body}\n"
                    f"[machinetype a]\n{body}\n[vacuum_pipe p]\n{body}\n")
        for args in (["config", "check", "--json"], ["config", "check"], ["slots", "--json"]):
            rc, out, err = _run_cli(["--config", path] + args)
            assert rc == 1 and "Traceback" not in err
    assert not os.path.exists(mark)
