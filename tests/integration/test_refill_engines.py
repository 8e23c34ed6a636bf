# SPDX-License-Identifier: BSD-2-Clause
"""A machine's end refills its slot within a second, with cycle_seconds = 60 (issue 14): a
real vacd with real Docker containers and real Apptainer machines whose payloads run two
seconds and succeed. The dead time of a slot is measured from the payload's last act (its
shutdown_message) to the next machine's payload running (the first thing it does is touch
joboutputs/began)."""
from __future__ import annotations

import os
import signal
import statistics
import time
from typing import List

import pytest
from test_crash_apptainer import space  # noqa: F401 - the fixture
from test_crash_docker import machine_dirs
from test_docker_backend import wait_until
from test_docker_cycle import DockerFactory, engine_ready
from vacd_process import cycles_logged, start_vacd, stop

from vac.machine.directory import MachineDir

PAYLOAD = ("#!/bin/sh\n: > $JOBOUTPUTS/began\nsleep 2\n"
           "echo '200 Success' > $JOBOUTPUTS/shutdown_message\n")
SLOW_CYCLES = ["--cycle-seconds", "60"]


def dead_times(dirs: List[MachineDir]) -> List[float]:
    """Per slot, from each machine's shutdown_message to the next machine's first act."""
    gaps = []
    by_slot = {}
    for d in sorted(dirs, key=lambda d: d.created):
        by_slot.setdefault(d.name, []).append(d)
    for machines in by_slot.values():
        for old, new in zip(machines, machines[1:]):
            ended, running = old.shutdown_message_time, new.mtime("joboutputs/began")
            if ended is not None and running is not None:
                gaps.append(running - ended)
    return gaps


def check(gaps: List[float], log: str) -> None:
    assert len(gaps) >= 4, open(log).read()[-3000:]
    assert statistics.median(gaps) < 1.0, gaps
    assert max(gaps) < 2.0, gaps
    assert len(cycles_logged(log)) == 1        # every refill came from an event, not a cycle
    print(f"dead time: median {statistics.median(gaps) * 1000:.0f} ms, "
          f"max {max(gaps) * 1000:.0f} ms over {len(gaps)} refills")


@pytest.mark.docker
def test_a_docker_machines_end_refills_its_slot_within_a_second(tmp_path, make_config):
    engine_ready()
    dock = DockerFactory(tmp_path, make_config)
    try:
        dock.write(PAYLOAD, slots=2, extra_mt="backoff_seconds = 0\nfizzle_seconds = 0")
        log = str(tmp_path / "vacd.log")
        vacd = start_vacd(dock.config_file, log, SLOW_CYCLES)
        try:
            assert wait_until(lambda: len(machine_dirs(dock)) >= 8, 40, step=0.2), \
                open(log).read()[-3000:]
        finally:
            stop(vacd, signal.SIGTERM)
        check(dead_times(machine_dirs(dock)), log)
        assert "refill" in open(log).read()
    finally:
        dock.remove_all()


@pytest.mark.apptainer
@pytest.mark.root
def test_an_apptainer_machines_end_refills_its_slot_within_a_second(space):  # noqa: F811
    with open(space.template, "w") as f:
        f.write(PAYLOAD)
    log = os.path.join(space.state, "vacd.log")
    vacd = start_vacd(space.conf, log, SLOW_CYCLES)
    try:
        assert wait_until(lambda: len(space.dirs()) >= 12, 40, step=0.2), \
            open(log).read()[-3000:]
    finally:
        stop(vacd, signal.SIGTERM)
    check(dead_times(space.dirs()), log)


MINIMAL_DOMAIN = """<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>
<os><type arch='x86_64'>hvm</type><kernel>{guest}/vmlinuz</kernel>
<initrd>{guest}/initrd.img</initrd><cmdline>console=ttyS0</cmdline></os>
<features><acpi/></features><on_poweroff>destroy</on_poweroff>
<devices><serial type='null'/></devices></domain>"""


@pytest.mark.libvirt
def test_libvirt_lifecycle_events_report_a_domain_that_stops():
    from conftest import require_engine
    from libvirt_env import GUEST, guest_problem

    problem = guest_problem()
    require_engine("libvirt", not problem, problem)
    import libvirt

    from vac.backends.libvirt.watch import LibvirtWatcher

    ended = []
    watcher = LibvirtWatcher("qemu:///system", ended.append)
    watcher.start()
    name = f"vac-watch-{os.getpid()}.example.com"
    conn = libvirt.open("qemu:///system")
    try:
        time.sleep(0.5)                       # the watcher's connection is registered
        domain = conn.createXML(MINIMAL_DOMAIN.format(name=name, guest=GUEST), 0)
        time.sleep(0.5)
        assert ended == []                    # starting is not an end
        began = time.monotonic()
        domain.destroy()
        assert wait_until(lambda: name in ended, 10, step=0.02), ended
        print(f"libvirt stop event after {(time.monotonic() - began) * 1000:.0f} ms")
        assert watcher.is_alive() and not watcher.error
    finally:
        watcher.stop()
        try:
            conn.lookupByName(name).destroy()
        except libvirt.libvirtError:
            pass
        conn.close()
    assert not watcher.is_alive()


@pytest.mark.docker
def test_a_message_without_an_end_is_refilled_after_its_grace(tmp_path, make_config):
    """A payload that writes 200 Success and then lingers: with a 1 s grace it is destroyed
    and its slot refilled about 2 s after its message, not at the next 60-second cycle."""
    engine_ready()
    dock = DockerFactory(tmp_path, make_config)
    lingers = ("#!/bin/sh\n: > $JOBOUTPUTS/began\nsleep 1\n"
               "echo '200 Success' > $JOBOUTPUTS/shutdown_message\nexec sleep 300\n")
    try:
        dock.write(lingers, slots=1, extra_mt="backoff_seconds = 0\nfizzle_seconds = 0\n"
                                              "shutdown_message_grace_seconds = 1")
        log = str(tmp_path / "vacd.log")
        vacd = start_vacd(dock.config_file, log, SLOW_CYCLES)
        try:
            assert wait_until(lambda: len(machine_dirs(dock)) >= 3, 30, step=0.2), \
                open(log).read()[-3000:]
        finally:
            stop(vacd, signal.SIGTERM)
        dirs = machine_dirs(dock)
        gaps = dead_times(dirs)
        assert gaps and max(gaps) < 1.0 + 1.5, gaps       # the grace, then a refill
        assert all(d.shutdown_message == "200 Success" for d in dirs if d.finished)
        assert len(cycles_logged(log)) == 1
    finally:
        dock.remove_all()
