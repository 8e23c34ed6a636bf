# SPDX-License-Identifier: BSD-2-Clause
"""The realistic vac.conf mistakes an admin makes, each through `vac config check`
as the admin runs it, with the exact message, its FILE:LINE [SECTION] OPTION, and the exit
status: 1 for an error (rejected, or cannot work on this host), 0 for a warning, and 3 for
the same warning with --strict. A typo gets a "did you mean".

Every row is one mistake in an otherwise good vac.conf; the host is fixed (8 processors,
f1.example.com), so the table does not depend on the machine the test runs on.
"""
from __future__ import annotations

import json
import os
from typing import List, NamedTuple

import pytest

from vac import cli
from vac.config import assemble
from vac.ops import doctor
from vac.host.facts import HostFacts

HOST = HostFacts(fqdn="f1.example.com", processors=8, uid_of={"vacsngly": 990}.get,
                 vg_exists=lambda name: False)

# Line numbers below count in this text: [settings] is line 1, [machinetype atlas] line 7.
GOOD = """\
[settings]
vac_space = space.example.com
factory_name = f1.example.com
state_dir = {state}
total_processors = 8
{settings}
[machinetype atlas]
machine_model = docker
root_image = docker://busybox
target_share = 1
{machinetype}
"""
SETTINGS_LINE, MACHINETYPE_LINE = 6, 11     # where {settings} and {machinetype} go
ERROR, WARNING = 1, 3                       # exit statuses (WARNING: with --strict; else 0)


class Mistake(NamedTuple):
    name: str
    settings: str           # lines put at SETTINGS_LINE
    machinetype: str        # lines put at MACHINETYPE_LINE
    status: int             # ERROR, or WARNING (0 without --strict)
    line: int
    section: str
    option: str
    message: str            # exact; {files} is the machinetype's files/ directory


