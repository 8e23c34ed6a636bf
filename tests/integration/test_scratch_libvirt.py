# SPDX-License-Identifier: BSD-2-Clause
"""A VM's bounded scratch through vacd's cycle on a real libvirtd + QEMU (issue 29), booting
the Vac test guest: a vm-raw machinetype with disk_gb_per_processor gets a scratch disk of that
size, and jobfeatures/scratch_limit_bytes says the size. A payload that writes past the disk's
end gets ENOSPC in the guest and ends with its own message; the cycle finishes it without
errors, while the other slot's VM runs on untouched. While it runs after its write, the bytes
allocated to its scratch disk file are its scratch bytes: in its heartbeat, `vac slots` and
plan.json (the status page)."""
from __future__ import annotations

import os
import time

import pytest
from waiting import wait_until

from vac import planfile
from vac.slotview import slot_rows

pytestmark = pytest.mark.libvirt

GB = 10 ** 9
MIB = 1024 * 1024

# Slot 0's payload finds its scratch disk by the size the MJF gives (the config drive is a
# virtio disk too, so the name is not fixed), writes 16 MiB from 4 MiB before its end, says
# how dd ended, and stays 30 s more (the test reads its scratch bytes meanwhile) before its
# message; every other slot's payload sleeps.
PAYLOAD = r"""#!/bin/sh
out=$JOBOUTPUTS_DIR
[ "##user_data_machine_hostname##" = "{filler}" ] || exec sleep 100000
limit=$(cat "$JOBFEATURES/scratch_limit_bytes")
echo "$limit" > "$out/limit_seen"
dev=""
for d in /sys/block/vd*; do
  [ $(( $(cat "$d/size") * 512 )) = "$limit" ] && dev=/dev/${{d##*/}}
done
[ -n "$dev" ] || {{ echo "500 no disk of $limit bytes" > "$out/shutdown_message"; exit 1; }}
dd if=/dev/zero of="$dev" bs=1M seek=$(( limit / 1048576 - 4 )) count=16 2> "$out/dd.err"
echo "dd exit $?" >> "$out/dd.err"
sync
sleep 30
grep -q "No space left on device" "$out/dd.err" && \
  echo "200 payload: scratch disk $dev of $limit bytes full" > "$out/shutdown_message"
"""


def test_a_vm_writing_past_its_scratch_disk_gets_enospc_and_ends_alone(lv):
    filler, other = lv.slot(0), lv.slot(1)
    lv.write(PAYLOAD.format(filler=filler), slots=2, total=2, disk_gb=1)
    first = lv.cycle()
    assert sorted(first.created) == sorted([filler, other]) and first.errors == [], first
    d = lv.dir(filler)
    assert d.read("jobfeatures/scratch_limit_bytes") == str(1 * GB)
    lv.write(PAYLOAD.format(filler=filler), slots=2, total=2, disk_gb=1, draining=True)
    reports = []

    def written():
        reports.append(lv.cycle())
        assert filler not in reports[-1].finished, "finished before its scratch bytes were seen"
        used = d.scratch_bytes
        return used is not None and used >= 4 * MIB

    assert wait_until(written, step=1), d.read("heartbeat")
    used = d.scratch_bytes
    assert used <= 1 * GB + MIB, used      # allocated, rounded up to the host's blocks
    rows = {r["name"]: r for r in slot_rows(lv.load(), time.time())}
    assert (rows[filler]["scratch_bytes"], rows[filler]["scratch_limit_bytes"]) == (used, 1 * GB)
    record = planfile.read(lv.load().settings.paths.plan)
    assert record.disk["scratch_used_bytes"][os.path.basename(d.path)] == used
    assert rows[other]["scratch_bytes"] is not None and rows[other]["scratch_bytes"] < 4 * MIB
    reports += lv.cycle_until_finished(filler, timeout=600)
    for report in reports:
        assert report.errors == [] and report.zombies == [], report
        assert other not in report.finished and other not in report.destroyed, report
    assert d.read("joboutputs/limit_seen").strip() == str(1 * GB)
    assert "No space left on device" in (d.read("joboutputs/dd.err") or ""), \
        d.read("joboutputs/dd.err")
    assert d.shutdown_message is not None and \
        d.shutdown_message.startswith("200 payload: scratch disk /dev/vd"), d.shutdown_message
    assert d.shutdown_message.endswith(f"of {1 * GB} bytes full")
    assert lv.domain_uuid(filler) is None
    assert lv.domain_uuid(other) is not None, "the other slot's VM did not run on"
    assert lv.dir(other).finished is None
