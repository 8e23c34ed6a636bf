# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: LibvirtBackend.create against a raw conn.createXML of the same domain XML.

Both sides are timed until libvirt reports the domain running: LibvirtBackend.create() with a
machine directory prepared beforehand (MJF, user_data) -- which adds building the config
drive, rendering the XML and the nwfilter lookup -- against conn.createXML() of exactly the
XML the backend rendered (captured in an untimed warm-up, then given a fresh UUID and a fresh
machine directory whose config drive is built outside the timing, as every new VM has them).
They alternate (which goes first alternates too); domains are destroyed between runs, outside
the timing. createXML itself varies by +-15 % here (the clean-traffic nwfilter costs about
1 s of it), so the backend's own time outside createXML is printed as well. Then the test
guest's boot-to-shutdown_message time through the backend: create() until
joboutputs/shutdown_message exists, once over the config drive + serial console (collect())
and once over the network (metadata service on 169.254.169.253/254:80, HTTP PUT).

Needs root, a running libvirtd (scripts/ci/setup-libvirt.sh) and the test guest
(scripts/ci/build-test-guest.sh). Run:

    python3 bench/libvirt_backend.py [--repeat N] [--boots N]

Prints both medians and their ratio; the target is a ratio of at most 1.10.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/libvirt.py would shadow libvirt-python: keep this directory off sys.path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, os.path.dirname(HERE))

import vac.backends.libvirt.backend as vlibvirt  # noqa: E402
from bench import rawlibvirt  # noqa: E402
from bench.sidebyside import ratio, timed_alternately, verdict  # noqa: E402
from vac.backends.base import MachineSpec  # noqa: E402
from vac.backends.libvirt import metadata  # noqa: E402
from vac.config import load  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402
from vac.machine import mjf  # noqa: E402
from vac.machine.directory import MachineDir, MachineState, SlotRecord, write_slot_record  # noqa: E402
from vac.machine.slots import Slot, machine_name  # noqa: E402

FACTORY = "vacbench.example.com"
ORDINAL = 20
TARGET = 1.10

CONF = """
[settings]
state_dir = {state}
vac_space = bench.example.com
factory_name = {factory}
mb_per_processor = 256

[machinetype bench]
machine_model = vm-raw
kernel = {guest}/vmlinuz
initrd = {guest}/initrd.img
cmdline = console=ttyS0 quiet

[machinetype benchnet]
machine_model = vm-raw
kernel = {guest}/vmlinuz
initrd = {guest}/initrd.img
cmdline = console=ttyS0 quiet vac.datasource=network
"""