M = "machinetype atlas"
S = "settings"
MISTAKES: List[Mistake] = [
    Mistake("option typo", "", "target_shares = 1", ERROR, 11, M, "target_shares",
            "unknown option target_shares (did you mean target_share?)"),
    Mistake("section typo", "", "[machinetyp lhcb]\ntarget_share = 1", ERROR, 11,
            "machinetyp lhcb", None,
            "unknown section [machinetyp lhcb] (did you mean [machinetype lhcb]?); it is not "
            "read"),
    Mistake("settings option typo", "total_processor = 4", "", ERROR, 6, S, "total_processor",
            "unknown option total_processor (did you mean total_processors?)"),
    Mistake("settings option in a machinetype", "", "draining = yes", ERROR, 11, M, "draining",
            "draining is a [settings] option, not a [machinetype] one; move it there"),
    Mistake("docker without root_image", "", "root_image =", ERROR, 8, M, "machine_model",
            "machine_model docker needs a root_image (docker://IMAGE:TAG)"),
    Mistake("user_data missing, relative name resolved", "", "user_data = atlas.ud", ERROR, 11,
            M, "user_data", "atlas.ud (resolved: {files}/atlas.ud) does not exist: every "
            "creation of atlas fails"),
    Mistake("user_data_file missing", "", "user_data_file_cert = /nonexistent/cert.pem", ERROR,
            11, M, "user_data_file_cert",
            "/nonexistent/cert.pem does not exist: every creation of atlas fails"),
    Mistake("indented line swallowed", "", "user_data = /bin/true\n  target_share = 3", ERROR,
            11, M, "user_data",
            "the indented line after it ('target_share = 3') was joined to its value "
            "'/bin/true': a line that starts with spaces continues the option above; start "
            "each option at the left margin"),
    Mistake("inline # comment", "vac_space = x.example.com   # our space", "", ERROR, 6, S,
            "vac_space", "'x.example.com   # our space' has a comment after the value, which "
            "would become part of it: comments go on their own line"),
    Mistake("inline ; comment", "", "max_wallclock_seconds = 3600 ; one hour", ERROR, 11, M,
            "max_wallclock_seconds", "'3600 ; one hour' has a comment after the value, which "
            "would become part of it: comments go on their own line"),
    Mistake("commas in factories", "factories = a.example.com, b.example.com", "", ERROR, 6, S,
            "factories", "names are separated by spaces, not commas: 'a.example.com, "
            "b.example.com'"),
    Mistake("negative share", "", "target_share = -1", ERROR, 11, M, "target_share",
            "must not be negative (0: this machinetype gets no slots)"),
    Mistake("min_processors over a superslot", "", "min_processors = 2\nmax_processors = 2",
            ERROR, 11, M, "min_processors",
            "machinetype atlas needs 2 processors per machine but a superslot has 1 "
            "(processors_per_superslot): none can be created"),
    Mistake("min_processors over the host", "processors_per_superslot = 16",
            "min_processors = 16\nmax_processors = 16", ERROR, 11, M, "min_processors",
            "machinetype atlas needs 16 processors per machine but this factory has 8 "
            "(total_processors): none can be created"),
    Mistake("boolean that is no boolean", "", "docker_hard_memory = maybe", ERROR, 11, M,
            "docker_hard_memory",
            "'maybe' is not a boolean (yes/no, true/false, on/off or 1/0)"),
    Mistake("share 0", "", "target_share = 0", WARNING, 11, M, "target_share",
            "machinetype atlas has target_share 0: it gets no slots"),
    Mistake("heartbeat_seconds without heartbeat_file", "", "heartbeat_seconds = 600", WARNING,
            11, M, "heartbeat_seconds",
            "has no effect without heartbeat_file: no machine is checked for a heartbeat"),
    Mistake("fizzle longer than wallclock", "", "fizzle_seconds = 9000\n"
            "max_wallclock_seconds = 3600", WARNING, 11, M, "fizzle_seconds",
            "fizzle_seconds (9000) is longer than max_wallclock_seconds (3600): every machine "
            "ends within fizzle_seconds, so none is accounted and one that ends without a "
            "shutdown message counts as an abort that backs the machinetype off"),
    Mistake("draining = true (the original read no)", "draining = true", "", WARNING, 6, S,
            "draining", "draining = true now means yes; the original Vac read it as no (only "
            "yes meant yes)"),
    Mistake("fix_networking = no (the original read yes)", "fix_networking = no", "", WARNING,
            6, S, "fix_networking", "fix_networking = no now means no; the original Vac read "
            "it as yes (anything but false meant yes)"),
    Mistake("docker_hard_memory = no (read yes before)", "", "docker_hard_memory = no",
            WARNING, 11, M, "docker_hard_memory", "docker_hard_memory = no now means no; "
            "earlier releases of this Vac read it as yes (anything but false meant yes)"),
    Mistake("user_data_proxy = yes (the original read no)", "", "user_data_proxy = yes",
            WARNING, 11, M, "user_data_proxy", "user_data_proxy = yes now means yes; the "
            "original Vac read it as no (only true meant yes)"),
    Mistake("disk over the site's ceiling", "disk_gb_per_processor = 20",
            "machine_model = vm-raw\nroot_image = http://images.example.com/x.img\n"
            "disk_gb_per_processor = 50", WARNING, 13, M, "disk_gb_per_processor",
            "50 is more than the site's ceiling, [settings] disk_gb_per_processor = 20: VMs "
            "of atlas get 20 GB per processor"),
]


@pytest.fixture(autouse=True)
def fixed_host(monkeypatch):
    monkeypatch.setattr(HostFacts, "read", classmethod(lambda cls: HOST))


def _write(tmp_path, mistake: Mistake) -> str:
    conf = tmp_path / "vac.conf"
    conf.write_text(GOOD.format(state=tmp_path / "state", settings=mistake.settings,
                                machinetype=mistake.machinetype))
    return str(conf)


