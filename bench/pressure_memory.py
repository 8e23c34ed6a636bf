# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: memory overcommitted, side by side in one run: the load average gate alone, the
pressure gate, and the pressure gate with shedding (scenario 1 of admission by pressure).

Docker machines whose memory limits sum to about twice the host's RAM, each payload taking 128
MiB at once, then growing its resident memory slowly (8 MiB at a time, a second apart, to 480
MiB) and ending with 200 Success once grown. A
real Factory (the real load average and /proc/pressure) runs cycles for a phase with each
configuration in turn, creating one machine a cycle; a machine that ends frees its slot for the
next. Each phase reports the machines created, those that finished with 200, those the OOM
killer ended (Vac's 700 message), those shed (100), those still running when the phase ended,
the kernel's OOM kills (/proc/vmstat oom_kill, the cgroups' included), the payload work done
(MiB grown, in all) and the highest memory pressure the cycles saw.

    load gate        overload_per_processor 1.5, no pressure thresholds
    pressure gate    the same, and pressure_memory_some 20 (the default)
    shedding         the same, and shed_memory_full 5 with shed_grace_seconds 10

It is made for the cgroup v2 guest, given 1.5 GB of RAM (6 x 512 MiB is twice that; under
TCG a payload grows about 1 MiB a second, too slowly to fill the usual 3 GB in a phase), where
pytest runs it (a file named on the command line is collected whatever its name):

    VAC_V2_MEMORY_MB=1536 VAC_V2_LOGDIR=/var/log/vac-v2-bench bash scripts/ci/run-v2-tests.sh \\
        tests/integration/test_machine_pressure.py bench/pressure_memory.py -s

or as root on any host with Docker and the vac-test/busybox:1 image:
python3 bench/pressure_memory.py [--slots 6] [--mb 512] [--phase 240].
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__":
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
    sys.path.insert(0, os.path.dirname(HERE))

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
{shed}

[machinetype grow]
machine_model = docker
root_image = docker://{image}
user_data = {user_data}
target_share = 1
backoff_seconds = 0
"""
CONFIGS = {"load gate": {"memory_some": "", "shed": ""},
           "pressure gate": {"memory_some": "20", "shed": ""},
           "shedding": {"memory_some": "20",
                        "shed": "shed_memory_full = 5\nshed_grace_seconds = 10"}}
STEP_MB = 8
# Takes `base` MiB at once, then grows 8 MiB a second, in a busybox tail that keeps its one
# endless line; writes its progress (MiB taken) and, once fully grown, 200 Success. An OOM
# kill of the tail ends the loop.
PAYLOAD = """#!/bin/sh
J=/var/spool/joboutputs
i=0
{{ head -c {base}m /dev/zero; echo {base} > $J/progress
while [ $i -lt {steps} ]; do
  head -c {step}m /dev/zero || exit 1
  i=$((i + 1)); echo $(({base} + i * {step})) > $J/progress; sleep 1
done; }} | tail > /dev/null
[ "$(cat $J/progress)" -ge {total} ] && echo "200 Success" > $J/shutdown_message
exit 0
"""


def oom_kills() -> int:
    with open("/proc/vmstat") as f:
        for line in f:
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    return 0


def memory_pressure() -> tuple:
    stall = pressure.read_file("/proc/pressure/memory")
    return stall.some.avg10, stall.full.avg10 if stall.full else 0.0


def outcomes(state: str) -> Dict[str, int]:
    """Machines by the code of their shutdown message, and the MiB their payloads grew."""
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


def phase(name: str, args, work: str) -> Dict:
    state = tempfile.mkdtemp(prefix="phase-", dir=work)
    os.chmod(state, 0o755)
    user_data = os.path.join(work, "user_data")
    steps = (args.grow_mb - args.base_mb) // STEP_MB
    with open(user_data, "w") as f:
        f.write(PAYLOAD.format(base=args.base_mb, steps=steps, step=STEP_MB,
                               total=args.base_mb + steps * STEP_MB))
    conf = os.path.join(work, f"{name.split()[0]}.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(factory=f"m{uuid.uuid4().hex[:8]}.example.com", state=state,
                            slots=args.slots, mb=args.mb, image=IMAGE, user_data=user_data,
                            overload=args.overload,
                            **CONFIGS[name]))
    host = facts.HostFacts.read()

    def read_config():
        return load.build(load.read_raw([conf]), host)
    factory = Factory(read_config)
    factory.started -= 10_000
    kills, peak = oom_kills(), [0.0, 0.0]
    end = time.monotonic() + args.phase
    try:
        while time.monotonic() < end:
            factory.run_cycle()
            some, full = memory_pressure()
            peak[0], peak[1] = max(peak[0], some), max(peak[1], full)
            time.sleep(args.cycle)
    finally:
        backend = DockerBackend(read_config().settings)
        running = backend.list_machines()
        for machine in running:
            backend.destroy(machine.name, None)
    result = outcomes(state)
    result.update(gate=name, running=len(running), kernel=oom_kills() - kills,
                  some=peak[0], full=peak[1])
    return result


def report(results: List[Dict], args) -> str:
    lines = [f"{args.slots} slots x {args.mb} MiB limits; payloads take {args.base_mb} MiB, "
             f"then grow to {args.grow_mb} MiB by {STEP_MB} MiB a second; "
             f"{args.phase:.0f} s per phase",
             f"{'':<14} {'created':>7} {'200':>4} {'OOM 700':>7} {'shed 100':>8} "
             f"{'cut':>4} {'kernel OOM':>10} {'MiB grown':>9} {'mem some':>8} {'mem full':>8}"]
    for r in results:
        lines.append(f"{r['gate']:<14} {r['created']:>7} {r['200']:>4} {r['700']:>7} "
                     f"{r['100']:>8} {r['running']:>4} {r['kernel']:>10} {r['mib']:>9} "
                     f"{r['some']:>7.1f}% {r['full']:>7.1f}%")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=6)
    parser.add_argument("--mb", type=int, default=512, help="memory limit per machine (MiB)")
    parser.add_argument("--grow-mb", type=int, default=480, help="what each payload grows to")
    parser.add_argument("--base-mb", type=int, default=128, help="what it takes at once")
    parser.add_argument("--phase", type=float, default=240.0, help="seconds per phase")
    parser.add_argument("--cycle", type=float, default=5.0, help="seconds between cycles")
    parser.add_argument("--overload", type=float, default=1.5,
                        help="overload_per_processor in every phase (the load gate)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="seconds between phases, for the pressure averages to fall")
    args = parser.parse_args(argv)
    try:   # spare the factory, as vacd's unit does (lowering it needs CAP_SYS_RESOURCE)
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-900")
    except OSError as e:
        print(f"the factory's oom_score_adj stays: {e}", flush=True)
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
