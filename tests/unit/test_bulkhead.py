# SPDX-License-Identifier: BSD-2-Clause
"""One bad machine never stops the factory: the eight defects found by chaos, fuzz
and hostile-guest testing, each reproduced as it was found, and the bulkhead around every
per-machine step, on the fake backend."""
from __future__ import annotations

import json
import os
import time

import pytest
from fakeclock import Clock

from vac import cli, fsutil
from vac.accounting import store
from vac.backends.fake import FakeBackend
from vac.config import assemble
from vac.cycle.factory import Factory
from vac.errors import ConfigError, StateError
from vac.machine import removal
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record

SLOTS = ["f1-00.example.com", "f1-01.example.com", "f1-02.example.com"]


def _end(backend: FakeBackend, name: str, clock: Clock) -> None:
    """Make the fake machine in slot `name` stop now (its payload exits)."""
    machines = backend._load()
    machines[name]["run_seconds"] = max(0.0, clock.now - machines[name]["started"])
    backend._save(machines)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# 1. A directory as shutdown_message -------------------------------------------------------

def test_a_directory_as_shutdown_message_is_refused_and_replaced(make_factory, paths):
    factory, backend, clock = make_factory()
    assert len(factory.run_cycle().created) == 3
    bad = MachineDir.for_slot(paths, SLOTS[0])
    os.mkdir(bad.file("joboutputs/shutdown_message"))
    _end(backend, SLOTS[0], clock)
    fds = _open_fds()
    for _ in range(5):
        clock.now += 10
        report = factory.run_cycle()
        assert not [e for e in report.errors if "IsADirectory" in e]
    assert _open_fds() <= fds                       # no descriptor leaks, one per cycle
    assert bad.finished is not None
    assert bad.shutdown_message.startswith("700 Vac: machine's shutdown_message refused: "
                                           "is a directory")
    assert os.path.isdir(bad.file(f"joboutputs/shutdown_message.refused-{int(bad.finished)}"))


def test_reading_a_directory_closes_its_descriptor(tmp_path):
    fds = _open_fds()
    for _ in range(20):
        with pytest.raises(StateError, match="is a directory, not a regular file"):
            fsutil.read_bytes_nofollow(str(tmp_path))
    assert _open_fds() == fds


# 2. A kill inside MachineDir.create --------------------------------------------------------

@pytest.mark.parametrize("made", [(), ("machinefeatures", "jobfeatures")])
def test_a_directory_cut_short_in_create_is_finished_not_a_wedge(make_factory, paths, made):
    factory, backend, clock = make_factory()
    created = int(clock.now) - 100
    write_slot_record(paths, SLOTS[1], SlotRecord(created, "alpha", "fake"))
    path = paths.machine_dir(created, "alpha", SLOTS[1])
    os.makedirs(path)
    for sub in made:
        os.mkdir(os.path.join(path, sub))
    report = factory.run_cycle()
    assert report.errors == [] and report.destroyed == [SLOTS[1]]
    broken = MachineDir(path)
    assert broken.finished is not None
    assert broken.shutdown_message == "700 Vac could not finish creating the machine"
    # Like any failed creation: an abort, so alpha backs off (1000 s), then slots refill.
    assert "backoff" in report.idle[SLOTS[0]]
    clock.now += 1001
    assert factory.run_cycle().created != []


# 3. Expiry of a guest-made deep tree -------------------------------------------------------

def _deep_tree(top: str, depth: int) -> None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for level in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
        if level % 700 == 0:
            os.symlink("/etc", "etc", dir_fd=fd)
    os.close(fd)