def _check(conf: str, capsys, *flags: str):
    status = cli.main(["--config", conf, "config", "check", *flags])
    out, err = capsys.readouterr()
    return status, out, err


def _expected(tmp_path, conf: str, mistake: Mistake) -> str:
    files = os.path.join(str(tmp_path / "state"), "machinetypes", "atlas", "files")
    where = f"{conf}:{mistake.line} [{mistake.section}]"
    where += f" {mistake.option}" if mistake.option else ""
    return f"{where}: {mistake.message.format(files=files)}"


def test_the_good_configuration_is_ok(tmp_path, capsys):
    assert GOOD.splitlines()[SETTINGS_LINE - 1] == "{settings}"     # the table's lines
    assert GOOD.splitlines()[MACHINETYPE_LINE - 1] == "{machinetype}"
    conf = _write(tmp_path, Mistake("none", "", "", 0, 0, "", "", ""))
    status, out, err = _check(conf, capsys, "--strict")
    assert (status, err) == (0, "")
    assert out.startswith("configuration OK: ") and "warning:" not in out


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_each_mistake_is_named_where_it_is_with_its_exit_status(tmp_path, capsys, mistake):
    conf = _write(tmp_path, mistake)
    expected = _expected(tmp_path, conf, mistake)
    status, out, err = _check(conf, capsys)
    if mistake.status == ERROR:
        assert status == 1
        assert f"  {expected}" in err.splitlines()
        assert "configuration OK" not in out
    else:
        assert status == 0
        assert f"warning: {expected}" in out.splitlines()
        assert _check(conf, capsys, "--strict")[0] == 3
    assert "Traceback" not in err


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_json_carries_the_same_located_finding(tmp_path, capsys, mistake):
    conf = _write(tmp_path, mistake)
    status, out, _ = _check(conf, capsys, "--json", "--strict")
    shown = json.loads(out)
    assert status == shown["exit_status"] == mistake.status
    assert shown["ok"] is (mistake.status != ERROR)
    found = shown["problems"] if mistake.status == ERROR else shown["findings"]
    files = os.path.join(str(tmp_path / "state"), "machinetypes", "atlas", "files")
    expected = {"file": conf, "line": mistake.line, "section": mistake.section,
                "option": mistake.option, "message": mistake.message.format(files=files)}
    assert expected in found
    if mistake.status == ERROR:     # said once: a comment glued on is not also "not an integer"
        assert [p for p in found if (p["line"], p["option"]) ==
                (mistake.line, mistake.option)] == [expected]


def test_the_ceiling_is_the_effective_value_and_says_where_it_came_from(tmp_path, capsys):
    mistake = next(m for m in MISTAKES if m.option == "disk_gb_per_processor")
    conf = _write(tmp_path, mistake)
    assert cli.main(["--config", conf, "config", "get", "-v", "atlas",
                     "disk_gb_per_processor"]) == 0
    assert capsys.readouterr().out == f"20  # {conf}:6 [settings]\n"


def test_a_value_within_the_ceiling_or_without_one_is_kept(tmp_path, capsys):
    for settings, expected in (("disk_gb_per_processor = 60", "50"), ("", "50")):
        conf = _write(tmp_path, Mistake("", settings, "machine_model = vm-raw\nroot_image = "
                                        "http://images.example.com/x.img\n"
                                        "disk_gb_per_processor = 50", 0, 0, "", "", ""))
        assert cli.main(["--config", conf, "config", "get", "atlas",
                         "disk_gb_per_processor"]) == 0
        assert capsys.readouterr().out == f"{expected}\n"


def test_every_mistake_at_once_is_listed_together(tmp_path, capsys):
    # The admin sees all of them in one run, not one per edit.
    errors = [m for m in MISTAKES if m.status == ERROR and m.section != "machinetyp lhcb"
              and m.option not in ("user_data", "user_data_file_cert", "min_processors")]
    conf = tmp_path / "vac.conf"
    conf.write_text(GOOD.format(state=tmp_path / "state", settings="", machinetype="") +
                    "".join(f"[machinetype m{i}]\nmachine_model = docker\nroot_image = "
                            f"docker://x\n{m.machinetype}\n" for i, m in enumerate(errors)
                            if m.machinetype))
    status, _, err = _check(str(conf), capsys)
    assert status == 1
    assert len([line for line in err.splitlines() if line.startswith("  ")]) >= len(
        [m for m in errors if m.machinetype])


