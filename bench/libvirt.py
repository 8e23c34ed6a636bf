# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: VMs made through vacd's cycle against a raw createXML of the same domain XML.

(a) Decision to domain running: an empty 1-slot factory (host_processors = 1) runs one
    Factory cycle; the time of its create step (create_machine: slot record, directory, MJF,
    user_data, config drive, XML, LibvirtBackend.create) until libvirt says the domain is
    running, against conn.createXML() of exactly the XML the backend rendered (captured in
    an untimed warm-up cycle, then given a fresh UUID and a fresh machine directory whose
    config drive is built outside the timing, as every new VM has them). The two sides
    alternate (which goes first alternates too), after one untimed warm-up each; domains are
    destroyed and the state emptied between runs, outside the timing. Target: median ratio
    <= 1.10. The whole cycle's time is shown too.
(b) Guest boot to shutdown_message through the cycle: cycles run back to back (as vacd with
    a short cycle_seconds) from the one that creates the test guest until the one that
    finishes it with the guest's shutdown_message: over the config drive + serial console,
    and over the network with the metadata service vacd runs (169.254.169.253/.254:80).

Needs root, a running libvirtd (scripts/ci/setup-libvirt.sh) and the test guest
(scripts/ci/build-test-guest.sh). Run:

    python3 bench/libvirt.py [--repeat N] [--boots N]
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
from typing import List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
# This file is named libvirt.py: keep its directory off sys.path so `import libvirt` finds
# libvirt-python, not this script.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, os.path.dirname(HERE))

from bench import rawlibvirt, sidebyside  # noqa: E402
from vac.backends.libvirt.services import MetadataSupervisor  # noqa: E402
from vac.config import load  # noqa: E402
from vac.cycle.factory import CycleReport, Factory  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402
from vac.machine import mjf  # noqa: E402
from vac.machine.directory import MachineDir  # noqa: E402
from vac.machine.slots import machine_name  # noqa: E402
from vac.paths import Paths  # noqa: E402

URI = "qemu:///system"
RUN = uuid.uuid4().hex[:6]
FACTORY = f"lvb{RUN}.example.com"
TARGET = 1.10
CONSOLE = "console=ttyS0 quiet"
NETWORK = "console=ttyS0 quiet vac.datasource=network"

CONF = """
[settings]
state_dir = {state}
vac_space = bench.example.com
factory_name = {factory}
host_processors = 1
overload_per_processor = 1000
mb_per_processor = 256
libvirt_uri = {uri}
libvirt_shutdown_wait_seconds = 0
draining = {draining}

[machinetype bench]
machine_model = vm-raw
kernel = {guest}/vmlinuz
initrd = {guest}/initrd.img
cmdline = {cmdline}
user_data = {user_data}
target_share = 1
"""


class Bench:
    """One 1-slot factory in a directory QEMU can reach, driven as vacd drives it."""

    def __init__(self, top: str, conn, supervisor: Optional[MetadataSupervisor] = None):
        self.top = top
        self.conn = conn
        self.state = os.path.join(top, "state")
        self.conf = os.path.join(top, "vac.conf")
        self.user_data = os.path.join(top, "user_data")
        self.host = HostFacts(fqdn=FACTORY, processors=1, uid_of=lambda _u: None,
                              vg_exists=lambda _v: False)
        self.name = machine_name(FACTORY, 0)
        self.supervisor = supervisor
        self.write(rawlibvirt.SLEEPER)
        self.factory = Factory(self.load, after_prepare=self._after_prepare)

    def write(self, user_data: str, cmdline: str = CONSOLE, draining: bool = False) -> None:
        with open(self.user_data, "w") as f:
            f.write(user_data)
        with open(self.conf, "w") as f:
            f.write(CONF.format(state=self.state, factory=FACTORY, uri=URI,
                                guest=rawlibvirt.GUEST, cmdline=cmdline, user_data=self.user_data,
                                draining="yes" if draining else "no"))

    def load(self):
        return load.build(load.read_raw([self.conf]), self.host)

    def _after_prepare(self, config) -> List[str]:
        return self.supervisor.ensure(config) if self.supervisor is not None else []

    def cycle(self) -> Tuple[float, sidebyside.TimedCreations, CycleReport]:
        def running(slot, _created) -> None:
            rawlibvirt.until_running(self.conn, slot.name)

        return sidebyside.timed_cycle(self.factory, running)

    def kill(self) -> None:
        rawlibvirt.kill(self.conn, self.name)

    def empty(self) -> None:
        """Destroy the domain and the state: the next cycle starts in an empty factory."""
        self.kill()
        shutil.rmtree(self.state, ignore_errors=True)

    def machine_dir(self) -> MachineDir:
        d = MachineDir.for_slot(self.load().settings.paths, self.name)
        assert d is not None
        return d


class Raw:
    """createXML of the XML the backend rendered, with a fresh UUID and machine directory."""

    def __init__(self, bench: Bench):
        self.bench = bench
        self.template = rawlibvirt.DomainTemplate("", "", "")
        self.count = 0

    def capture(self) -> None:
        """Run the bench's warm-up cycle, recording the XML the backend renders."""
        with rawlibvirt.recording_xml() as seen:
            self.bench.cycle()
        d = self.bench.machine_dir()
        self.template = rawlibvirt.DomainTemplate(seen[-1], d.path, d.job_id)
        self.bench.empty()

    def run(self) -> float:
        config = self.bench.load()
        settings, mt = config.settings, config.machinetypes["bench"]
        self.count += 1
        created = int(time.time()) + self.count
        paths = Paths(os.path.join(self.bench.top, "raw"))
        paths.ensure()
        d = MachineDir.create(paths, created, mt.name, self.bench.name)
        new_uuid = str(uuid.uuid4())
        mjf.write_mjf(d, mjf.MjfContext(settings=settings, machinetype=mt, processors=1,
                                        shutdown_time=created + 3600, now=created,
                                        job_id=new_uuid))
        d.write("user_data", rawlibvirt.SLEEPER, mode=0o755)
        return rawlibvirt.raw_create(self.bench.conn, self.template, d, new_uuid, FACTORY,
                                     self.bench.name)


