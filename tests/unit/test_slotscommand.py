# SPDX-License-Identifier: BSD-2-Clause
"""`vac slots`: golden text and JSON in each state (running, failed, backoff, draining,
rejected configuration, vacd stopped), the first line on vacd, filters and totals.

The clock is fixed (NOW) and the timezone is UTC, so the golden files are stable. Set
VAC_UPDATE_GOLDEN=1 to write them again (then read the difference before committing it).
"""
from __future__ import annotations

import fcntl
import json
import os
import time

import pytest
from testbed import REPO

from vac import cli, planfile, slotscommand
from vac.errors import ConfigError, Problem
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
from vac.paths import Paths
from vac.planfile import IdleReason, PlanRecord

GOLDEN = os.path.join(REPO, "tests", "data", "slots")
NOW = 1796544000          # 2026-12-06 08:00:00 UTC
SLOTS = [f"f1-0{n}.example.com" for n in range(4)]

CONF = """[settings]
state_dir = {state}
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 4

[machinetype alpha]
machine_model = fake
target_share = 1

[machinetype beta]
machine_model = {beta_model}
target_share = 1
"""


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class World:
    """A state directory built by hand: machines, the plan record, vacd's lock."""

    def __init__(self, tmp_path, beta_model: str = "fake"):
        self.tmp = str(tmp_path)
        self.paths = Paths(str(tmp_path / "state"))
        self.paths.ensure()
        self.conf = str(tmp_path / "vac.conf")
        with open(self.conf, "w") as f:
            f.write(CONF.format(state=self.paths.state_dir, beta_model=beta_model))
        self.lock_fd = None

    def machine(self, slot: str, machinetype: str, created: int, started=None, ends=None,
                finished=None, message=None, record=None) -> MachineDir:
        d = MachineDir.create(self.paths, created, machinetype, slot)
        write_slot_record(self.paths, slot, SlotRecord(created, machinetype, "fake"))
        d.write("jobfeatures/allocated_cpu", "1")
        if started is not None:
            d.write("started", str(started), mtime=started)
            d.write("heartbeat", "1234.5", mtime=NOW - 30)
        if ends is not None:
            d.write("jobfeatures/shutdowntime_job", str(ends))
        if message is not None:
            d.write("joboutputs/shutdown_message", message, mtime=finished)
        if finished is not None:
            d.write("finished", "", mtime=finished)
        if record is not None:
            d.write_backend_record(record)
        return d

    def plan(self, when: float, idle=None, **kw) -> None:
        planfile.write(self.paths.plan, PlanRecord(time=when, idle=idle or {}, **kw))
        os.utime(self.paths.plan, (when, when))

    def heartbeat(self, when: float) -> None:
        with open(self.paths.factory_heartbeat, "w") as f:
            f.write(str(int(when)))
        os.utime(self.paths.factory_heartbeat, (when, when))

    def vacd_running(self, pid: int = 4242) -> None:
        """Hold vacd.lock as vacd does, with a fixed pid in it."""
        self.lock_fd = os.open(os.path.join(self.paths.state_dir, "vacd.lock"),
                               os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(self.lock_fd, f"{pid}\n".encode(), 0)

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def run(self, *flags: str, capsys) -> tuple:
        capsys.readouterr()
        args = cli.build_parser().parse_args(["--config", self.conf, "slots", *flags])
        code = slotscommand.slots_command(args, now=NOW)
        return code, capsys.readouterr().out.replace(self.tmp, "<tmp>")


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.release()


def _running(w: World, slot: str, machinetype: str = "alpha", **kw) -> MachineDir:
    return w.machine(slot, machinetype, created=NOW - 3605, started=NOW - 3600,
                     ends=NOW - 3600 + 86400, **kw)


def scene_running(w: World) -> None:
    _running(w, SLOTS[0])
    _running(w, SLOTS[1])
    _running(w, SLOTS[2], "beta", record={"backend": "fake", "image": "x:1", "ip": "10.0.0.7",
                                          "image_version": "sha256:" + "ab" * 32})
    w.plan(NOW - 15, {SLOTS[3]: IdleReason(planfile.NO_ROOM, "no machinetype fits the 1 "
                                                             "processors left")})
    w.heartbeat(NOW - 20)
    w.vacd_running()


def scene_failed(w: World) -> None:
    _running(w, SLOTS[0])
    why = "beta: creation failed: image docker://nosuch/image:1 not found"
    w.machine(SLOTS[1], "beta", created=NOW - 40, finished=NOW - 39,   # finished, never started
              message="700 Vac: creation failed: image docker://nosuch/image:1 not found")
    w.plan(NOW - 15, {
        SLOTS[1]: IdleReason(planfile.CREATION_FAILED, why, machinetype="beta"),
        SLOTS[2]: IdleReason(planfile.DEFERRED, f"creation of beta deferred: {why}",
                             machinetype="beta"),
        SLOTS[3]: IdleReason(planfile.CREATION_FAILED, why, machinetype="beta")},
        errors=(f"{SLOTS[1]}: {why}", f"{SLOTS[3]}: {why}"),
        machine_errors={SLOTS[1]: {"machine": f"{NOW - 40}_beta_{SLOTS[1]}", "count": 3,
                                   "last": why},
                        SLOTS[3]: {"machine": "", "count": 1, "last": why}})
    w.heartbeat(NOW - 20)
    w.vacd_running()


def scene_backoff(w: World) -> None:
    w.machine(SLOTS[0], "alpha", created=NOW - 900, started=NOW - 890, finished=NOW - 300,
              message="300 No more work to do")
    alpha = IdleReason(planfile.BACKOFF, "backoff of alpha until 1796544600: abort on f2 at "
                       "07:55", machinetype="alpha", until=NOW + 600, factory="f2.example.com")
    beta = IdleReason(planfile.BACKOFF, f"backoff of beta until {NOW + 90000}",
                      machinetype="beta", until=NOW + 90000)
    both = planfile.combined([alpha, beta])
    w.plan(NOW - 15, {SLOTS[0]: alpha, SLOTS[1]: both, SLOTS[2]: both, SLOTS[3]: both})
    w.heartbeat(NOW - 20)
    w.vacd_running()


def scene_draining(w: World) -> None:
    _running(w, SLOTS[0])
    w.machine(SLOTS[1], "alpha", created=NOW - 900, started=NOW - 890, finished=NOW - 300,
              message="200 Success")
    draining = IdleReason(planfile.DRAINING, "draining")
    w.plan(NOW - 15, {SLOTS[1]: draining, SLOTS[2]: draining, SLOTS[3]: draining})
    w.heartbeat(NOW - 20)
    w.vacd_running()


def scene_rejected(w: World) -> None:
    _running(w, SLOTS[0])
    _running(w, SLOTS[1], "beta")
    error = f"{w.conf}:13 [machinetype beta] machine_model: unknown machine_model 'xen'"
    rejected = IdleReason(planfile.CONFIG_REJECTED, f"configuration rejected: {error}")
    w.plan(NOW - 15, {SLOTS[2]: rejected, SLOTS[3]: rejected},
           config_state=planfile.CONFIG_REJECTED_STATE, config_error=error)
    w.heartbeat(NOW - 20)
    w.vacd_running()


def scene_stopped(w: World) -> None:
    _running(w, SLOTS[0])
    _running(w, SLOTS[1])
    w.plan(NOW - 7200, {SLOTS[2]: IdleReason(planfile.OVERLOAD, "load average 9.10 > 8.00"),
                        SLOTS[3]: IdleReason(planfile.OVERLOAD, "load average 9.10 > 8.00")})
    w.heartbeat(NOW - 7205)


SCENES = {"running": (scene_running, "fake", 0), "failed": (scene_failed, "fake", 0),
          "backoff": (scene_backoff, "fake", 0), "draining": (scene_draining, "fake", 0),
          "rejected": (scene_rejected, "xen", 1), "stopped": (scene_stopped, "fake", 0)}


def _golden(name: str, text: str) -> None:
    path = os.path.join(GOLDEN, name)
    if os.environ.get("VAC_UPDATE_GOLDEN") == "1":
        os.makedirs(GOLDEN, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), f"{name} differs from the golden file"


def _rejecting(conf: str):
    """The loader's rejection as a fixed problem (the loader's own wording is not what these
    golden files are about; test_a_rejected_configuration_... uses the real loader)."""
    def load(*args, **kw):
        raise ConfigError([Problem("unknown machine_model 'xen'", conf, "machinetype beta",
                                   "machine_model", line=13)])
    return load


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_golden_text_and_json(scene, tmp_path, capsys, monkeypatch):
    build, beta_model, code = SCENES[scene]
    w = World(tmp_path, beta_model)
    if code:
        monkeypatch.setattr(slotscommand, "load_for_command", _rejecting(w.conf))
    try:
        build(w)
        assert w.run(capsys=capsys)[0] == code
        _golden(f"{scene}.txt", w.run(capsys=capsys)[1])
        done, out = w.run("--json", capsys=capsys)
        assert done == code
        json.loads(out)   # strict JSON
        _golden(f"{scene}.json", out)
        _golden(f"{scene}-totals.txt", w.run("--totals", capsys=capsys)[1])
    finally:
        w.release()


def test_the_first_line_says_vacd_runs_with_its_pid_and_last_cycle(world, capsys):
    scene_running(world)
    first = world.run(capsys=capsys)[1].splitlines()[0]
    assert first == ("vacd running (pid 4242), last cycle 07:59:45, 0m15s ago; "
                     "configuration OK")
    view = json.loads(world.run("--json", capsys=capsys)[1])
    assert view["version"] == slotscommand.JSON_VERSION
    assert view["vacd"]["running"] is True and view["vacd"]["pid"] == 4242
    assert view["vacd"]["last_cycle"] == NOW - 15 and view["vacd"]["last_cycle_age"] == 15


def test_a_stopped_vacd_is_said_with_its_last_cycle(world, capsys):
    scene_stopped(world)
    first = world.run(capsys=capsys)[1].splitlines()[0]
    assert first.startswith("vacd not running: stopped after its last cycle (06:00:00, "
                            "2h00m ago)")
    assert json.loads(world.run("--json", capsys=capsys)[1])["vacd"]["running"] is False


def test_a_state_directory_vacd_never_ran_on(world, capsys):
    code, out = world.run(capsys=capsys)
    assert code == 0
    assert out.splitlines()[0] == ("vacd not running: no cycle has run on <tmp>/state; "
                                   "configuration OK")
    assert out.count("never used; idle: no cycle has run yet") == 4
    assert "Shut down" not in out and "----" not in out


def test_a_rejected_configuration_shows_the_slots_from_the_state_directory(tmp_path, capsys):
    w = World(tmp_path, "xen")
    scene_rejected(w)
    w.release()
    code, out = w.run(capsys=capsys)
    lines = out.splitlines()
    assert code == 1
    assert lines[0].startswith("vacd not running: stopped after its last cycle")
    assert "configuration rejected: <tmp>/vac.conf:13 [machinetype beta] machine_model: " \
           "unknown machine_model 'xen'" in lines[0]
    assert [line.split()[0] for line in lines[3:7]] == SLOTS
    assert sum("Running" in line for line in lines[3:7]) == 2


def test_an_unreadable_configuration_uses_the_default_state_directory(tmp_path, capsys):
    conf = tmp_path / "bad.conf"
    conf.write_text("[settings]\nnot an option line\n")
    args = cli.build_parser().parse_args(["--config", str(conf), "slots", "--json"])
    assert slotscommand.slots_command(args, now=NOW) == 1
    view = json.loads(capsys.readouterr().out)
    assert view["vacd"]["state_dir"] == "/var/lib/vac"   # as vacd would (lock.state_dir_of)
    assert view["vacd"]["config_state"] == "rejected" and "cannot parse" in \
        view["vacd"]["config_error"]


def test_a_named_configuration_that_is_not_there_shows_no_state_directory(tmp_path, capsys):
    missing = str(tmp_path / "none.conf")
    args = cli.build_parser().parse_args(["--config", missing, "slots", "--json"])
    assert slotscommand.slots_command(args, now=NOW) == 1
    view = json.loads(capsys.readouterr().out)
    assert view["vacd"]["config_state"] == "missing" and view["slots"] == []
    assert view["vacd"]["running"] is None and view["vacd"]["state_dir"] is None
    assert view["vacd"]["text"] == ("vacd: no state directory known; configuration missing: "
                                    f"--config {missing}: no such file")


def test_a_host_not_configured_yet_shows_the_default_state_directory(monkeypatch, capsys):
    monkeypatch.setattr(slotscommand, "config_files", lambda explicit: [])
    args = cli.build_parser().parse_args(["slots", "--json"])
    assert slotscommand.slots_command(args, now=NOW) == 1
    vacd = json.loads(capsys.readouterr().out)["vacd"]
    assert vacd["config_state"] == "missing" and vacd["state_dir"] == "/var/lib/vac"
    assert "configuration missing: not configured yet: edit /etc/vac.conf (it does not exist)" \
        in vacd["text"]


def test_filters_by_machinetype_and_state(world, capsys):
    scene_failed(world)
    view = json.loads(world.run("--json", "--machinetype", "beta", capsys=capsys)[1])
    assert [r["name"] for r in view["slots"]] == [SLOTS[1], SLOTS[3]]
    view = json.loads(world.run("--json", "--state", "failed", "--state", "running",
                                capsys=capsys)[1])
    assert [(r["name"], r["state"]) for r in view["slots"]] == [
        (SLOTS[0], "Running"), (SLOTS[1], "Failed"), (SLOTS[3], "Failed")]
    assert view["totals"] == [
        {"machinetype": "alpha", "state": "Running", "slots": 1, "processors": 1},
        {"machinetype": "beta", "state": "Failed", "slots": 2, "processors": 1}]


def test_an_unknown_state_is_an_argument_error(world, capsys):
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["--config", world.conf, "slots", "--state", "busy"])
    assert e.value.code == 2


