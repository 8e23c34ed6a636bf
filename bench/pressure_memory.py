# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: memory overcommitted, side by side in one run: the load average gate alone, the
pressure gate, and the pressure gate with shedding (scenario 1 of admission by pressure).

Docker machines whose memory limits sum to about twice the host's RAM (8 x 256 MiB for a
guest of 1 GiB), each payload taking 32 MiB at once, then growing its resident memory (32 MiB
more every 5 s or so, to 224 MiB), holding it 2 minutes and ending with 200 Success. A
real Factory (the real load average and /proc/pressure) runs cycles for a phase with each
configuration in turn, creating one machine a cycle; a machine that ends frees its slot for the
next. Each phase reports the machines created, those that finished with 200, those the OOM
killer ended (Vac's 700 message), those shed (100), those still running when the phase ended,
the kernel's OOM kills (/proc/vmstat oom_kill, the cgroups' included) with their victims' names
from the kernel log, the payload work done (MiB taken, in all), the highest memory pressure the
cycles saw and the cycles whose creation the pressure or the load gate stopped; and a trace, a
line a cycle, of the slots busy, MemAvailable, memory and io pressure, the load and the kills.

    load gate        overload_per_processor 1.5, no pressure thresholds
    pressure gate    the same, and pressure_memory_some 20 (the default) and admission by
                     memory, memory_overcommit 1.0 (vac.cycle.memorygate)
    shedding         the same, and shed_memory_full 5 with shed_grace_seconds 10

Each phase prints what its configuration sets, and the trace says M for a cycle that admission
by memory stopped (P for the pressure gate, L for the load gate).

An OOM kill's 700 is an abort, after which Vac backs off the machinetype for backoff_seconds
plus, while any machine is younger, fizzle_seconds (600 by default): in every phase alike that
would stop creation after the first kill, and the phases would show the backoff rather than
the gates. So the machinetype has backoff_seconds 0 and fizzle_seconds 0 (--fizzle 600 for
Vac's default); the trace says B for a cycle the backoff stopped.

How a payload takes memory: each step is one busybox dd reading a block of /dev/zero into a
buffer of the step's size (the kernel touches the pages in one read) and then blocking for
ever writing it to a pipe whose reader never reads, so it holds the pages. Under the guest's
TCG, touching pages through many small copies (head | tail keeping one endless line) grew
about 1 MiB/s a payload, too slowly to overcommit in a phase; the run starts by measuring
both ways (MiB/s outside any container). A payload watches its dd's: one killed (the OOM
killer chose it) ends the payload at once without 200, and Vac writes its 700 message.

It is made for the cgroup v2 guest, given 1 GiB of RAM, where pytest runs it (a file named on
the command line is collected whatever its name; naming a tests/ file too replaces the guest's
own selection, and -k keeps only this benchmark):

    VAC_V2_MEMORY_MB=1024 VAC_V2_LOGDIR=/var/log/vac-v2-bench bash scripts/ci/run-v2-tests.sh \\
        tests/integration/test_machine_pressure.py bench/pressure_memory.py -k side_by_side -s

or as root on any host with Docker and the vac-test/busybox:1 image:
python3 bench/pressure_memory.py [--slots 8] [--mb 256] [--phase 300].
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__":
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
    sys.path.insert(0, os.path.dirname(HERE))

from vac import planfile  # noqa: E402
from vac.backends.docker.backend import DockerBackend  # noqa: E402
from vac.config import load  # noqa: E402
from vac.cycle.factory import Factory  # noqa: E402
from vac.host import facts, pressure  # noqa: E402
from vac.machine.directory import MachineDir  # noqa: E402

IMAGE = "vac-test/busybox:1"
CONF = """
[settings]
vac_space = memory.example.com
factory_name = {factory}
state_dir = {state}
host_processors = {slots}
mb_per_processor = {mb}
max_creations_per_cycle = 1
overload_per_processor = {overload}
backend_timeout_seconds = 120
pressure_io_full =
pressure_memory_some = {memory_some}
{memory}
{shed}

[machinetype grow]
machine_model = docker
root_image = docker://{image}
user_data = {user_data}
target_share = 1
backoff_seconds = 0
fizzle_seconds = {fizzle}
"""
MEMORY = "memory_overcommit = 1.0"
CONFIGS = {"load gate": {"memory_some": "", "memory": "", "shed": ""},
           "pressure gate": {"memory_some": "20", "memory": MEMORY, "shed": ""},
           "shedding": {"memory_some": "20", "memory": MEMORY,
                        "shed": "shed_memory_full = 5\nshed_grace_seconds = 10"}}