def test_expiry_of_a_3000_level_tree_neither_halts_nor_flips_to_starting(make_factory, paths):
    factory, backend, clock = make_factory()
    factory.run_cycle()
    deep = MachineDir.for_slot(paths, SLOTS[2])
    _deep_tree(deep.file("joboutputs"), 3000)
    _end(backend, SLOTS[2], clock)
    clock.now += 10
    factory.run_cycle()
    assert deep.finished is not None
    clock.now += 4 * 86400                          # past machines_dir_days (3 days)
    for _ in range(3):
        report = factory.run_cycle()
        assert not [e for e in report.errors if "Recursion" in e], report.errors
        clock.now += 10
    assert not os.path.lexists(deep.path)
    assert not [n for n in os.listdir(paths.machines) if n.startswith(".removing-")]
    assert os.path.isdir("/etc")


def test_removal_is_bounded_and_resumes(tmp_path):
    top = tmp_path / "machines" / "1_alpha_f1-00.example.com"
    top.mkdir(parents=True)
    _deep_tree(str(top), 500)
    assert removal.remove_tree(str(top), budget=100) is False
    assert not top.exists()                                   # never half-visible
    assert removal.remove_retired(str(tmp_path / "machines")) > 0
    assert os.listdir(tmp_path / "machines") == []


# 4. NUL bytes in the configuration ----------------------------------------------------------

@pytest.mark.parametrize("extra", ["[settings]\nsingularity_user = a\0b\n",
                                   "[settings]\nstate_dir = /var/lib/v\0ac\n"
                                   "[vacuum_pipe p]\nvacuum_pipe_url = https://x.example/p\n"])
def test_a_nul_byte_is_a_located_config_error(tmp_path, host, extra, capsys):
    conf = tmp_path / "vac.conf"
    conf.write_text("[settings]\nvac_space = s.example.com\nfactory_name = f1.example.com\n"
                    + extra)
    with pytest.raises(ConfigError) as e:
        assemble.load_config([str(conf)], host, update=False, now=0.0)
    assert f"{conf} [settings] " in str(e.value) and "NUL byte" in str(e.value)
    assert cli.main(["--config", str(conf), "config", "check"]) == 1
    assert "NUL byte" in capsys.readouterr().err


def test_a_nul_byte_added_later_keeps_the_machines_managed(make_factory, paths, tmp_path):
    factory, backend, clock = make_factory()
    assert len(factory.run_cycle().created) == 3
    conf = tmp_path / "vac.conf"
    conf.write_text(conf.read_text().replace("[settings]", "[settings]\nsingularity_user = a\0b"))
    _end(backend, SLOTS[0], clock)
    clock.now += 10
    report = factory.run_cycle()
    assert "NUL byte" in report.config_error
    assert report.finished == [SLOTS[0]] and report.created == []


# 5. Unsafe or oversized shutdown_message ----------------------------------------------------

def _symlink_shadow(p):
    os.symlink("/etc/shadow", p)


def _symlink_relative(p):
    os.symlink("../user_data", p)


def _fifo(p):
    os.mkfifo(p)


def _sparse(p):
    with open(p, "wb") as f:
        f.truncate(2 * 1024 ** 3)


def _long_success(p):
    with open(p, "w") as f:
        f.write("200 Success\n" + "x" * 5000)


@pytest.mark.parametrize("make,why", [(_symlink_shadow, "symlink"), (_symlink_relative, "symlink"),
                                      (_fifo, "FIFO"), (_sparse, "larger than 4096"),
                                      (_long_success, "larger than 4096")])
def test_an_unsafe_shutdown_message_gets_a_coded_message_of_vacs(make_factory, paths, make,
                                                                 why):
    factory, backend, clock = make_factory()
    factory.run_cycle()
    bad = MachineDir.for_slot(paths, SLOTS[0])
    make(bad.file("joboutputs/shutdown_message"))
    _end(backend, SLOTS[0], clock)
    clock.now += 10
    started = time.monotonic()
    report = factory.run_cycle()
    assert time.monotonic() - started < 5           # nothing blocked on the FIFO or read 2 GB
    assert report.finished == [SLOTS[0]] and report.errors == []
    message = bad.shutdown_message
    assert message.startswith("700 Vac: machine's shutdown_message refused: ") and why in message
    # An abort: the machinetype backs off (backoff_seconds = 1000), so the slot stays idle.
    clock.now += 10
    assert factory.run_cycle().created == []
    with open("/etc/hostname") as f:                # still there, nothing followed
        assert f.read()


