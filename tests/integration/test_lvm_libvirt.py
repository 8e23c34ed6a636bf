# SPDX-License-Identifier: BSD-2-Clause
"""LVM for real for VMs: a vm-raw VM's scratch disk is a logical volume of volume_group, on a
real libvirtd + QEMU, booting the Vac test guest through factory cycles (issue 29).

These need device-mapper and lvm2 beside libvirtd: the cgroup v2 guest (its kernel has
device-mapper; scripts/ci/build-v2-guest.sh installs libvirtd and QEMU there, and
scripts/ci/run-v2-tests.sh brings the test VM guest along), where the VMs run under QEMU's
TCG inside the guest's own TCG. Elsewhere (the CI host's kernel has no device-mapper) they
skip, saying why.

With a thin pool named vac_thin_pool in the group, a VM's scratch disk is a thin volume of
the pool named as its slot (the original Vac's name), the disk the domain has and the size
jobfeatures/scratch_limit_bytes says. While it boots, a restarted vacd (a new Factory) adopts
it and keeps its volume, and removes this factory's leftover volumes (a slot's name no
machine holds) and no one else's. Its payload writes past the disk's end and gets ENOSPC; the
bytes the pool gave its volume are its scratch bytes (heartbeat, `vac slots`) on the way; it
ends with its own message, and finishing it removes its volume. Without a thin pool the
scratch disk is a thick volume of the size asked for (no scratch bytes: all of it is the
VM's), removed when its machine is finished. One VM boots (about 4 minutes there); the other
tests need none.
"""
from __future__ import annotations

import os
import time
from typing import Optional

import pytest
from loopvg import loop_volume_group, require_lvm, run, volumes
from waiting import wait_until

from vac.cycle.factory import Factory
from vac.host import lvm
from vac.machine import scratch
from vac.slotview import slot_rows

pytestmark = [pytest.mark.root, pytest.mark.libvirt]

GB = 10 ** 9
MIB = 1024 * 1024
POOL = lvm.POOL_NAME
HERE = "tests/integration/test_lvm_libvirt.py"

# The payload finds its scratch disk by the size the MJF gives, writes 16 MiB from 4 MiB
# before its end and says how dd ended, with its own message. Then it stays until vacd ends it
# (the test reads its scratch bytes meanwhile): /init would send its joboutputs only once it
# ended, so it sends them itself, on the console, as /init does.
FILL = r"""#!/bin/sh
out=$JOBOUTPUTS_DIR
limit=$(cat "$JOBFEATURES/scratch_limit_bytes")
dev=""
for d in /sys/block/vd*; do
  [ $(( $(cat "$d/size") * 512 )) = "$limit" ] && dev=/dev/${d##*/}
done
[ -n "$dev" ] || { echo "500 no disk of $limit bytes" > "$out/shutdown_message"; exit 1; }
dd if=/dev/zero of="$dev" bs=1M seek=$(( limit / 1048576 - 4 )) count=16 2> "$out/dd.err"
sync
grep -q "No space left on device" "$out/dd.err" && \
  echo "200 payload: scratch disk $dev of $limit bytes full" > "$out/shutdown_message"
for f in dd.err shutdown_message; do
  [ -f "$out/$f" ] && echo "VAC-JOBOUTPUT $f $(base64 -w 0 "$out/$f")"
done
exec sleep 100000
"""
# A VM under TCG inside the guest's TCG: the test guest's kernel alone takes about 4 minutes
# to reach its /init there (4 s on the host), so its deadlines are this, not GENEROUS.
NESTED = 1800


@pytest.fixture(scope="module")
def thin_vg():
    require_lvm(HERE)
    with loop_volume_group(pv_gib=4, pool="3g") as name:
        yield name


@pytest.fixture(scope="module")
def thick_vg():
    require_lvm(HERE)
    with loop_volume_group(pv_gib=2, pool=None) as name:
        yield name


def _volume(vg: str, name: str) -> Optional[lvm.Volume]:
    return {v.name: v for v in lvm.read_group(vg).listed}.get(name)


def _disk_of_domain(lv, name: str, device: str) -> bool:
    dom = lv.domains().get(name)
    return dom is not None and f"<source dev='{device}'" in dom.XMLDesc(0)


def _size(vg: str) -> int:
    """1 GB rounded down to the group's whole extents, as Vac sizes a volume."""
    return GB // lvm.read_group(vg).extent * lvm.read_group(vg).extent