def test_json_has_epochs_numbers_null_and_the_reason_as_data(world, capsys):
    scene_backoff(world)
    rows = {r["name"]: r for r in json.loads(world.run("--json", capsys=capsys)[1])["slots"]}
    shut = rows[SLOTS[0]]
    assert shut["state"] == "Shut down" and shut["age"] == 890 and shut["started"] == NOW - 890
    assert shut["idle"]["kind"] == "backoff" and shut["idle"]["until"] == NOW + 600
    assert shut["idle"]["factory"] == "f2.example.com" and shut["idle"]["machinetype"] == "alpha"
    assert shut["ip"] is None and shut["image_version"] is None and shut["last_error"] is None
    assert "until 08:10:00 (abort on f2.example.com)" in shut["detail"]
    assert [p["machinetype"] for p in rows[SLOTS[1]]["idle"]["parts"]] == ["alpha", "beta"]
    assert rows[SLOTS[1]]["machinetype"] is None and rows[SLOTS[1]]["age"] is None


def test_main_runs_slots_through_the_subparser(world, capsys):
    scene_draining(world)
    assert cli.main(["--config", world.conf, "slots", "--totals"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("vacd running (pid 4242)")
    assert "DETAIL" not in out and "TOTALS" in out


def test_a_filter_that_matches_nothing_says_no_slots(world, capsys):
    scene_running(world)
    out = world.run("--state", "failed", capsys=capsys)[1]
    assert out.splitlines()[1:] == ["", "no slots"]
    assert world.run("--totals", "--machinetype", "nosuch", capsys=capsys)[1].splitlines()[1:] \
        == ["", "no slots"]
