# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: admission by the load average against admission by pressure (PSI), side by side
in one run, on a host whose load average is pushed up by I/O-bound payloads.

I/O-bound payloads (processes that write a block and fsync it, over and over, so they spend
most of their time blocked on the disk) run for the whole benchmark: the load average counts
them, so it climbs above overload_per_processor x processors, while the processors have time
to spare. A real Factory (vac.cycle.factory, the real load average and the real
/proc/pressure) then runs its cycles for a phase, once with each gate, the phases alternating:

    load gate       overload_per_processor 1.5, no pressure thresholds (the original's gate)
    pressure gate   pressure_io_full 40 and pressure_memory_some 20 (the defaults); the load
                    gate moved out of the way (overload_per_processor 1000), as a site that
                    admits by pressure alone would set it

Its machines are CPU-bound local processes (a backend of the benchmark's own, on the fake
machine model), so the slots filled and the CPU seconds they deliver are what the gate let in.
Each phase reports the mean slots filled, the CPU seconds delivered, the load average and the
host's io pressure (some and full avg10) seen by the cycles, and the gate's idle reasons.

Run as root or not (no cgroups, no engine):  python3 bench/pressure.py [--io 6] [--phase 45]
The machine is shared: the figures move with what else runs; both gates see the same host.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, os.path.dirname(HERE))

from vac import planfile  # noqa: E402
from vac.backends.base import MachineSpec, MachineStatus  # noqa: E402
from vac.backends.fake import FakeBackend  # noqa: E402
from vac.config import load  # noqa: E402
from vac.cycle.backendpool import BackendPool  # noqa: E402
from vac.cycle.factory import Factory  # noqa: E402
from vac.host import facts, pressure  # noqa: E402
from vac.machine.directory import MachineDir, MachineState  # noqa: E402

CONF = """
[settings]
vac_space = pressure.example.com
factory_name = bench-pressure.example.com
state_dir = {state}
enable_fake_backend = true
host_processors = {slots}
max_creations_per_cycle = {slots}
overload_per_processor = {overload}
pressure_io_full = {io_full}
pressure_memory_some = {memory_some}

[machinetype burn]
machine_model = fake
target_share = 1
user_data = {user_data}
fake_run_seconds = 100000
backoff_seconds = 0
"""
GATES = {"load gate": {"overload": "1.5", "io_full": "", "memory_some": ""},
         "pressure gate": {"overload": "1000", "io_full": "40", "memory_some": "20"}}
IO_PAYLOAD = ("import os, sys, time\n"
              "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)\n"
              "block, i = b'x' * 4096, 0\n"
              "while True:\n"
              "    os.pwrite(fd, block, (i % 256) * 4096); os.fsync(fd); i += 1\n")