def _created(lv, vg: str, name: str, segtype: str, pool: str) -> lvm.Volume:
    """One cycle creates the VM `name` (the FILL payload): its scratch disk is a volume of
    `vg` of this type (in this pool), named as its slot, of 1 GB in whole extents, the disk
    its domain has, and the size the MJF says."""
    lv.write(FILL, disk_gb=1, volume_group=vg)
    report = lv.cycle()
    assert report.created == [name] and report.errors == [], report
    volume = _volume(vg, name)
    assert volume is not None and (volume.segtype, volume.pool) == (segtype, pool), volume
    assert volume.size == _size(vg)
    assert _disk_of_domain(lv, name, lvm.device(vg, name))
    assert lv.dir(name).read(scratch.MJF_KEY) == str(volume.size)
    return volume


def _seen(lv, name: str) -> str:
    """The VM's console and machine files, for a failure's message."""
    d = lv.dir(name)
    return (f"console: {lv.console(name)[-3000:]!r}; heartbeat: {d.read('heartbeat')!r}; "
            f"joboutputs: {sorted(os.listdir(d.file('joboutputs')))}")


def test_a_vms_thin_scratch_volume_adopted_filled_measured_and_removed(lv, thin_vg):
    name = lv.slot(0)
    volume = _created(lv, thin_vg, name, "thin", POOL)
    d = lv.dir(name)

    # While it boots, a restarted vacd adopts it and keeps its volume, and removes this
    # factory's leftover (a slot's name no machine holds, as the original Vac left them) and
    # no one else's.
    host, _, domain = lv.name.partition(".")
    leftover = f"{host}-05.{domain}"
    others = [f"x{host}-05.{domain}", f"{host}-05.other.org", "admins_volume"]
    for other in [leftover] + others:
        run(["lvcreate", "--yes", "--type", "thin", "--virtualsize", "16m", "--name", other,
             f"{thin_vg}/{POOL}"])
    lv.write(FILL, disk_gb=1, volume_group=thin_vg, draining=True)
    restarted = Factory(lv.load)
    reports = [restarted.run_cycle()]
    assert reports[0].errors == [] and reports[0].created == [] and \
        reports[0].finished == [], reports[0]
    left = set(volumes(thin_vg))
    assert leftover not in left and set(others) <= left and name in left, left
    assert _disk_of_domain(lv, name, lvm.device(thin_vg, name))
    for other in others:
        run(["lvremove", "--yes", f"{thin_vg}/{other}"])

    # Its payload writes past the end: the bytes the pool gave its volume are its scratch
    # bytes on the way (heartbeat, `vac slots`). No cycles while it boots: each is a second
    # or more of the guest's one emulated CPU, which the VM's emulation needs.
    assert wait_until(lambda: "VAC-GUEST: payload start" in lv.console(name), timeout=NESTED,
                      step=5), _seen(lv, name)

    # dd wrote 4 MiB before the end; LVM says what the pool gave the volume as a percentage
    # of its size to two decimals, so to within 0.01 % of its size.
    def written():
        reports.append(restarted.run_cycle())
        assert name not in reports[-1].finished, _seen(lv, name)
        return (d.scratch_bytes or 0) >= 4 * MIB - volume.size // 10000

    assert wait_until(written, timeout=NESTED, step=2), _seen(lv, name)
    rows = {r["name"]: r for r in slot_rows(lv.load(), time.time())}
    assert rows[name]["scratch_bytes"] == d.scratch_bytes <= 16 * MIB, rows[name]

    # Ended by the site's shutdown time, it is finished with its own message, and its
    # volume removed.
    assert wait_until(lambda: "VAC-JOBOUTPUT shutdown_message" in lv.console(name),
                      timeout=NESTED, step=5), _seen(lv, name)
    lv.write(FILL, disk_gb=1, volume_group=thin_vg, draining=True,
             shutdown_time=int(time.time()))

    def finished():
        reports.append(restarted.run_cycle())
        return name in reports[-1].finished

    assert wait_until(finished, timeout=NESTED, step=2), _seen(lv, name)
    assert [r for r in reports if r.errors] == []
    assert "No space left on device" in (d.read("joboutputs/dd.err") or ""), _seen(lv, name)
    message = d.shutdown_message or ""
    assert message.startswith("200 payload: scratch disk /dev/vd") and \
        message.endswith(f" of {volume.size} bytes full"), _seen(lv, name)
    assert _volume(thin_vg, name) is None and name not in lv.domains()


def test_without_a_thin_pool_a_vms_scratch_is_a_thick_volume_removed_at_finish(lv, thick_vg):
    """No boot needed: the VM is ended by the site's shutdown time once its volume is seen."""
    name = lv.slot(0)
    _created(lv, thick_vg, name, "linear", "")
    assert lv.dir(name).scratch_bytes is None       # all of it the VM's: nothing to measure
    lv.write(FILL, disk_gb=1, volume_group=thick_vg, draining=True,
             shutdown_time=int(time.time()))
    lv.cycle_until_finished(name, timeout=NESTED)
    assert _volume(thick_vg, name) is None and name not in lv.domains()
