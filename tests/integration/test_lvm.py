# SPDX-License-Identifier: BSD-2-Clause
"""LVM for real: container machines' /scratch on thin LVs through factory cycles on Docker.

These need a kernel with device-mapper and lvm2 (with thin-provisioning-tools): the cgroup v2
guest (scripts/ci/build-v2-guest.sh; scripts/ci/run-v2-tests.sh runs them there with
VAC_V2_GUEST=1 and CI=true, where a host without them is a failure). Elsewhere (the CI host's
kernel has no device-mapper) they skip, saying why.

A loop-backed PV holds a volume group of this run's own, with a thin pool named vac_thin_pool
(made by the test, as an admin would: Vac never makes one). Then, each factory of its own name:
every machine's /scratch is a thin LV of the pool named as its machine directory, mounted at
the pool's mount point; a payload that writes past its limit gets ENOSPC there and ends with
its own message while its neighbour keeps running; finishing the machine removes its LV;
leftover LVs of the factory (a slot's name, as the original Vac and VMs name them, and a
machine directory's, one of them mounted elsewhere) are removed by the next cycle and another
factory's and the admin's are not; a restarted vacd (a new Factory) adopts a running machine
and keeps its LV, and removes it when that machine finishes; `vac doctor` proves the mechanism
with a trial LV filled to ENOSPC.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest
from docker_engine import engine_ready
from dockerfactory import DockerFactory, machine_dirs
from loopvg import loop_volume_group, require_lvm, run, volumes
from scratchpool import remove_pool
from waiting import wait_until

from vac.cycle.factory import Factory
from vac.host import lvm
from vac.host.facts import HostFacts, volume_group_exists
from vac.machine import scratch

pytestmark = [pytest.mark.root, pytest.mark.docker]

GB = 10 ** 9
POOL = lvm.POOL_NAME

# Slot 00 fills its scratch; the others write a little and run until told to stop.
FILL = r"""#!/bin/sh
cd "$JOBOUTPUTS"
case "$(hostname)" in
  *-00.*)
    if dd if=/dev/zero of=/scratch/fill bs=1M count=1500 2> dd.err; then
      echo "500 payload: the scratch took 1500 MB" > shutdown_message; exit 1
    fi
    grep -q "No space left on device" dd.err && \
      echo "200 payload: scratch of $(cat /etc/jobfeatures/scratch_limit_bytes) bytes full" \
      > shutdown_message
    exit 0 ;;
