# SPDX-License-Identifier: BSD-2-Clause
"""Switching from and rolling back to Vac 03: the files both read.

- The per-machine heartbeat holds whole CPU seconds: the original parses its first field with
  int() (a float would read as 0) and the second with float().
- Vac 03.00.02's pipe cache (named by the URL-quoted URL) is read while ours is missing.
- Rollback: after cycles on the fake backend, every file the original reads back (slot records,
  started, heartbeat, finished, finishes/, MJF keys, shutdown_message) parses the way its
  VacSlot and its finishes/ update parse them (the state tree, the machine states and MJF;
  read with the original's rules: split on single spaces, int() of stripped MJF values, ctime
  of marker files).
"""
from __future__ import annotations

import json
import os
import random
import urllib.parse

import pytest
from fakeclock import Clock

from vac.backends.fake import FakeBackend
from vac.config import load, model, pipes
from vac.cycle.backendpool import BackendPool
from vac.cycle.factory import Factory
from vac.machine.directory import MachineDir

NOW = 1_700_000_000.0
URL = "https://pipes.example.org/vac/p.pipe"
GOOD = {"cache_seconds": 3600,
        "machinetypes": [{"suffix": "a", "target_share": 1, "backoff_seconds": 111}]}
OURS = {"cache_seconds": 3600,
        "machinetypes": [{"suffix": "a", "target_share": 1, "backoff_seconds": 333}]}
NEWER = {"cache_seconds": 3600,
         "machinetypes": [{"suffix": "a", "target_share": 1, "backoff_seconds": 222}]}


def original_heartbeat(text: str):
    """(cpu seconds, cpu %) as Vac 03 reads its heartbeat file's first line."""
    line = text.splitlines(True)[0] if text else ""
    try:
        cpu = int(line.split(" ")[0])
    except ValueError:
        return 0, 0
    try:
        percent = float(line.split(" ")[1])
    except (IndexError, ValueError):
        percent = 0
    return cpu, percent


# ---- heartbeat -----------------------------------------------------------------------------

@pytest.fixture
def machine(tmp_path) -> MachineDir:
    d = MachineDir(str(tmp_path / "1700000000_alpha_f1-00.example.com"))
    os.makedirs(d.path)
    return d


def test_heartbeat_cpu_seconds_are_whole_and_the_original_reads_them(machine):
    machine.write("heartbeat", "0.0 0.0", mtime=NOW - 100)      # what creation writes
    machine.write_heartbeat(37.9, NOW)
    assert machine.read("heartbeat") == "37 37.0\n"
    assert original_heartbeat(machine.read("heartbeat")) == (37, 37.0)
    machine.write_heartbeat(88.2, NOW + 50)
    assert original_heartbeat(machine.read("heartbeat")) == (88, 102.0)
    assert machine.cpu_seconds == 88.0 and machine.heartbeat_time == NOW + 50


def test_first_heartbeat_without_a_previous_one_has_no_percentage(machine):
    machine.write_heartbeat(5.5, NOW)
    assert machine.read("heartbeat") == "5\n"
    assert original_heartbeat(machine.read("heartbeat")) == (5, 0)


def test_the_original_reads_a_float_heartbeat_as_zero():
    """Why the heartbeat must be whole seconds: the rollback failure this prevents."""
    assert original_heartbeat("12.5 3.0\n") == (0, 0)


# ---- the 03.00.02 pipe cache ---------------------------------------------------------------

def _section():
    return model.PipeSection(prefix="p", url=URL, target_share=1.0, options={},
                             origin="vac.conf [vacuum_pipe p]")


class Fetcher:
    def __init__(self, body):
        self.body, self.calls = body, []

    def __call__(self, url, *, timeout, max_bytes):
        self.calls.append(url)
        return json.dumps(self.body).encode()


def _write(path: str, body: dict, mtime: float) -> None:
    with open(path, "w") as f:
        json.dump(body, f)
    os.utime(path, (mtime, mtime))


def _backoff(result) -> str:
    return result.values["p-a"]["backoff_seconds"][0]


def test_a_fresh_03_00_02_cache_is_used_without_fetching(paths):
    legacy = os.path.join(paths.pipescache, urllib.parse.quote(URL, safe=""))
    assert pipes.legacy_cache_path(paths, URL) == legacy
    _write(legacy, GOOD, NOW - 60)
    fetcher = Fetcher(NEWER)
    result = pipes.load_pipes([_section()], paths, update=True, now=NOW, fetcher=fetcher)
    assert fetcher.calls == [] and _backoff(result) == "111" and result.errors == ()
    result = pipes.load_pipes([_section()], paths, update=False, now=NOW, fetcher=fetcher)
    assert _backoff(result) == "111"


def test_a_stale_03_00_02_cache_is_refetched_into_ours_and_kept(paths):
    legacy = pipes.legacy_cache_path(paths, URL)
    _write(legacy, GOOD, NOW - 7200)
    fetcher = Fetcher(NEWER)
    result = pipes.load_pipes([_section()], paths, update=True, now=NOW, fetcher=fetcher)
    assert fetcher.calls == [URL] and _backoff(result) == "222"
    assert sorted(os.listdir(paths.pipescache)) == sorted(["p.pipe", os.path.basename(legacy)])
    with open(legacy) as f:
        assert json.load(f) == GOOD                  # left for a rollback to 03.00.02