class Bench:
    def __init__(self, top: str):
        path = os.path.join(top, "vac.conf")
        with open(path, "w") as f:
            f.write(CONF.format(state=os.path.join(top, "state"), factory=FACTORY,
                                guest=rawlibvirt.GUEST))
        self.config = load.build(load.read_raw([path]),
                                      HostFacts(fqdn=FACTORY, processors=64))
        self.settings = self.config.settings
        self.settings.paths.ensure()
        self.backend = vlibvirt.LibvirtBackend(self.settings, shutdown_wait_seconds=0)
        probe = self.backend.probe()
        if not probe.available:
            sys.exit(f"libvirt unavailable: {probe.reason}")
        self.conn = self.backend._conn()
        self.backend.prepare_host()
        self.created = int(time.time())
        self.name = machine_name(FACTORY, ORDINAL)
        self.overheads: List[float] = []

    def prepare(self, machinetype: str = "bench",
                user_data: str = rawlibvirt.SLEEPER) -> MachineSpec:
        """A machine directory as the factory prepares it before backend.create()."""
        self.created += 1
        mt = self.config.machinetypes[machinetype]
        write_slot_record(self.settings.paths, self.name,
                          SlotRecord(self.created, mt.name, mt.machine_model))
        d = MachineDir.create(self.settings.paths, self.created, mt.name, self.name)
        machine_uuid = str(uuid.uuid4())
        mjf.write_mjf(d, mjf.MjfContext(settings=self.settings, machinetype=mt, processors=1,
                                        shutdown_time=self.created + 3600, now=self.created,
                                        job_id=machine_uuid))
        d.write("user_data", user_data, mode=0o644)
        return MachineSpec(name=self.name, machinetype=mt, settings=self.settings,
                           slot=Slot(ORDINAL, self.name), processors=1, memory_mb=256,
                           created=self.created, shutdown_time=self.created + 3600,
                           uuid=machine_uuid, directory=d)

    def until_running(self) -> None:
        rawlibvirt.until_running(self.conn, self.name)

    def kill(self) -> None:
        rawlibvirt.kill(self.conn, self.name)

    def backend_create(self) -> float:
        spec = self.prepare()
        inner: List[float] = []
        create_xml = self.conn.createXML

        def timed(xml, flags):
            t0 = time.perf_counter()
            try:
                return create_xml(xml, flags)
            finally:
                inner.append(time.perf_counter() - t0)

        self.conn.createXML = timed
        try:
            started = time.perf_counter()
            self.backend.create(spec)
            self.until_running()
            took = time.perf_counter() - started
        finally:
            del self.conn.createXML
        self.overheads.append(took - inner[0])
        self.kill()
        return took

    def raw_create(self, template: rawlibvirt.DomainTemplate) -> float:
        """createXML of the captured XML with a fresh UUID and machine directory, whose config
        drive is built outside the timing (fresh per-VM files cost libvirt some time too)."""
        spec = self.prepare()
        return rawlibvirt.raw_create(self.conn, template, spec.directory, spec.uuid, FACTORY,
                                     self.name)

    def capture_xml(self) -> rawlibvirt.DomainTemplate:
        """The XML the backend renders, with its machine directory and UUID, from a warm-up
        run."""
        spec = self.prepare()
        with rawlibvirt.recording_xml() as seen:
            self.backend.create(spec)
        self.kill()
        return rawlibvirt.DomainTemplate(seen[-1], spec.directory.path, spec.uuid)

    def boot(self, machinetype: str) -> float:
        """create() until joboutputs/shutdown_message exists (collect() for the console)."""
        spec = self.prepare(machinetype, rawlibvirt.QUICK)
        started = time.perf_counter()
        self.backend.create(spec)
        while spec.directory.shutdown_message is None:
            if self.backend.status(self.name, None).state == MachineState.SHUTDOWN:
                self.backend.collect(self.name, spec.directory)
                if spec.directory.shutdown_message is None:
                    sys.exit(f"guest ended without a shutdown_message: {spec.directory.path}")
            time.sleep(0.05)
        took = time.perf_counter() - started
        while self.backend.status(self.name, None).state != MachineState.SHUTDOWN:
            time.sleep(0.1)
        return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--boots", type=int, default=3)
    args = parser.parse_args()
    top = tempfile.mkdtemp(prefix="vac-bench-", dir="/var/tmp")
    os.chmod(top, 0o755)
    bench = Bench(top)
    try:
        bench.kill()
        xml = bench.capture_xml()
        bench.raw_create(xml)                                   # warm-up, untimed
        ours, raw = timed_alternately(args.repeat, bench.backend_create,
                                      lambda: bench.raw_create(xml))
        m_ours, m_raw = statistics.median(ours), statistics.median(raw)
        result = ratio(ours, raw)
        print(f"domain type {bench.backend.virt_type}; {args.repeat} runs each, alternating")
        print(f"  raw conn.createXML     median {m_raw * 1000:8.1f} ms   "
              f"{' '.join(f'{t * 1000:.0f}' for t in raw)}")
        print(f"  LibvirtBackend.create  median {m_ours * 1000:8.1f} ms   "
              f"{' '.join(f'{t * 1000:.0f}' for t in ours)}")
        print(f"  ratio {result:.3f} (target <= {TARGET:.2f}): {verdict(result, TARGET)}")
        print(f"  LibvirtBackend.create outside createXML (config drive, XML, lookups): "
              f"median {statistics.median(bench.overheads) * 1000:.1f} ms")
        servers = metadata.MetadataServers(metadata.MetadataService(bench.settings.paths,
                                                                    FACTORY))
        problems = servers.ensure()
        try:
            for machinetype, label in (("bench", "config drive + console"),
                                       ("benchnet", "network + metadata service")):
                if machinetype == "benchnet" and problems:
                    print(f"  boot via {label}: skipped ({problems[0]})")
                    continue
                boots = [bench.boot(machinetype) for _ in range(args.boots)]
                print(f"  guest boot to shutdown_message via {label}: median "
                      f"{statistics.median(boots):.2f} s   "
                      f"{' '.join(f'{t:.2f}' for t in boots)}")
        finally:
            servers.close()
        return 0 if result <= TARGET else 1
    finally:
        bench.kill()
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