# take SIZE N: a dd holds SIZE MiB (blocked writing to a pipe nobody reads) once its resident
# size shows the pages touched; its pid goes into $HELD. alive: every dd still there.
PAYLOAD = """#!/bin/sh
J=/var/spool/joboutputs
HELD=
take() {{
  sh -c "echo \\$\\$ > /tmp/held.$2; exec dd if=/dev/zero bs=$1M count=1 2>/dev/null" \\
    | sleep 2147483647 &
  until [ -s /tmp/held.$2 ]; do sleep 0.1; done
  pid=$(cat /tmp/held.$2)
  HELD="$HELD $pid"
  while kill -0 $pid 2>/dev/null; do
    kb=$(sed -n 's/^VmRSS:[^0-9]*\\([0-9]*\\) kB$/\\1/p' /proc/$pid/status 2>/dev/null)
    [ "${{kb:-0}}" -ge $(($1 * 1000)) ] && return 0
    sleep 0.2
  done
  return 1
}}
alive() {{ for p in $HELD; do kill -0 $p 2>/dev/null || return 1; done; }}
take {base} 0 && alive || exit 1
echo {base} > $J/progress
i=1
while [ $i -le {steps} ]; do
  sleep {interval}
  take {step} $i && alive || exit 1
  echo $(({base} + i * {step})) > $J/progress
  i=$((i + 1))
done
n=0
while [ $n -lt {hold} ]; do sleep 5; alive || exit 1; n=$((n + 5)); done
echo "200 Success" > $J/shutdown_message
exit 0
"""
KILLED = re.compile(r"(Memory cgroup out of memory|Out of memory).*Killed process \d+ \((.+?)\) "
                    r"total-vm")


def oom_kills() -> int:
    with open("/proc/vmstat") as f:
        for line in f:
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    return 0


def available_mib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return -1


def avg10(resource: str, line: str) -> float:
    stall = pressure.read_file(f"/proc/pressure/{resource}")
    found = stall.line(line)
    return found.avg10 if found is not None else 0.0


class KernelLog:
    """The kernel's OOM kills as they are logged, each victim as "cgroup:NAME" or "host:NAME",
    read from /dev/kmsg (from where it stood when opened) a cycle at a time: reading the whole
    ring buffer at the end of a phase (dmesg) misses the first kills once the long OOM reports
    have filled it."""

    def __init__(self):
        self.victims: Counter = Counter()
        try:
            self.fd: Optional[int] = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.fd = None

    def read(self) -> None:
        while self.fd is not None:
            try:
                record = os.read(self.fd, 8192)
            except BrokenPipeError:   # overwritten before it was read: on to the next
                continue
            except OSError:           # nothing more now (EAGAIN), or unreadable
                return
            if not record:
                return
            self.count(record.decode(errors="replace").split(";", 1)[-1])

    def count(self, message: str) -> None:
        for m in KILLED.finditer(message):
            self.victims[("cgroup:" if m.group(1).startswith("Memory") else "host:") +
                         m.group(2)] += 1

    def close(self) -> Dict[str, int]:
        self.read()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        return dict(self.victims)


def touch_rate(command: str, mib: int) -> str:
    """MiB/s of one way of touching fresh pages, run here (outside any container)."""
    if not shutil.which("busybox"):
        return "no busybox"
    start = time.monotonic()
    done = subprocess.run(["sh", "-c", command.format(mib=mib)], timeout=600)
    took = time.monotonic() - start
    return f"{mib / took:.1f} MiB/s" if done.returncode == 0 else f"exit {done.returncode}"


def boot_done(limit: float = 900.0) -> str:
    """In the v2 guest: wait until systemd has no job left but the one running this benchmark
    (the guest loads its test image into Podman at boot), so no phase shares the host with it."""
    if not os.environ.get("VAC_V2_GUEST") or not shutil.which("systemctl"):
        return "not in the v2 guest: nothing waited for"
    start = time.monotonic()
    while time.monotonic() < start + limit:
        jobs = subprocess.run(["systemctl", "list-jobs", "--no-legend", "--plain"],
                              capture_output=True, text=True, timeout=60).stdout.split("\n")
        units = [j.split()[1] for j in jobs if len(j.split()) > 1]
        left = [u for u in units if not u.endswith(".target") and u != "vac-v2-run.service"]
        if not left:
            return f"the guest's boot jobs done after {time.monotonic() - start:.0f} s"
        time.sleep(5)
    return f"boot jobs still running after {limit:.0f} s: {' '.join(left)}"


def calibrate(mib: int = 32) -> str:
    dd = touch_rate("busybox dd if=/dev/zero of=/dev/null bs={mib}M count=1 2>/dev/null", mib)
    tail = touch_rate("busybox head -c {mib}m /dev/zero | busybox tail >/dev/null", mib)
    return f"touching {mib} MiB of fresh pages: one dd read {dd}; head | tail {tail}"