BURNER = "x = 0\nwhile True:\n    x += 1\n"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (0.0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


class BurnerBackend(FakeBackend):
    """The fake model's machines as CPU-bound local processes, until destroyed."""

    def __init__(self, settings):
        super().__init__(settings)
        self.procs: Dict[str, subprocess.Popen] = {}
        self.delivered = 0.0

    def create(self, spec: MachineSpec) -> str:
        self.procs[spec.name] = subprocess.Popen([sys.executable, "-c", BURNER])
        return spec.uuid

    def status(self, name: str, directory: Optional[MachineDir]) -> MachineStatus:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return MachineStatus(name=name, state=MachineState.SHUTDOWN)
        return MachineStatus(name=name, state=MachineState.RUNNING, backend_id=str(proc.pid),
                             cpu_seconds=cpu_seconds(proc.pid))

    def collect(self, name: str, directory: MachineDir) -> MachineStatus:
        return self.status(name, directory)

    def list_machines(self) -> List[MachineStatus]:
        return [self.status(name, None) for name in self.procs]

    def destroy(self, name: str, directory: Optional[MachineDir]) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None:
            self.delivered += cpu_seconds(proc.pid)
            proc.kill()
            proc.wait()

    def running(self) -> int:
        return sum(1 for p in self.procs.values() if p.poll() is None)

    def stop_all(self) -> float:
        """Kill every machine; the CPU seconds they delivered in all."""
        for name in list(self.procs):
            self.destroy(name, None)
        return self.delivered


def phase(gate: str, slots: int, seconds: float, cycle: float, work: str) -> Dict:
    """One phase of a real Factory with this gate: its samples and CPU seconds."""
    state = tempfile.mkdtemp(prefix="phase-", dir=work)
    user_data = os.path.join(work, "user_data")
    conf = os.path.join(work, f"vac-{gate.split()[0]}.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(state=state, slots=slots, user_data=user_data, **GATES[gate]))
    host = facts.HostFacts.read()

    def read_config():
        return load.build(load.read_raw([conf]), host)
    backend = BurnerBackend(read_config().settings)
    factory = Factory(read_config, BackendPool(read_config().settings, {"fake": backend}))
    factory.started -= 10_000     # past any start-up hold
    samples, reasons = [], {}
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            factory.run_cycle()
            record = planfile.read(os.path.join(state, "plan.json"))
            for reason in record.idle.values() if record else ():
                for single in reason.each():
                    reasons[single.kind] = reasons.get(single.kind, 0) + 1
            io = pressure.read_file("/proc/pressure/io")
            samples.append((backend.running(), os.getloadavg()[0], io.some.avg10,
                            io.full.avg10 if io.full else 0.0))
            time.sleep(cycle)
    finally:
        delivered = backend.stop_all()
    return {"gate": gate, "samples": samples, "cpu": delivered, "reasons": reasons}


def start_io(count: int, work: str) -> List[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", IO_PAYLOAD, os.path.join(work, f"io{i}")])
            for i in range(count)]


def report(results: List[Dict], slots: int, seconds: float) -> None:
    print(f"\n{'gate':<14} {'slots filled':>12} {'CPU s':>7} {'CPU s/slot-s':>12} "
          f"{'load 1m':>8} {'io some':>8} {'io full':>8}  idle reasons (cycles x slots)")
    for r in results:
        s = r["samples"]
        filled = statistics.mean(x[0] for x in s)
        print(f"{r['gate']:<14} {filled:>7.2f} of {slots:<2} {r['cpu']:>7.1f} "
              f"{r['cpu'] / (slots * seconds):>12.2f} {statistics.mean(x[1] for x in s):>8.2f} "
              f"{statistics.mean(x[2] for x in s):>7.1f}% {statistics.mean(x[3] for x in s):>7.1f}%"
              f"  {', '.join(f'{k} {v}' for k, v in sorted(r['reasons'].items())) or '-'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--io", type=int, default=6, help="I/O-bound payloads (default 6)")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--phase", type=float, default=45.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2, help="phases of each gate")
    parser.add_argument("--warmup", type=float, default=60.0,
                        help="seconds of I/O load before the first phase (the load average)")
    parser.add_argument("--cycle", type=float, default=3.0, help="seconds between cycles")
    args = parser.parse_args()
    if not os.path.exists("/proc/pressure/io"):
        print("this host has no pressure stall information (/proc/pressure)", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="vac-bench-pressure-", dir="/var/tmp")
    with open(os.path.join(work, "user_data"), "w") as f:
        f.write("#!/bin/sh\n")
    io = start_io(args.io, work)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results: Dict[str, Dict] = {}
    try:
        print(f"{args.io} I/O-bound payloads; {args.warmup:.0f} s for the load average to "
              f"climb; then {args.rounds} x {args.phase:.0f} s per gate, alternating, "
              f"{args.slots} slots", flush=True)
        time.sleep(args.warmup)
        for i in range(args.rounds):
            for gate in (list(GATES) if i % 2 == 0 else list(reversed(GATES))):
                r = phase(gate, args.slots, args.phase, args.cycle, work)
                print(f"  {gate}: {statistics.mean(x[0] for x in r['samples']):.2f} slots, "
                      f"{r['cpu']:.1f} CPU s", flush=True)
                kept = results.setdefault(gate, {"gate": gate, "samples": [], "cpu": 0.0,
                                                 "reasons": {}})
                kept["samples"] += r["samples"]
                kept["cpu"] += r["cpu"]
                for k, v in r["reasons"].items():
                    kept["reasons"][k] = kept["reasons"].get(k, 0) + v
    finally:
        for proc in io:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    report(list(results.values()), args.slots, args.phase * args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
