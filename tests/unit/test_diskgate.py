# SPDX-License-Identifier: BSD-2-Clause
"""Admission by free disk space ("thin, but safe"; vac.cycle.diskgate and the planner with a
disk reading): creation stops while a watched filesystem has less free than its floor plus
what the machines' scratch may still grow into (divided by disk_overcommit), with a DISK idle
reason naming the filesystem and its figures; it resumes as soon as the space is back; each
planned container machine's scratch counts too; the running machines are managed whatever the
disk; no reading plans as before. The options' defaults and validation, the reading of the
host's filesystems (vac.host.diskspace) and the cycle's warning (vac.cycle.hostdisk)."""
from __future__ import annotations

import dataclasses
import logging
import os
import random

import pytest

from vac import planfile
from vac.cycle import diskgate, planner
from vac.cycle.hostdisk import HostDisk
from vac.errors import ConfigError
from vac.host import diskspace
from vac.host.diskspace import DiskReading, Filesystem, Scratch
from vac.machine.directory import MachineState
from vac.machine.observed import Observed
from vac.machine.slots import make_slots
from vac.space import censusdata

NOW = 1_700_000_000.0
GB = 10 ** 9
STATE = "/var/lib/vac"
CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 4
{settings}

[machinetype a]
machine_model = fake
target_share = 1
"""


FLOOR = "disk_floor_gb = 5\ndisk_floor_fraction = 0.05"


@pytest.fixture
def conf(make_config):
    return lambda settings=FLOOR: make_config(CONF.format(settings=settings))


def state_fs(free_gb: float, total_gb: float = 100.0, scratch: bool = True) -> Filesystem:
    return Filesystem(("state directory", "scratch pool"), STATE, int(free_gb * GB),
                      int(total_gb * GB), scratch=scratch)


def plan(config, disk=None, observed=None):
    observed = observed or [Observed(slot=s) for s in make_slots("f1.example.com", 4)]
    census = censusdata.local_census(observed, {}, config.machinetypes, NOW)
    return planner.plan(config, observed, census, load=0.0, now=NOW,
                        daemon_started=NOW - 100_000, rng=random.Random(1), disk=disk)


def test_defaults_and_no_reading_plans_as_before(conf):
    config = conf("")
    s = config.settings
    assert (s.disk_floor_gb, s.disk_floor_fraction, s.disk_overcommit) == (0.5, 0.02, 1.0)
    result = plan(config)
    assert len(result.creates) == 4 and result.disk_stop is None


def test_creation_stops_below_the_floor_with_a_reason_naming_the_filesystem(conf):
    result = plan(conf(), DiskReading((state_fs(3.0),)))
    assert result.creates == () and len(result.idle) == 4
    why = result.idle[0].why
    assert why.kind == planfile.DISK and why.resource == STATE and why.value == 3.0 * GB
    assert why.text == ("disk: state directory and scratch pool /var/lib/vac has 3.0 GB free "
                        "< 5.0 GB floor (disk_floor_gb 5, disk_floor_fraction 0.05 of "
                        "100.0 GB)")
    assert result.disk_stop == why
    assert result.disk["filesystems"][0]["free_bytes"] == 3 * GB   # for plan.json


def test_the_floor_is_the_larger_of_gb_and_fraction(conf):
    config = conf("disk_floor_gb = 1\ndisk_floor_fraction = 0.2")
    assert plan(config, DiskReading((state_fs(19.9),))).creates == ()   # 20% of 100 GB
    assert len(plan(config, DiskReading((state_fs(20.0),))).creates) == 4
    none = conf("disk_floor_gb = 0\ndisk_floor_fraction = 0")
    assert len(plan(none, DiskReading((state_fs(0.0),))).creates) == 4


def test_creation_resumes_as_soon_as_space_returns(conf):
    config = conf()
    assert plan(config, DiskReading((state_fs(4.9),))).creates == ()
    again = plan(config, DiskReading((state_fs(5.0),)))
    assert len(again.creates) == 4 and again.idle == () and again.disk_stop is None


def test_the_machines_growth_counts_on_the_scratch_filesystem_divided_by_overcommit(conf):
    grown = {"m1": Scratch(used=1 * GB, free=9 * GB), "m2": Scratch(used=0, free=6 * GB)}
    reading = DiskReading((state_fs(19.0),), grown)            # needs 5 + 15 GB
    stopped = plan(conf(), reading)
    assert stopped.creates == ()
    assert stopped.idle[0].why.text.endswith(
        "+ 15.0 GB the machines' scratch may grow into / disk_overcommit 1")
    assert len(plan(conf(FLOOR + "\ndisk_overcommit = 2"), reading).creates) == 4   # 5 + 7.5
    # The Docker data root on another filesystem needs its floor alone.
    docker = Filesystem(("Docker data root",), "/var/lib/docker", 6 * GB, 50 * GB)
    apart = DiskReading((state_fs(30.0), docker), grown)
    assert len(plan(conf(), apart).creates) == 4
    low = dataclasses.replace(docker, free=2 * GB)
    why = plan(conf(), DiskReading((state_fs(30.0), low), grown)).idle[0].why
    assert why.resource == "/var/lib/docker" and "Docker data root" in why.text


def test_every_short_filesystem_is_named(conf):
    docker = Filesystem(("Docker data root",), "/var/lib/docker", 1 * GB, 50 * GB)
    why = plan(conf(), DiskReading((state_fs(1.0), docker))).idle[0].why
    assert why.kind == planfile.DISK
    assert diskgate.short_filesystems(why) == [STATE, "/var/lib/docker"]


def test_each_planned_container_machine_counts_its_scratch(conf):
    config = conf(FLOOR + "\ndisk_gb_per_processor = 2")
    mt = dataclasses.replace(config.machinetypes["a"], machine_model="docker")
    config = dataclasses.replace(config, machinetypes={"a": mt})
    # 9.5 GB free: a 5 GB floor and room for two machines' 2 GB scratch, not a third.
    result = plan(config, DiskReading((state_fs(9.5),), scratch_made=True))
    assert len(result.creates) == 2 and len(result.idle) == 2
    why = result.idle[0].why
    assert why.kind == planfile.DISK and "+ 6.0 GB the machines' scratch" in why.text
    assert result.disk_stop == why
    # A host that gives containers no scratch: nothing to count for them.
    assert len(plan(config, DiskReading((state_fs(9.5),))).creates) == 4


def test_a_full_disk_never_stops_the_management_of_running_machines(conf):
    slots = make_slots("f1.example.com", 4)
    running = Observed(slot=slots[0], machinetype="a", model="fake",
                       state=MachineState.RUNNING, created=int(NOW) - 500,
                       started=NOW - 500, cpu_seconds=10.0, shutdown_time=int(NOW) + 1000)
    late = dataclasses.replace(running, slot=slots[1], shutdown_time=int(NOW) - 1)
    done = Observed(slot=slots[2], machinetype="a", model="fake", state=MachineState.SHUTDOWN,
                    created=int(NOW) - 900)
    result = plan(conf(), DiskReading((state_fs(0.0),)),
                  [running, late, done, Observed(slot=slots[3])])
    assert slots[0].name in [h.name for h in result.heartbeats]
    assert [d.name for d in result.destroys] == [slots[1].name]
    assert [f.name for f in result.finishes] == [slots[2].name]
    assert result.creates == () and {i.why.kind for i in result.idle} == {planfile.DISK}


@pytest.mark.parametrize("setting", ["disk_floor_gb = -1", "disk_floor_fraction = 1",
                                     "disk_floor_fraction = -0.1", "disk_overcommit = 0.5",
                                     "disk_overcommit = nan"])
def test_bad_values_are_rejected_by_name(make_config, setting):
    with pytest.raises(ConfigError) as caught:
        make_config(CONF.format(settings=setting))
    assert setting.split()[0] in str(caught.value)


def test_the_disk_reason_in_plan_json(tmp_path):
    why = planfile.IdleReason(planfile.DISK, "disk: ...", resource=STATE, value=3e9)
    path = str(tmp_path / "plan.json")
    planfile.write(path, planfile.PlanRecord(time=NOW, idle={"s1": why}))
    assert planfile.read(path).idle["s1"] == why


# The reading (vac.host.diskspace) -----------------------------------------------------------

class _Vfs:
    def __init__(self, blocks, bfree, bavail, frsize=4096):
        self.f_blocks, self.f_bfree, self.f_bavail, self.f_frsize = blocks, bfree, bavail, frsize


def test_reading_groups_places_by_filesystem_and_reads_each_scratch(tmp_path):
    state = str(tmp_path / "vac")
    pool = os.path.join(state, "scratch")
    os.makedirs(pool)
    devices = {state: 1, pool: 1, "/docker": 2}
    sizes = {state: _Vfs(1000, 400, 300), "/docker": _Vfs(2000, 100, 50),
             pool: _Vfs(1000, 400, 300), pool + "/m1": _Vfs(100, 60, 60)}

    def stat(path):
        if path not in devices:
            raise FileNotFoundError(2, "No such file or directory")
        return os.stat_result((0, 0, devices[path], 0, 0, 0, 0, 0, 0, 0))

    mounts = ["/", pool + "/m1", pool + "/.trial-1", pool + "/m1/deeper", "/elsewhere/m2"]
    got = diskspace.read(state, pool, mounts, [("docker data root", "/docker")], True,
                         statvfs=sizes.__getitem__, stat=stat)
    assert [(f.names, f.path, f.free, f.total, f.scratch) for f in got.filesystems] == [
        (("state directory", "scratch pool"), state, 300 * 4096, 1000 * 4096, True),
        (("docker data root",), "/docker", 50 * 4096, 2000 * 4096, False)]
    assert got.scratches == {"m1": Scratch(40 * 4096, 60 * 4096)}
    assert got.growth() == 60 * 4096 and got.scratch_made and got.problems == ()
    missing = diskspace.read(state, pool, [], [("docker data root", "/gone")],
                             statvfs=sizes.__getitem__, stat=stat)
    assert [f.path for f in missing.filesystems] == [state]
    assert missing.problems == ("docker data root /gone: No such file or directory",)


def test_host_disk_warns_once_when_creation_stops_and_says_when_it_resumes(conf, caplog):
    short = DiskReading((state_fs(1.0),))
    readings = [short, short, DiskReading((state_fs(50.0),))]
    disk = HostDisk(lambda config, pool, roots: readings.pop(0))
    config = conf()
    caplog.set_level(logging.INFO, logger="vac.cycle.hostdisk")
    for _ in range(3):
        disk.kept(plan(config, **disk.inputs(config, None)))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and said[0].startswith("creation stops for free disk space: disk: ")
    assert said[1].startswith("creation resumes")


def test_host_disk_that_cannot_read_gives_no_reading(conf, caplog):
    def broken(config, pool, roots):
        raise OSError(5, "Input/output error")
    disk = HostDisk(broken)
    assert disk.inputs(conf(), None) == {"disk": None}
    assert HostDisk.beside(False).inputs(conf(), None) == {"disk": None}