def outcomes(state: str) -> Dict[str, int]:
    """Machines by the code of their shutdown message, and the MiB their payloads took."""
    found = {"created": 0, "200": 0, "700": 0, "100": 0, "other": 0, "mib": 0}
    machines = os.path.join(state, "machines")
    for name in os.listdir(machines) if os.path.isdir(machines) else ():
        d = MachineDir(os.path.join(machines, name))
        found["created"] += 1
        code = (d.shutdown_message or "").split(" ", 1)[0]
        found[code if code in ("200", "700", "100") else "other"] += 1
        text = d.read("joboutputs/progress", 64) or "0"
        found["mib"] += int(text.strip()) if text.strip().isdigit() else 0
    return found


def taken_now(state: str) -> int:
    """MiB the payloads still running have taken (their progress files)."""
    total = 0
    machines = os.path.join(state, "machines")
    for name in os.listdir(machines) if os.path.isdir(machines) else ():
        d = MachineDir(os.path.join(machines, name))
        text = (d.read("joboutputs/progress", 64) or "").strip()
        if d.shutdown_message is None and text.isdigit():
            total += int(text)
    return total


MEMORY_STOP = "memory"   # admission by memory: a PRESSURE reason whose text starts "memory: "
STOPS = {MEMORY_STOP: "M", planfile.PRESSURE: "P", planfile.OVERLOAD: "L",
         planfile.BACKOFF: "B"}


def stopped_by(report) -> str:
    """What stopped creation this cycle: M (admission by memory), P (the pressure gate,
    shedding's hold too), L (the load gate), B (a backoff after an abort), the name of any
    other kind but max_creations_per_cycle, - (nothing)."""
    kinds = set()
    for reason in report.reasons.values():
        kinds.update(MEMORY_STOP if r.text.startswith("memory: ") else r.kind
                     for r in (reason,) + tuple(reason.parts))
    others = sorted(kinds - set(STOPS) - {planfile.MAX_CREATIONS})
    return "".join(letter for kind, letter in STOPS.items() if kind in kinds) + \
        "".join(f" {kind}" for kind in others) or "-"


def trace_line(t: float, slots: int, report, kills: int, taken: int) -> str:
    some, full = avg10("memory", "some"), avg10("memory", "full")
    return (f"    {t:5.0f} s  busy {slots - len(report.idle)}/{slots}  "
            f"+{len(report.created)} -{len(report.finished) + len(report.destroyed)}  "
            f"taken {taken:4d}  avail {available_mib():4d} MiB  "
            f"mem some {some:5.1f} full {full:5.1f}  "
            f"io full {avg10('io', 'full'):5.1f}  load {facts.read_loadavg()[0]:5.2f}  "
            f"oom {kills}  stop {stopped_by(report)}")


def write_files(name: str, args, work: str, state: str) -> str:
    user_data = os.path.join(work, "user_data")
    steps = (args.grow_mb - args.base_mb) // args.step_mb
    with open(user_data, "w") as f:
        f.write(PAYLOAD.format(base=args.base_mb, steps=steps, step=args.step_mb,
                               interval=args.interval, hold=args.hold))
    conf = os.path.join(work, f"{name.split()[0]}.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(factory=f"m{uuid.uuid4().hex[:8]}.example.com", state=state,
                            slots=args.slots, mb=args.mb, image=IMAGE, user_data=user_data,
                            overload=args.overload, fizzle=args.fizzle, **CONFIGS[name]))
    return conf


def clear(settings) -> None:
    """Destroy the phase's containers left, running or not (each tried on its own)."""
    backend = DockerBackend(settings)
    for machine in backend.list_machines():
        try:
            backend.destroy(machine.name, None)
        except Exception as e:  # noqa: BLE001
            print(f"    {machine.name} not destroyed: {e}", flush=True)


