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
from typing import Callable, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import vac.backends.libvirt as vlibvirt  # noqa: E402
from vac import config as configmod  # noqa: E402
from vac import configdrive, metadata, mjf  # noqa: E402
from vac.backends.base import MachineSpec  # noqa: E402
from vac.hostinfo import HostFacts  # noqa: E402
from vac.machine import MachineDir, MachineState, SlotRecord, write_slot_record  # noqa: E402
from vac.slots import Slot, machine_name  # noqa: E402

GUEST = os.environ.get("VAC_TEST_GUEST", "/var/lib/vac-test/guest")
FACTORY = "vacbench.example.com"
ORDINAL = 20
TARGET = 1.10
SLEEPER = "#!/bin/sh\nsleep 600\n"
QUICK = '#!/bin/sh\necho "300 Nothing to do" > "$JOBOUTPUTS_DIR/shutdown_message"\n'

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
            f.write(CONF.format(state=os.path.join(top, "state"), factory=FACTORY, guest=GUEST))
        self.config = configmod.build(configmod.read_raw([path]),
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

    def prepare(self, machinetype: str = "bench", user_data: str = SLEEPER) -> MachineSpec:
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
        import libvirt

        while self.conn.lookupByName(self.name).state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            time.sleep(0.005)

    def kill(self) -> None:
        for dom in self.conn.listAllDomains(0):
            if dom.name() == self.name:
                dom.destroy()

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

    def raw_create(self, template: Tuple[str, str, str]) -> float:
        """createXML of the captured XML with a fresh UUID and machine directory, whose config
        drive is built outside the timing (fresh per-VM files cost libvirt some time too)."""
        xml, old_dir, old_uuid = template
        spec = self.prepare()
        configdrive.build_config_drive(spec.directory, FACTORY,
                                       spec.directory.file(vlibvirt.CONFIG_DRIVE))
        xml = xml.replace(old_dir, spec.directory.path).replace(old_uuid, spec.uuid)
        started = time.perf_counter()
        self.conn.createXML(xml, 0)
        self.until_running()
        took = time.perf_counter() - started
        self.kill()
        return took

    def capture_xml(self) -> Tuple[str, str, str]:
        """(XML the backend renders, its machine directory, its UUID) from a warm-up run."""
        seen: List[str] = []
        original = vlibvirt.render_domain_xml

        def recording(params):
            seen.append(original(params))
            return seen[-1]

        vlibvirt.render_domain_xml = recording
        spec = self.prepare()
        try:
            self.backend.create(spec)
        finally:
            vlibvirt.render_domain_xml = original
        self.kill()
        return seen[-1], spec.directory.path, spec.uuid

    def boot(self, machinetype: str) -> float:
        """create() until joboutputs/shutdown_message exists (collect() for the console)."""
        spec = self.prepare(machinetype, QUICK)
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


def alternate(repeat: int, a: Callable[[], float], b: Callable[[], float]):
    times_a, times_b = [], []
    for i in range(repeat):
        pair = ((a, times_a), (b, times_b)) if i % 2 == 0 else ((b, times_b), (a, times_a))
        for fn, out in pair:
            out.append(fn())
    return times_a, times_b


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
        ours, raw = alternate(args.repeat, bench.backend_create, lambda: bench.raw_create(xml))
        m_ours, m_raw = statistics.median(ours), statistics.median(raw)
        ratio = m_ours / m_raw
        print(f"domain type {bench.backend.virt_type}; {args.repeat} runs each, alternating")
        print(f"  raw conn.createXML     median {m_raw * 1000:8.1f} ms   "
              f"{' '.join(f'{t * 1000:.0f}' for t in raw)}")
        print(f"  LibvirtBackend.create  median {m_ours * 1000:8.1f} ms   "
              f"{' '.join(f'{t * 1000:.0f}' for t in ours)}")
        print(f"  ratio {ratio:.3f} (target <= {TARGET:.2f}): "
              f"{'ok' if ratio <= TARGET else 'OVER TARGET'}")
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
        return 0 if ratio <= TARGET else 1
    finally:
        bench.kill()
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