# 7. Non-finite numbers ------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_target_share_is_rejected(make_config, value):
    with pytest.raises(ConfigError, match="target_share"):
        make_config(f"""
            [settings]
            vac_space = s.example.com
            factory_name = f1.example.com
            [machinetype a]
            machine_model = fake
            target_share = {value}
            """)


def test_huge_pipe_shares_rescale_to_finite_values(tmp_path, paths, host):
    pipe = tmp_path / "p.pipe"
    pipe.write_text(json.dumps({"machinetypes": [
        {"suffix": "one", "target_share": 1e308, "machine_model": "fake"},
        {"suffix": "two", "target_share": 1e308, "machine_model": "fake"},
        {"suffix": "three", "target_share": 5e307, "machine_model": "fake"}]}))
    conf = tmp_path / "vac.conf"
    conf.write_text(f"[settings]\nstate_dir = {paths.state_dir}\nvac_space = s.example.com\n"
                    f"factory_name = f1.example.com\nenable_fake_backend = true\n"
                    f"[vacuum_pipe p]\nvacuum_pipe_url = file://{pipe}\ntarget_share = 5\n")
    config = assemble.load_config([str(conf)], host, update=True, now=time.time())
    shares = {n: mt.target_share for n, mt in config.machinetypes.items()}
    assert shares == pytest.approx({"p-one": 2.0, "p-two": 2.0, "p-three": 1.0})


