# SPDX-License-Identifier: BSD-2-Clause
"""A hostile VM on a real libvirtd + QEMU: the Vac test guest whose payload prints
hostile VAC-JOBOUTPUT lines on its serial console (traversal and absolute names, names with
a slash, non-UTF-8 bytes, bad base64, a body over the size bound, dozens of extra files) and
leaves a shutdown_message over 4,096 bytes. The cycle stores only what is safe, writes nothing
outside the machine's joboutputs, ends the machine with Vac's coded 700 message, and keeps
cycling without errors. And a guest that leaves more files than the bound still gets its
shutdown_message back, also when virtlogd rolled the console log over. About 10-20 s each
under TCG.
"""
from __future__ import annotations

import os

import pytest
from libvirtfactory import LibvirtFactory

from vac.backends.libvirt.backend import CONSOLE_LOG, read_console_tail
from vac.machine import joboutputs as jo

pytestmark = pytest.mark.libvirt

HOSTILE = r"""#!/bin/sh
b=$(printf '200 pwned' | base64)
for name in ../../../escaped ..%2Fescaped /tmp/escaped a/escaped .escaped .. '' ; do
  echo "VAC-JOBOUTPUT $name $b"
done
printf 'VAC-JOBOUTPUT \377\376escaped %s\n' "$b"
echo "VAC-JOBOUTPUT escaped-b64 !!!!"
echo "VAC-JOBOUTPUT escaped-fields $b $b"
head -c 1100000 /dev/zero | base64 | tr -d '\n' | sed 's/^/VAC-JOBOUTPUT escaped-big /'
echo
i=0; while [ $i -lt 40 ]; do echo "VAC-JOBOUTPUT many$i $b"; i=$((i+1)); done
{ echo "200 Success"; i=0; while [ $i -lt 100 ]; do echo "padding padding padding padding \
padding padding"; i=$((i+1)); done; } > "$JOBOUTPUTS_DIR/shutdown_message"
"""


def test_a_guest_printing_hostile_console_lines_ends_with_a_coded_message(lv):
    world: LibvirtFactory = lv
    world.write(HOSTILE)
    name = world.slot(0)
    first = world.cycle()
    assert first.created == [name] and first.errors == [], first
    d = world.dir(name)
    world.write(HOSTILE, draining=True)
    reports = world.cycle_until_finished(name)
    for report in reports:
        assert report.errors == [] and report.created == [], report
    console = "\n".join(read_console_tail(d.file(CONSOLE_LOG)))
    assert "VAC-JOBOUTPUT ../../../escaped " in console       # the guest did try
    assert "VAC-JOBOUTPUT escaped-big AAAA" in console and "VAC-JOBOUTPUTS-END" in console
    assert d.finished is not None and world.domain_uuid(name) is None
    assert d.shutdown_message == ("700 Vac: machine's shutdown_message refused: is larger "
                                  "than 4096 bytes; refused")
    names = sorted(os.listdir(d.file("joboutputs")))
    assert all(jo.valid_name(n) and "escaped" not in n for n in names), names
    assert {f"many{i}" for i in range(40)} <= set(names)
    assert d.read("joboutputs/many0") == "200 pwned"
    escaped = [os.path.join(root, f) for root, dirs, files in os.walk(world.top)
               for f in files + dirs if "escaped" in f]
    assert escaped == [] and not os.path.exists("/tmp/escaped")
    assert world.cycle().errors == []


MANY_LOGS = r"""#!/bin/sh
i=0; while [ $i -lt 70 ]; do echo "log $i" > "$JOBOUTPUTS_DIR/log$(printf %02d $i)"; \
i=$((i+1)); done
echo "200 Success with many logs" > "$JOBOUTPUTS_DIR/shutdown_message"
"""


def test_a_guest_with_more_files_than_the_bound_still_returns_its_message(lv):
    """/init sends files in name order: log00..log69 take the 64 places, shutdown_message
    comes last and is kept all the same."""
    world: LibvirtFactory = lv
    world.write(MANY_LOGS, draining=False)
    name = world.slot(0)
    assert world.cycle().created == [name]
    d = world.dir(name)
    world.write(MANY_LOGS, draining=True)
    for report in world.cycle_until_finished(name):
        assert report.errors == [], report
    assert d.shutdown_message == "200 Success with many logs"
    names = set(os.listdir(d.file("joboutputs")))
    assert len(names) == jo.MAX_FILES + 1 and {f"log{i:02d}" for i in range(64)} <= names


ROTATED = r"""#!/bin/sh
echo "200 Success before big logs" > "$JOBOUTPUTS_DIR/shutdown_message"
head -c 1000000 /dev/urandom > "$JOBOUTPUTS_DIR/zlog1"
head -c 1000000 /dev/urandom > "$JOBOUTPUTS_DIR/zlog2"
"""


def test_joboutputs_across_a_console_log_rotation_are_kept(lv):
    """virtlogd rolls console.log over at 2 MB (libvirt's default max_size): the
    shutdown_message line, printed before 2.7 MB of zlog lines, ends up in console.log.0."""
    world: LibvirtFactory = lv
    world.write(ROTATED)
    name = world.slot(0)
    assert world.cycle().created == [name]
    d = world.dir(name)
    world.write(ROTATED, draining=True)
    for report in world.cycle_until_finished(name):
        assert report.errors == [], report
    assert os.path.exists(d.file(CONSOLE_LOG + ".0"))       # it was rolled over
    assert d.shutdown_message == "200 Success before big logs"
    assert os.path.getsize(d.file("joboutputs/zlog1")) == 1000000
    assert os.path.getsize(d.file("joboutputs/zlog2")) == 1000000