def test_config_get_names_a_typo(tmp_path, capsys):
    conf = _write(tmp_path, Mistake("", "", "", 0, 0, "", "", ""))
    assert cli.main(["--config", conf, "config", "get", "atlas", "fizle_seconds"]) == 1
    assert capsys.readouterr().err == ("vac: [machinetype atlas] has no option fizle_seconds "
                                       "(did you mean fizzle_seconds?)\n")
    assert cli.main(["--config", conf, "config", "get", "atlass", "target_share"]) == 1
    assert "no machinetype atlass (did you mean atlas?)" in capsys.readouterr().err
    assert cli.main(["--config", conf, "config", "get", "draining"]) == 0
    assert capsys.readouterr().out == "no\n"
    assert cli.main(["--config", conf, "config", "get", "draining", "-v"]) == 0
    assert capsys.readouterr().out == "no  # default\n"



def test_a_pipe_cannot_enlarge_disks_past_the_site_ceiling(tmp_path):
    pipe = tmp_path / "x.pipe"
    pipe.write_text(json.dumps({"machinetypes": [
        {"suffix": "big", "machine_model": "vm-raw", "target_share": 1,
         "root_image": "https://images.example.com/x.img", "disk_gb_per_processor": 100},
        {"suffix": "small", "machine_model": "vm-raw", "target_share": 1,
         "root_image": "https://images.example.com/x.img", "disk_gb_per_processor": 10}]}))
    conf = tmp_path / "vac.conf"
    conf.write_text(GOOD.format(state=tmp_path / "state", settings="disk_gb_per_processor = 20",
                                machinetype="") +
                    f"[vacuum_pipe p]\nvacuum_pipe_url = file://{pipe}\ntarget_share = 1\n")
    config, _ = assemble.load_config_with_pipes([str(conf)], HOST, update=True, now=1e9)
    assert config.machinetypes["p-big"].disk_gb_per_processor == 20
    assert config.machinetypes["p-small"].disk_gb_per_processor == 10
    assert [str(p.message) for p in config.findings if p.option == "disk_gb_per_processor"] == [
        "100 is more than the site's ceiling, [settings] disk_gb_per_processor = 20: VMs of "
        "p-big get 20 GB per processor"]


def test_vac_doctor_names_each_warning_where_config_check_does(tmp_path):
    mistake = next(m for m in MISTAKES if m.name.startswith("draining = true"))
    conf = _write(tmp_path, mistake)
    config = assemble.load_config([conf], HOST, update=False, now=1e9)
    lines = doctor.config_lines(config, {})
    assert [(c.name, c.detail) for c in lines[1:]] == [
        ("config-warning", _expected(tmp_path, conf, mistake))]


@pytest.mark.parametrize("name,status", [("min_processors over a superslot", "FAIL"),
                                         ("min_processors over the host", "FAIL"),
                                         ("share 0", "warn")])
def test_vac_doctor_says_what_config_check_says_of_the_host(tmp_path, name, status):
    mistake = next(m for m in MISTAKES if m.name == name)
    conf = _write(tmp_path, mistake)
    config = assemble.load_config([conf], HOST, update=False, now=1e9)
    assert [(c.name, c.status, c.detail) for c in doctor.machinetype_fit(config)] == [
        ("machinetype-fit", status, _expected(tmp_path, conf, mistake))]
    good = _write(tmp_path, Mistake("", "", "", 0, 0, "", "", ""))
    assert doctor.machinetype_fit(assemble.load_config([good], HOST, update=False, now=1e9)) == []