def test_config_check_json_is_strict_json(make_factory, tmp_path, capsys):
    make_factory()
    conf = tmp_path / "vac.conf"
    assert cli.main(["--config", str(conf), "config", "check", "--json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c))


# 8. Temp files a killed atomic write left -----------------------------------------------------

def _half_written(files):
    for p in files:
        with open(p, "w") as f:
            f.write("half")


def _new_vacds_first_cycle(factory, clock):
    """A vacd started afresh on the same state (its first cycle sweeps every temp file)."""
    restarted = Factory(factory.load_config, factory.pool, clock=clock, loadavg=factory.loadavg)
    clock.now += 10
    restarted.run_cycle()


def test_a_new_vacd_sweeps_every_temp_file_at_once(make_factory, paths):
    factory, backend, clock = make_factory()
    factory.run_cycle()
    d = MachineDir.for_slot(paths, SLOTS[0])
    left = [os.path.join(paths.slots, ".tmp-abc123"), d.file("joboutputs/.tmp-k2j3h4")]
    _half_written(left)
    _new_vacds_first_cycle(factory, clock)
    assert [p for p in left if os.path.exists(p)] == []
    assert sorted(os.listdir(paths.slots)) == SLOTS


def test_a_new_vacd_sweeps_the_apel_directories_temp_files_too(make_factory, paths):
    """A vacd killed while writing an APEL record leaves a temp file in the archive's day
    directory or the pending spool; the next vacd's first cycle removes it, and nothing
    else there."""
    factory, backend, clock = make_factory()
    factory.run_cycle()
    day = os.path.join(paths.apel_archive, "20261207")
    pending = store.pending_dir(paths)
    for where in (day, pending):
        os.makedirs(where, exist_ok=True)
    left = [os.path.join(day, ".tmp-vr58ljvy"), os.path.join(pending, ".tmp-gr7uf6q3")]
    kept = [os.path.join(day, "12000000001234"), os.path.join(pending, "m.queued")]
    _half_written(left + kept)
    _new_vacds_first_cycle(factory, clock)
    assert [p for p in left if os.path.exists(p)] == []
    assert all(os.path.exists(p) for p in kept)


def test_old_temp_files_are_swept_and_young_ones_kept(make_factory, paths):
    factory, backend, clock = make_factory()
    factory.run_cycle()
    d = MachineDir.for_slot(paths, SLOTS[0])
    old = [os.path.join(paths.slots, ".tmp-abc123"), d.file(".tmp-k2j3h4"),
           d.file("jobfeatures/.tmp-zz9911"), os.path.join(paths.state_dir, ".tmp-0a0b0c")]
    young = d.file(".tmp-young1")
    for p in old + [young]:
        with open(p, "w") as f:
            f.write("half")
    for p in old:
        os.utime(p, (clock.now - 7200, clock.now - 7200))
    os.utime(young, (clock.now - 5, clock.now - 5))
    clock.now += 10
    factory.run_cycle()
    assert [p for p in old if os.path.exists(p)] == []
    assert os.path.exists(young)


# The bulkhead and its counts -------------------------------------------------------------------

class FlakyBackend(FakeBackend):
    """A backend with a bug: status() of one machine raises something not a VacError."""

    broken = ""

    def status(self, name, directory):
        if name == self.broken:
            raise RuntimeError("engine returned garbage")
        return super().status(name, directory)


def test_a_failing_machine_is_counted_and_the_rest_go_on(make_factory, paths, tmp_path,
                                                         capsys):
    factory, backend, clock = make_factory(backend_class=FlakyBackend)
    assert len(factory.run_cycle().created) == 3
    backend.broken = SLOTS[1]
    _end(backend, SLOTS[0], clock)
    for _ in range(3):
        clock.now += 10
        report = factory.run_cycle()
        assert any(e.startswith(f"{SLOTS[1]}: observation failed: RuntimeError") for e in
                   report.errors)
    assert MachineDir.for_slot(paths, SLOTS[0]).finished is not None     # others managed
    assert MachineDir.for_slot(paths, SLOTS[1]).finished is None          # left alone
    assert SLOTS[1] in backend._load()                                    # not a zombie
    conf = tmp_path / "vac.conf"
    assert cli.main(["--config", str(conf), "slots", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in out["slots"]}
    assert rows[SLOTS[1]]["errors"] == 3 and "garbage" in rows[SLOTS[1]]["last_error"]
    assert rows[SLOTS[2]]["errors"] == 0
    assert out["cycle"]["errors"] >= 1
    # A restarted vacd carries the count on.
    again = Factory(factory.load_config, factory.pool, clock=clock,
                    loadavg=factory.loadavg)
    clock.now += 10
    again.run_cycle()
    assert cli.main(["--config", str(conf), "slots", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["slots"]}
    assert rows[SLOTS[1]]["errors"] == 4


class CrashingCreateBackend(FakeBackend):
    """create() raises an OSError (disk full) for one slot."""

    def create(self, spec):
        if spec.name == SLOTS[0]:
            raise OSError(28, "No space left on device")
        return super().create(spec)


def test_a_creation_that_raises_anything_fails_only_its_slot(make_factory):
    factory, backend, clock = make_factory(backend_class=CrashingCreateBackend)
    report = factory.run_cycle()
    assert sorted(report.created) == SLOTS[1:]
    assert any(e.startswith(f"{SLOTS[0]}: creation failed: OSError") for e in report.errors)


# A creation cut short after the backend started the machine ------------------------------------

def test_a_machine_started_before_vacd_died_is_adopted_not_destroyed(make_factory, paths):
    factory, backend, clock = make_factory()
    factory.run_cycle()
    d = MachineDir.for_slot(paths, SLOTS[0])
    d.remove("started")                     # vacd was killed between create() and `started`
    d.remove("heartbeat")
    clock.now += 10
    report = factory.run_cycle()
    assert report.destroyed == [] and report.finished == [] and report.errors == []
    assert SLOTS[0] in backend._load()
    assert d.started == float(d.created) and d.exists("heartbeat")
    assert d.disk_state().value == "Running"