def decision_to_running(bench: Bench, repeat: int) -> Tuple[List[float], List[float],
                                                              List[float]]:
    raw = Raw(bench)
    raw.capture()                                           # warm-up cycle, untimed
    raw.run()                                               # warm-up createXML, untimed
    create: List[float] = []
    cycle: List[float] = []
    theirs: List[float] = []

    def ours() -> None:
        took, timed, _ = bench.cycle()
        if len(timed.times) != 1:
            raise SystemExit("the 1-slot cycle did not create one machine")
        create.append(timed.times[0])
        cycle.append(took)
        bench.empty()

    sidebyside.alternate(repeat, ours, lambda: theirs.append(raw.run()))
    return create, cycle, theirs


def boot_through_cycles(bench: Bench, cmdline: str, timeout: float = 120) -> Tuple[float,
                                                                                    float]:
    """(seconds until the guest's domain ended, until a cycle finished it with the guest's
    shutdown_message), both from the start of the creating cycle."""
    bench.empty()
    bench.write(rawlibvirt.QUICK, cmdline)
    start = time.perf_counter()
    _, timed, report = bench.cycle()
    if report.created != [bench.name]:
        raise SystemExit(f"no machine created: {report}")
    bench.write(rawlibvirt.QUICK, cmdline, draining=True)       # no refill in the finishing cycle
    ended = None
    while time.perf_counter() - start < timeout:
        if ended is None and bench.name not in {d.name() for d in bench.conn.listAllDomains(0)}:
            ended = time.perf_counter() - start
        d = bench.machine_dir()
        _, _, report = bench.cycle()
        if bench.name in report.finished:
            took = time.perf_counter() - start
            if d.shutdown_message != "300 Nothing to do":
                raise SystemExit(f"unexpected shutdown_message {d.shutdown_message!r}")
            bench.empty()
            return ended or took, took
        time.sleep(0.25)
    raise SystemExit(f"guest not finished after {timeout} s")


def boots(bench: Bench, count: int, cmdline: str, label: str) -> None:
    results = [boot_through_cycles(bench, cmdline) for _ in range(count)]
    ended = [r[0] for r in results]
    finished = [r[1] for r in results]
    print(f"  {label}: domain ended      median {statistics.median(ended):6.2f} s   "
          f"{' '.join(f'{t:.2f}' for t in ended)}")
    print(f"  {label}: finished by cycle median {statistics.median(finished):6.2f} s   "
          f"{' '.join(f'{t:.2f}' for t in finished)}")


def main() -> int:
    import libvirt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each side (5)")
    parser.add_argument("--boots", type=int, default=3, help="guest boots per path (3)")
    args = parser.parse_args()
    for f in ("vmlinuz", "initrd.img"):
        if not os.path.isfile(os.path.join(rawlibvirt.GUEST, f)):
            print(f"no test guest in {rawlibvirt.GUEST} (scripts/ci/build-test-guest.sh)",
                  file=sys.stderr)
            return 1
    conn = libvirt.open(URI)
    top = tempfile.mkdtemp(prefix="vac-bench-cycle-", dir="/var/tmp")
    os.chmod(top, 0o755)                     # QEMU runs as libvirt-qemu and must reach it
    supervisor = MetadataSupervisor()
    bench = Bench(top, conn, supervisor)
    try:
        create, cycle, raw = decision_to_running(bench, args.repeat)
        virt_type = bench.factory.pool.get("libvirt").virt_type
        result, whole = sidebyside.ratio(create, raw), sidebyside.ratio(cycle, raw)
        v = conn.getLibVersion()
        print(f"libvirt {v // 1000000}.{v // 1000 % 1000}.{v % 1000}, domain type {virt_type}, "
              f"test guest {rawlibvirt.GUEST}")
        print(f"\n(a) decision to domain running, {args.repeat} runs each, alternating"
              f"{'median':>8}{'min':>11}{'max':>11}")
        print(f"  vacd create step until running          {sidebyside.ms(create)}")
        print(f"  vacd whole 1-slot cycle                 {sidebyside.ms(cycle)}")
        print(f"  raw createXML until running             {sidebyside.ms(raw)}")
        print(f"  ratio create step / raw createXML  {result:6.3f}  target <= {TARGET:.2f}: "
              f"{sidebyside.verdict(result, TARGET)}")
        print(f"  ratio whole cycle / raw createXML  {whole:6.3f}  (shown, no target)")
        print(f"\n(b) guest boot to shutdown_message through cycles, {args.boots} boots each")
        boots(bench, args.boots, CONSOLE, "config drive + console ")
        problems = supervisor.ensure(bench.load())
        if problems:
            print(f"  network + metadata service: skipped ({problems[0]})")
        else:
            boots(bench, args.boots, NETWORK, "network + metadata PUT ")
        return 0 if result <= TARGET else 2
    finally:
        supervisor.close()
        bench.empty()
        conn.close()
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