esac
echo mine > /scratch/mine
while [ ! -e /scratch/stop ]; do sleep 1; done
echo "200 payload: told to stop" > shutdown_message
"""
SLEEP = FILL.replace("*-00.*)", "*-no-such-slot.*)")


# The volume group (made as an admin would) ----------------------------------------------------

@pytest.fixture(scope="module")
def vg():
    require_lvm("tests/integration/test_lvm.py")
    # 5 GB: admission by free disk counts the pool's free data against its floor plus
    # the room of every thin volume in it (the others' the leftover test keeps, too).
    with loop_volume_group(pv_gib=6, pool="5g") as name:
        yield name


def _thin(vg: str, name: str, size: str = "16m") -> None:
    run(["lvcreate", "--yes", "--type", "thin", "--virtualsize", size, "--name", name,
         f"{vg}/{POOL}"])


@pytest.fixture
def host() -> HostFacts:
    """The host's facts with LVM's own volume group check (this module's VG is real)."""
    return HostFacts(fqdn="lvm.example.com", processors=4,
                     uid_of={"vacsngly": 990, "root": 0}.get, vg_exists=volume_group_exists)


@pytest.fixture
def dock(vg, make_config):
    """A Docker factory whose state directory is on /var/tmp, beside the PV's file: the
    guest's /tmp is a small tmpfs, and admission by free disk counts each machine's scratch
    against the state directory's file system."""
    engine_ready()
    top = tempfile.mkdtemp(prefix="vac-lvm-", dir="/var/tmp")
    world = DockerFactory(pathlib.Path(top), make_config)
    yield world
    world.remove_all()
    remove_pool(world.state)
    shutil.rmtree(top, ignore_errors=True)


def _write(world: DockerFactory, vg: str, slots: int, payload: str = SLEEP) -> None:
    """512 MB per machine: writing 1 GB through the page cache at DockerFactory's 64 MB was
    OOM-killed in the guest (cgroup v2 charges the dirty pages, and writeback under TCG is
    slow), which is not what these tests are about."""
    world.write(payload, slots=slots, mb=512, extra_settings=f"volume_group = {vg}",
                extra_mt="disk_gb_per_processor = 1")


def _lv_of(vg: str, directory) -> lvm.Volume:
    found = {v.name: v for v in lvm.read_group(vg).listed}
    return found.get(os.path.basename(directory.path))


def _mounted_on_its_lv(vg: str, state: str, directory) -> bool:
    name = os.path.basename(directory.path)
    try:
        device = os.stat(lvm.device(vg, name)).st_rdev
    except OSError:
        return False
    return scratch.mounts_of(device) == [scratch.mount_point(state, name)]


# The tests ------------------------------------------------------------------------------------

def test_a_filled_thin_scratch_ends_its_machine_alone_and_finish_removes_its_volume(dock, vg):
    _write(dock, vg, 2, FILL)
    first = dock.cycle()
    names = dock.slots(2)
    assert sorted(first.created) == names and first.errors == []
    filler, neighbour = dock.dir(names[0]), dock.dir(names[1])
    for d in (filler, neighbour):
        volume = _lv_of(vg, d)
        assert volume is not None and volume.segtype == "thin" and volume.pool == POOL
        assert volume.size >= GB and _mounted_on_its_lv(vg, dock.state, d)
        assert d.read(scratch.MJF_KEY) == str(GB)
    assert wait_until(lambda: dock.containers()[names[0]]["State"] == "exited"), \
        dock.containers()
    report = dock.cycle()
    assert report.finished == [names[0]] and report.errors == []
    assert filler.shutdown_message == f"200 payload: scratch of {GB} bytes full"
    assert _lv_of(vg, filler) is None
    assert not os.path.exists(scratch.mount_point(dock.state, os.path.basename(filler.path)))
    assert dock.containers()[names[1]]["State"] == "running"       # the neighbour untouched
    assert _mounted_on_its_lv(vg, dock.state, neighbour)
    with open(os.path.join(scratch.mount_point(dock.state, os.path.basename(neighbour.path)),
                           "mine")) as f:
        assert f.read() == "mine\n"
    group = lvm.read_group(vg)
    assert group.pool_free(POOL) > GB            # the filler's blocks went back to the pool


def test_leftover_volumes_of_this_factory_go_and_no_others(dock, vg, tmp_path):
    _write(dock, vg, 1)
    assert dock.cycle().created == dock.slots(1)          # a container lives in slot 00
    host, _, domain = dock.name.partition(".")
    slot_name = f"{host}-00.{domain}"          # the original's name for slot 00's machine
    dir_name = f"1000000000_dock_{host}-05.{domain}"       # a machine directory's, gone
    others = [f"x{host}-00.{domain}", f"{host}-00.other.org", "admins_volume",
              f"1000000000_dock_{host}x-05.{domain}"]
    for name in [slot_name, dir_name] + others:
        _thin(vg, name)
    run(["mkfs.ext4", "-q", lvm.device(vg, slot_name)])
    elsewhere = tmp_path / "mnt"                 # where the original mounted a container's
    elsewhere.mkdir()
    run(["mount", lvm.device(vg, slot_name), str(elsewhere)])
    report = dock.cycle()
    assert report.errors == []
    left = set(volumes(vg))
    assert slot_name not in left and dir_name not in left
    assert set(others) <= left and POOL in left
    assert not os.path.ismount(str(elsewhere))
    [machine] = machine_dirs(dock)
    assert _lv_of(vg, machine) is not None and _mounted_on_its_lv(vg, dock.state, machine)
    for name in others:
        run(["lvremove", "--yes", f"{vg}/{name}"])


def test_a_restarted_vacd_adopts_a_running_machine_and_keeps_its_volume(dock, vg):
    _write(dock, vg, 1)
    [name] = names = dock.slots(1)
    assert dock.cycle().created == names
    neighbour = dock.dir(name)
    area = scratch.mount_point(dock.state, os.path.basename(neighbour.path))
    assert wait_until(lambda: os.path.exists(os.path.join(area, "mine")))
    restarted = Factory(dock.load)                          # a vacd started afresh
    report = restarted.run_cycle()
    assert report.errors == [] and report.created == [] and report.finished == []
    assert dock.dir(name).path == neighbour.path                 # the same machine, adopted
    assert _lv_of(vg, neighbour) is not None and _mounted_on_its_lv(vg, dock.state, neighbour)
    assert dock.containers()[name]["State"] == "running"
    with open(os.path.join(area, "stop"), "w"):
        pass
    assert wait_until(lambda: dock.containers()[name]["State"] == "exited")
    assert wait_until(lambda: name in restarted.run_cycle().finished)
    assert neighbour.shutdown_message == "200 payload: told to stop"
    assert _lv_of(vg, neighbour) is None and not os.path.exists(area)


def test_doctor_proves_the_thin_volumes_with_a_trial(dock, vg):
    from vac.ops import scratchcheck

    _write(dock, vg, 1)
    config = dock.load()
    [line] = scratchcheck.host_scratch(config.settings,
                                       {"docker": list(config.machinetypes.values())})
    assert line.status == "ok", line.detail
    assert line.detail.startswith(f"lvm-thin: an ext4 filesystem on a thin LV per machine in "
                                  f"{vg}/{POOL}; trial filled to ENOSPC; thin pool")
    assert not [v for v in volumes(vg) if v.startswith(".trial")]
