# SPDX-License-Identifier: BSD-2-Clause
"""VMs through vacd's cycle on a real libvirtd + QEMU (TCG here), booting the Vac test guest.

Factory.run_cycle() with the real clock and the real BackendPool (as vacd runs it) creates a
vm-raw machine from the guest's kernel + initrd, later cycles record its heartbeat CPU and
finish it with the shutdown_message the guest returned: (a) over the config drive and the serial
console (VAC-JOBOUTPUT lines, parsed by collect()), (b) over the metadata service that vacd runs
(vac.backends.libvirt.services) on 169.254.169.253/.254:80 with HTTP PUT. Then (c) a guest that
never ends is destroyed at max_wallclock_seconds (ACPI, then forced after
libvirt_shutdown_wait_seconds), (d) vacd SIGKILLed and restarted adopts its domain, (e) our
domains that no live machine directory owns are destroyed, others' left alone, and (f) with
libvirtd unreachable the VM machinetype waits, the running machine is left alone, and management
resumes when libvirtd is back.

Every test has a factory_name of its own (slot names never collide with other tests'), its
files in /var/tmp (QEMU, running as libvirt-qemu, must reach them), and destroys every domain
of its factory in teardown.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
import urllib.error
import urllib.request
import uuid as uuidlib

import pytest
from libvirtfactory import MT, WAIT, LibvirtFactory
from vacd_process import cycles_logged, start_vacd, stop
from waiting import Stopwatch, wait_until

from vac.backends.libvirt.services import MetadataSupervisor
from vac.cycle.factory import CycleReport
from vac.machine.directory import MachineDir
from vac.machine.slots import BRIDGE_ADDRESS, METADATA_ADDRESS, Slot, machine_name, ordinal_of

pytestmark = pytest.mark.libvirt

UNREACHABLE = "qemu+unix:///system?socket=/nonexistent/vac-test/libvirt-sock"
NETWORK = "console=ttyS0 quiet no_timer_check vac.datasource=network"

# Reads the MJF (files on the config drive, or URLs of the metadata service), returns what
# it saw and what user_data substitution gave it, burns some CPU, says it is done. Over the
# network it also tries PUTs that climb out of joboutputs/ and records the answers.
PAYLOAD = r"""#!/bin/sh
get() { case "$1" in http://*) vac-http get "$1" ;; *) cat "$1" ;; esac; }
out=$JOBOUTPUTS_DIR
echo "##user_data_machine_hostname## ##user_data_uuid##" > "$out/userdata_values"
get "$JOBFEATURES/job_id" > "$out/mjf_job_id"
get "$JOBFEATURES/allocated_cpu" > "$out/mjf_allocated_cpu"
get "$JOBFEATURES/wall_limit_secs" > "$out/mjf_wall_limit_secs"
get "$MACHINEFEATURES/total_cpu" > "$out/mjf_total_cpu"
echo "$JOBFEATURES" > "$out/jobfeatures_seen"
case "$JOBOUTPUTS" in http://*)
  echo escaped > /tmp/escape
  for p in ../escaped ..%2Fescaped ../../../escaped /../escaped; do
    vac-http put "$JOBOUTPUTS/$p" /tmp/escape; echo "$p $?" >> "$out/traversal"
  done ;;
esac
i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done
echo "200 Guest ##user_data_machine_hostname## done" > "$out/shutdown_message"
"""

SLEEPER = "#!/bin/sh\nsleep 100000\n"


def heartbeat_cpu(d: MachineDir) -> float:
    return float((d.read("heartbeat") or "0").split()[0])


def check_guest_saw(d: MachineDir, name: str) -> None:
    """The MJF values and substituted user_data the guest returned are this machine's."""
    job_id = d.job_id
    assert job_id and d.read("joboutputs/userdata_values") == f"{name} {job_id}\n"
    assert d.read("joboutputs/mjf_job_id").strip() == job_id
    assert d.read("joboutputs/mjf_allocated_cpu").strip() == "1"
    assert d.read("joboutputs/mjf_total_cpu").strip() == "1"
    assert 3500 < int(d.read("joboutputs/mjf_wall_limit_secs")) <= 3600
    assert d.read("user_data").startswith("#!/bin/sh\nget()")
    assert f'echo "{name} {job_id}" > "$out/userdata_values"' in d.read("user_data")


def check_finished(lv: LibvirtFactory, d: MachineDir, name: str, reports) -> None:
    assert d.finished is not None
    assert lv.domain_uuid(name) is None
    assert not d.exists("config-drive.iso")
    record = open(lv.load().settings.paths.finish_record(MT)).read().split()
    assert record[1] == MT and ordinal_of(lv.name, record[2]) >= 0, record
    assert int(record[0]) == d.created if record[2] == name else int(record[0]) >= d.created
    for report in reports:
        assert report.created == report.destroyed == report.zombies == report.errors == [], \
            report


# (a) config drive + serial console --------------------------------------------------------

def test_config_drive_guest_is_created_runs_and_is_finished_by_cycles(lv):
    lv.write(PAYLOAD)
    name = lv.slot(0)
    first = lv.cycle()
    assert first.created == [name] and first.errors == [], first
    d = lv.dir(name)
    assert lv.domain_uuid(name).lower() == d.job_id.lower()
    assert d.read_backend_record()["uuid"] == d.job_id
    lv.write(PAYLOAD, draining=True)                  # no refill once it has finished
    reports = lv.cycle_until_finished(name)
    assert len(reports) >= 2, "the guest ended before any cycle saw it run"
    assert reports[-1].finished == [name]
    check_finished(lv, d, name, reports)
    assert d.shutdown_message == f"200 Guest {name} done"
    assert heartbeat_cpu(d) > 0, d.read("heartbeat")
    check_guest_saw(d, name)
    assert d.read("joboutputs/jobfeatures_seen").strip() == \
        "/mnt/config/openstack/latest/jobfeatures"
    console = lv.console(name)
    assert "VAC-GUEST: config drive /dev/vd" in console
    assert "VAC-JOBOUTPUT shutdown_message " in console
    assert not d.exists("joboutputs/traversal")


# (b) network + the metadata service vacd runs ---------------------------------------------

def _host_get(address: str, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_network_guests_use_the_metadata_service_vacd_runs(lv):
    """Two guests at once: each is answered about itself alone, by its source address."""
    lv.supervisor = MetadataSupervisor()              # vacd's: .253 and .254, port 80
    lv.write(PAYLOAD, cmdline=NETWORK, slots=2, total=2)
    names = [lv.slot(0), lv.slot(1)]
    first = lv.cycle()
    assert first.created == names and first.errors == [], first
    assert sorted(lv.supervisor.bound()) == [(BRIDGE_ADDRESS, 80), (METADATA_ADDRESS, 80)]
    dirs = [lv.dir(name) for name in names]
    assert dirs[0].job_id != dirs[1].job_id
    # The host's own addresses are no slot's: nothing about any machine for them.
    for address in (BRIDGE_ADDRESS, METADATA_ADDRESS):
        assert _host_get(address, "/latest/user-data") == 404
        assert _host_get(address, "/jobfeatures/job_id") == 404
    lv.write(PAYLOAD, cmdline=NETWORK, slots=2, total=2, draining=True)
    reports = lv.cycle_until_finished(*names)
    for n, (name, d) in enumerate(zip(names, dirs)):
        check_finished(lv, d, name, reports)
        assert d.shutdown_message == f"200 Guest {name} done"
        assert heartbeat_cpu(d) > 0, d.read("heartbeat")
        check_guest_saw(d, name)
        assert d.read("joboutputs/jobfeatures_seen").strip() == \
            f"http://{BRIDGE_ADDRESS}/jobfeatures"
        console = lv.console(name)
        assert f"VAC-GUEST: network {Slot(n, name).ip}/16" in console
        assert "VAC-JOBOUTPUT " not in console        # everything came back by PUT
        assert d.read("joboutputs/traversal").split("\n")[:4] == [
            "../escaped 1", "..%2Fescaped 1", "../../../escaped 1", "/../escaped 1"]
    found = [os.path.join(root, f) for root, _, files in os.walk(lv.top) for f in files
             if "escaped" in f]
    assert found == []
    assert lv.supervisor.bound()                      # still serving: vacd closes on exit


# (c) max wallclock -----------------------------------------------------------------------

def test_guest_that_never_ends_is_destroyed_at_max_wallclock(lv, caplog):
    wallclock = 20
    lv.write(SLEEPER, wallclock=wallclock)
    name = lv.slot(0)
    assert lv.cycle().created == [name]
    d = lv.dir(name)
    lv.write(SLEEPER, wallclock=wallclock, draining=True)
    # A cycle within the wallclock leaves it running. It runs at once: the guest's boot may
    # take longer than the wallclock on a busy host, its cycle does not.
    steady = Stopwatch()            # what a cycle with the guest running costs here now
    early = steady.time(lv.cycle)
    assert time.time() < d.created + wallclock, "the first two cycles took the whole wallclock"
    assert early.destroyed == early.finished == [] and lv.domain_uuid(name) is not None
    assert wait_until(lambda: "VAC-GUEST: payload start" in lv.console(name))
    assert wait_until(lambda: time.time() > d.created + wallclock + 1, wallclock + 5)
    with caplog.at_level(logging.INFO):
        started = time.monotonic()
        report = lv.cycle()
        took = time.monotonic() - started
    assert report.destroyed == [name] and report.finished == [name], report
    assert report.errors == [] and report.created == []
    # ACPI ignored, waited, then forced: WAIT, then at most 3 cycles' cost (at least 20 s)
    assert WAIT <= took < WAIT + steady.bound(3, 20), (took, steady.samples)
    assert f"{name}: domain destroyed" in caplog.text
    assert lv.domain_uuid(name) is None
    assert d.finished is not None
    assert d.shutdown_message == "100 Shutdown time reached"
    assert heartbeat_cpu(d) > 0, d.read("heartbeat")
    assert not d.exists("config-drive.iso")


# (d) vacd SIGKILLed and restarted adopts its domain --------------------------------------

METADATA_ARGS = ("--metadata-address", "127.0.0.1", "--metadata-port", "0")


def test_sigkilled_vacd_restarted_adopts_its_domain(lv):
    lv.write(SLEEPER)
    name = lv.slot(0)
    first_log = os.path.join(lv.top, "vacd1.log")
    second_log = os.path.join(lv.top, "vacd2.log")
    vacd = start_vacd(lv.config_file, first_log, METADATA_ARGS)
    try:
        assert wait_until(lambda: cycles_logged(first_log)), open(first_log).read()
    finally:
        stop(vacd, signal.SIGKILL, timeout=60)
    assert "cycle 1: created 1," in cycles_logged(first_log)[0], open(first_log).read()
    d = lv.dir(name)
    before = lv.domains()
    assert list(before) == [name]
    domain_id, domain_uuid = before[name].ID(), before[name].UUIDString()
    assert domain_uuid.lower() == d.job_id.lower()
    vacd = start_vacd(lv.config_file, second_log, METADATA_ARGS)
    try:
        assert wait_until(lambda: len(cycles_logged(second_log)) >= 3), \
            open(second_log).read()
    finally:
        stop(vacd, signal.SIGTERM, timeout=60)
    text = open(second_log).read()
    assert vacd.returncode == 0, text
    for line in cycles_logged(second_log):
        assert "created 0, finished 0, destroyed 0, errors 0" in line, line
    assert "zombie" not in text and "ERROR" not in text, text
    assert "metadata service listening on 127.0.0.1" in text
    after = lv.domains()
    assert list(after) == [name]                          # no duplicate, no loss
    assert after[name].UUIDString() == domain_uuid and after[name].ID() == domain_id
    assert lv.dir(name).path == d.path and d.finished is None
    assert d.heartbeat_time is not None and heartbeat_cpu(d) > 0


# (e) zombies -------------------------------------------------------------------------------

def _bare_domain(lv: LibvirtFactory, name: str, ordinal: int, domain_uuid: str) -> None:
    """A domain with no disks and no kernel (the firmware finds nothing to boot and waits),
    named `name`, on the vac network with slot `ordinal`'s MAC."""
    from vac.backends.libvirt.backend import DomainParams, render_domain_xml

    slot = Slot(ordinal, name)
    params = DomainParams(virt_type="qemu", name=name, uuid=domain_uuid, memory_mb=64,
                          vcpus=1, mac=slot.mac, ip=slot.ip, vnc_port=slot.vnc_port,
                          console_log=os.path.join(lv.top, f"{name}.console"), nwfilter=None)
    lv.conn.createXML(render_domain_xml(params), 0)


def test_domains_no_live_machine_directory_owns_are_destroyed(lv):
    lv.write(SLEEPER, slots=3, draining=True)
    assert lv.cycle().errors == []                        # builds the state directory
    paths = lv.load().settings.paths
    stale_uuid = str(uuidlib.uuid4())
    finished = MachineDir.create(paths, int(time.time()) - 100, MT, lv.slot(1))
    finished.write("jobfeatures/job_id", stale_uuid)
    finished.write("finished", "1")
    from vac.machine.directory import SlotRecord, write_slot_record
    write_slot_record(paths, lv.slot(1), SlotRecord(finished.created, MT, "vm-raw"))
    other = machine_name(f"other{lv.name}", 2)
    lv.extra.append(other)
    _bare_domain(lv, lv.slot(0), 0, str(uuidlib.uuid4()))    # no machine directory at all
    _bare_domain(lv, lv.slot(1), 1, stale_uuid)              # its directory is finished
    _bare_domain(lv, other, 2, str(uuidlib.uuid4()))         # another factory's name
    assert sorted(lv.domains()) == [lv.slot(0), lv.slot(1)]
    report = lv.cycle()
    assert sorted(report.zombies) == [lv.slot(0), lv.slot(1)], report
    assert report.errors == [] and report.created == [] and report.finished == []
    assert lv.domains() == {}
    assert other in {dom.name() for dom in lv.conn.listAllDomains(0)}
    again = lv.cycle()
    assert again.zombies == [] and again.errors == []


# (f) libvirtd unreachable ------------------------------------------------------------------

def test_unreachable_libvirtd_makes_vm_machinetypes_wait_and_leaves_machines_alone(lv):
    names = [lv.slot(0), lv.slot(1)]
    paths = None

    from vac.backends.libvirt.backend import LibvirtBackend

    lv.write(SLEEPER, slots=2)
    managed = Stopwatch()           # what a probe of the running libvirtd costs here now
    assert managed.time(LibvirtBackend(lv.load().settings).probe).available

    def cycle_unreachable() -> CycleReport:
        """One connection attempt (10 s) at most, besides 3 probes' work (5 s at least)."""
        lv.write(SLEEPER, uri=UNREACHABLE, slots=2)
        started = time.monotonic()
        report = lv.cycle()
        took = time.monotonic() - started
        assert took < 10 + managed.bound(3, 5), (took, managed.samples)
        assert report.created == report.finished == report.destroyed == [], report
        assert report.zombies == [] and report.errors == [], report
        return report

    report = cycle_unreachable()                      # nothing exists yet
    assert sorted(report.idle) == names
    for reason in report.idle.values():
        assert "backend libvirt unavailable" in reason and "libvirtd" in reason, reason
        assert f"{MT} waiting" in reason
    lv.write(SLEEPER, slots=2)                        # libvirtd is back
    assert lv.cycle().created == [names[0]]
    d = lv.dir(names[0])
    domain_uuid = lv.domain_uuid(names[0])
    report = cycle_unreachable()                      # and gone again
    assert list(report.idle) == [names[1]]
    assert "backend libvirt unavailable" in report.idle[names[1]]
    paths = lv.load().settings.paths
    summary = json.load(open(paths.plan))
    assert list(summary["unmanaged"]) == [names[0]]
    assert d.finished is None and d.shutdown_message is None
    assert lv.domain_uuid(names[0]) == domain_uuid
    lv.write(SLEEPER, slots=2)                        # back: managed again
    report = lv.cycle()
    assert report.created == report.finished == report.destroyed == report.zombies == []
    assert report.errors == []
    assert json.load(open(paths.plan))["unmanaged"] == {}
    assert lv.domain_uuid(names[0]) == domain_uuid and d.finished is None