def test_our_cache_wins_over_the_03_00_02_one(paths):
    _write(pipes.legacy_cache_path(paths, URL), GOOD, NOW - 60)
    _write(paths.pipe_cache("p"), OURS, NOW - 60)
    result = pipes.load_pipes([_section()], paths, update=True, now=NOW, fetcher=Fetcher(NEWER))
    assert _backoff(result) == "333"


def test_an_03_00_02_cache_of_an_overlong_url_is_not_looked_for(paths):
    assert pipes.legacy_cache_path(paths, "https://x.example.org/" + "a" * 300) is None


# ---- rollback: what the original reads of a factory we ran --------------------------------

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
state_dir = {state}
enable_fake_backend = true
overload_per_processor = 100
hs06_per_processor = 10.5

[machinetype alpha]
machine_model = fake
target_share = 1
fizzle_seconds = 100
max_wallclock_seconds = 5000
fake_run_seconds = 300
fake_shutdown_message = 200 Success
"""


def _run_factory(tmp_path, paths, host) -> None:
    conf = tmp_path / "vac.conf"
    conf.write_text(CONF.format(state=paths.state_dir))

    def config():
        return load.build(load.read_raw([str(conf)]), host)

    clock = Clock()
    settings = config().settings
    pool = BackendPool(settings, {"fake": FakeBackend(settings, clock=clock)})
    factory = Factory(config, pool, clock=clock, loadavg=lambda: (0.0, 0.0, 0.0),
                      rng=random.Random(1))
    for _ in range(5):                  # create, 100 s heartbeats, finish at 300 s, refill
        factory.run_cycle()
        clock.now += 100


def _int_file(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def _original_slot(paths, name: str):
    """What Vac 03's VacSlot reads of one slot (state, created, machinetype, numbers)."""
    with open(paths.slot_record(name)) as f:
        created_text, machinetype, model_name = f.read().split()
    d = os.path.join(paths.machines, f"{int(created_text)}_{machinetype}_{name}")
    assert os.path.isdir(d)
    read = {"created": int(created_text), "model": model_name, "dir": d,
            "started": int(os.stat(os.path.join(d, "started")).st_ctime),
            "heartbeat": int(os.stat(os.path.join(d, "heartbeat")).st_ctime),
            "finished": os.path.exists(os.path.join(d, "finished"))}
    for key in ("allocated_cpu", "shutdowntime_job", "max_rss_bytes", "jobstart_secs",
                "wall_limit_secs", "cpu_limit_secs", "mem_limit_MB"):
        read[key] = _int_file(os.path.join(d, "jobfeatures", key))
    for key in ("total_cpu", "shutdowntime", "jobslots"):
        read[key] = _int_file(os.path.join(d, "machinefeatures", key))
    with open(os.path.join(d, "machinefeatures", "hs06")) as f:
        read["hs06"] = float(f.read().strip())
    with open(os.path.join(d, "jobfeatures", "job_id")) as f:
        read["uuid"] = f.read().strip()
    with open(os.path.join(d, "heartbeat")) as f:
        read["cpu"], read["cpu_percent"] = original_heartbeat(f.read())
    return read


def test_rollback_the_original_parses_our_files(tmp_path, paths, host):
    _run_factory(tmp_path, paths, host)
    names = [f"f1-{i:02d}.example.com" for i in range(host.processors)]
    for name in names:
        slot = _original_slot(paths, name)
        assert slot["model"] == "fake" and slot["allocated_cpu"] == 1 == slot["total_cpu"]
        assert slot["jobslots"] == 1 and slot["hs06"] == 10.5
        assert slot["shutdowntime_job"] == slot["shutdowntime"] == slot["created"] + 5000
        assert slot["cpu_limit_secs"] == slot["wall_limit_secs"] > 0
        assert slot["max_rss_bytes"] > 0 and len(slot["uuid"]) == 36
        assert not slot["finished"]                  # the refilled machines run on
    finished = [MachineDir(os.path.join(paths.machines, e)) for e in os.listdir(paths.machines)]
    finished = [d for d in finished if d.exists("finished")]
    assert len(finished) == host.processors
    for d in finished:
        with open(d.file("finished")) as f:
            assert f.read() == ""
        with open(d.file("heartbeat")) as f:
            cpu, _ = original_heartbeat(f.read())
        assert cpu == 150                            # 0.5 CPU s/s for 300 s, whole seconds
        with open(d.file("joboutputs/shutdown_message")) as f:
            assert f.read().strip() == "200 Success"
    with open(os.path.join(paths.finishes, "alpha")) as f:
        created, machinetype, name = f.read().split(" ")
    newest = max(finished, key=lambda d: (d.created, d.name))
    assert (int(created), machinetype, name) == (newest.created, "alpha", newest.name)