def phase(name: str, args, work: str) -> Dict:
    state = tempfile.mkdtemp(prefix="phase-", dir=work)
    os.chmod(state, 0o755)
    conf = write_files(name, args, work, state)
    host = facts.HostFacts.read()

    def read_config():
        return load.build(load.read_raw([conf]), host)
    factory = Factory(read_config)
    factory.started -= 10_000
    kills, kmsg, peak = oom_kills(), KernelLog(), [0.0, 0.0]
    stops = Counter()
    print(f"  {name}: MemAvailable {available_mib()} MiB at the start; sets "
          f"{settings_said(name)}", flush=True)
    start = time.monotonic()
    try:
        while time.monotonic() < start + args.phase:
            try:   # one cycle failing (the engine slow under the squeeze) ends no phase
                report = factory.run_cycle()
            except Exception as e:  # noqa: BLE001
                print(f"    a cycle failed: {type(e).__name__}: {e}", flush=True)
                time.sleep(args.cycle)
                continue
            line = trace_line(time.monotonic() - start, args.slots, report,
                              oom_kills() - kills, taken_now(state))
            print(line, flush=True)
            peak[0] = max(peak[0], avg10("memory", "some"))
            peak[1] = max(peak[1], avg10("memory", "full"))
            stops.update(stopped_by(report))
            kmsg.read()
            time.sleep(args.cycle)
    finally:
        clear(read_config().settings)
    result = outcomes(state)   # "other": no message, still running when the phase ended
    result.update(gate=name, kernel=oom_kills() - kills,
                  some=peak[0], full=peak[1], paused_m=stops["M"], paused_p=stops["P"],
                  paused_l=stops["L"],
                  backoff=stops["B"],
                  victims=kmsg.close())
    return result


def settings_said(name: str) -> str:
    """What a configuration sets beside overload_per_processor, on one line."""
    said = [f"pressure_memory_some = {CONFIGS[name]['memory_some'] or '(off)'}",
            CONFIGS[name]["memory"] or "memory_overcommit unset (admission by memory off)"]
    return "; ".join(said + CONFIGS[name]["shed"].splitlines())


def report(results: List[Dict], args) -> str:
    lines = [f"{args.slots} slots x {args.mb} MiB limits, {available_mib()} MiB available "
             f"now; payloads take {args.base_mb} MiB, then {args.step_mb} MiB every "
             f"{args.interval} s or so to {args.grow_mb} MiB, hold it {args.hold} s, end 200; "
             f"{args.phase:.0f} s per phase, a cycle every {args.cycle:g} s; backoff_seconds 0, "
             f"fizzle_seconds {args.fizzle}",
             f"{'':<14} {'created':>7} {'200':>4} {'OOM 700':>7} {'shed 100':>8} "
             f"{'cut':>4} {'kernel OOM':>10} {'MiB taken':>9} {'mem some':>8} {'mem full':>8} "
             f"{'cycles M/P/L/B':>14}"]
    for r in results:
        lines.append(f"{r['gate']:<14} {r['created']:>7} {r['200']:>4} {r['700']:>7} "
                     f"{r['100']:>8} {r['other']:>4} {r['kernel']:>10} {r['mib']:>9} "
                     f"{r['some']:>7.1f}% {r['full']:>7.1f}% "
                     f"{r['paused_m']:>6}/{r['paused_p']}/{r['paused_l']}/{r['backoff']}")
    lines += [f"{r['gate']}: OOM victims {r['victims'] or 'none'}" for r in results]
    lines += [f"{r['gate']}: sets {settings_said(r['gate'])}" for r in results]
    return "\n".join(lines)


def arguments(argv: Optional[List[str]]):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--mb", type=int, default=256, help="memory limit per machine (MiB)")
    parser.add_argument("--grow-mb", type=int, default=224, help="what each payload grows to")
    parser.add_argument("--base-mb", type=int, default=32, help="what it takes at once")
    parser.add_argument("--step-mb", type=int, default=32, help="what it takes at each step")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between steps")
    parser.add_argument("--hold", type=int, default=120, help="seconds held once grown")
    parser.add_argument("--phase", type=float, default=300.0, help="seconds per phase")
    parser.add_argument("--cycle", type=float, default=5.0, help="seconds between cycles")
    parser.add_argument("--overload", type=float, default=1.5,
                        help="overload_per_processor in every phase (the load gate)")
    parser.add_argument("--fizzle", type=int, default=0,
                        help="the machinetype's fizzle_seconds: an OOM kill (700) is an abort, "
                             "and creation backs off for backoff_seconds (0 here) plus this "
                             "while any machine is younger (Vac's default 600)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds between phases, for the pressure averages to fall")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = arguments(argv)
    try:   # spare the factory, as vacd's unit does (lowering it needs CAP_SYS_RESOURCE)
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-900")
    except OSError as e:
        print(f"the factory's oom_score_adj stays: {e}", flush=True)
    print(boot_done(), flush=True)
    print(calibrate(), flush=True)
    work = tempfile.mkdtemp(prefix="vac-bench-memory-", dir="/var/tmp")
    os.chmod(work, 0o755)
    results = []
    try:
        for i, name in enumerate(CONFIGS):
            if i:
                time.sleep(args.settle)
            results.append(phase(name, args, work))
            print(f"  {name}: {results[-1]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report(results, args), flush=True)
    return 0


def test_memory_overcommitted_side_by_side():
    """For pytest in the v2 guest (see the module's docstring); prints the table (-s)."""
    assert main([]) == 0


if __name__ == "__main__":
    sys.exit(main())
