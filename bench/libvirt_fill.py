# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: VMs at engine speed, side by side in one run.

(a) Fill: one cycle of an empty 4-slot factory (libvirt_parallel_creations at its default)
    until libvirt says all 4 domains run, against createXML of the same 4 domain XMLs (the
    ones the backend rendered in an untimed warm-up) with 1, 2 and 4 calls at once. Target:
    ratio to the best raw fill <= 1.15.
(b) Refill: a real vacd with cycle_seconds = 60 runs 2 slots of the test guest, whose
    user_data writes 200 Success and powers off; the dead time of a slot is from libvirt's
    STOPPED event of a domain to the STARTED event of the next one of that name (events on a
    connection of the benchmark's own). Target: dead time <= raw createXML + 0.5 s.

Needs root, libvirtd (scripts/ci/setup-libvirt.sh) and the test guest. Run:

    python3 bench/libvirt_fill.py [--rounds N] [--refills N]
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
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, os.path.dirname(HERE))

from bench import rawlibvirt  # noqa: E402
from vac.config import load  # noqa: E402
from vac.cycle.factory import Factory  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402

URI = "qemu:///system"
WIDTHS = (1, 2, 4)
TARGET = 1.15
CONF = """
[settings]
state_dir = {state}
vac_space = bench.example.com
factory_name = {factory}
host_processors = {slots}
overload_per_processor = 1000
mb_per_processor = 256
libvirt_uri = {uri}
libvirt_shutdown_wait_seconds = 0

[machinetype bench]
machine_model = vm-raw
kernel = {guest}/vmlinuz
initrd = {guest}/initrd.img
cmdline = console=ttyS0 quiet
user_data = {user_data}
target_share = 1
backoff_seconds = 0
fizzle_seconds = 0
"""
SUCCEEDS = '#!/bin/sh\necho "200 Success" > "$JOBOUTPUTS_DIR/shutdown_message"\n'


def write_conf(top: str, slots: int, user_data: str, tag: str) -> str:
    os.makedirs(top, exist_ok=True)
    os.chmod(top, 0o755)
    path = os.path.join(top, "user_data")
    with open(path, "w") as f:
        f.write(user_data)
    conf = os.path.join(top, "vac.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(state=os.path.join(top, "state"), factory=f"{tag}.example.com",
                            slots=slots, uri=URI, guest=rawlibvirt.GUEST, user_data=path))
    return conf


def fill(conn, top: str, rounds: int):
    tag = f"lf{uuid.uuid4().hex[:6]}"
    host = HostFacts.read()
    names: List[str] = []

    def ours(n: int):
        """One cycle of a fresh empty factory (its own state dir) until 4 domains run."""
        conf = write_conf(os.path.join(top, f"fill{n}"), 4, rawlibvirt.SLEEPER, tag)
        factory = Factory(lambda: load.build(load.read_raw([conf]), host))
        with rawlibvirt.recording_xml() as seen:
            start = time.perf_counter()
            report = factory.run_cycle()
            for name in report.created:
                rawlibvirt.until_running(conn, name)
            took = time.perf_counter() - start
        if len(report.created) != 4:
            raise SystemExit(f"created {len(report.created)} of 4: {report.errors}")
        names[:] = report.created
        for name in names:
            rawlibvirt.kill(conn, name)
        return took, list(seen)

    _, xmls = ours(-1)       # warm-up; the raw side starts these XMLs (their dirs are kept)

    def raw(width: int) -> float:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=width) as pool:
            list(pool.map(lambda xml: conn.createXML(xml, 0), xmls))
        for name in names:
            rawlibvirt.until_running(conn, name)
        took = time.perf_counter() - start
        for name in names:
            rawlibvirt.kill(conn, name)
        return took

    mine: List[float] = []
    theirs: Dict[int, List[float]] = {w: [] for w in WIDTHS}
    for n in range(rounds):
        for width in WIDTHS:
            theirs[width].append(raw(width))
        mine.append(ours(n)[0])
    return mine, theirs


def refill(top: str, refills: int) -> List[float]:
    import libvirt

    libvirt.virEventRegisterDefaultImpl()
    tag = f"lr{uuid.uuid4().hex[:6]}"
    conf = write_conf(os.path.join(top, "refill"), 2, SUCCEEDS, tag)
    events: List[tuple] = []
    conn = libvirt.openReadOnly(URI)

    def lifecycle(_c, dom, event, _d, _o):
        if dom.name().startswith(tag):
            events.append((time.monotonic(), dom.name(), event))

    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)
    stop = threading.Event()
    libvirt.virEventAddTimeout(200, lambda *_: None, None)
    loop = threading.Thread(target=lambda: [libvirt.virEventRunDefaultImpl()
                                            for _ in iter(stop.is_set, True)], daemon=True)
    loop.start()
    log = open(os.path.join(top, "refill", "vacd.log"), "w")
    vacd = subprocess.Popen([sys.executable, "-m", "vac.daemon", "--config", conf,
                             "--foreground", "--cycle-seconds", "60"],
                            cwd=os.path.dirname(HERE), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60 + 15 * refills
        while time.monotonic() < deadline and sum(
                1 for e in events if e[2] == libvirt.VIR_DOMAIN_EVENT_STARTED) < refills + 2:
            time.sleep(0.5)
    finally:
        vacd.send_signal(signal.SIGTERM)
        vacd.wait(60)
        log.close()
        stop.set()
        rw = libvirt.open(URI)
        for dom in rw.listAllDomains(0):
            if dom.name().startswith(tag):
                rawlibvirt.kill(rw, dom.name())
    gaps, stopped = [], {}
    for when, name, event in events:
        if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
            stopped[name] = when
        elif event == libvirt.VIR_DOMAIN_EVENT_STARTED and name in stopped:
            gaps.append(when - stopped.pop(name))
    return gaps


def main() -> int:
    import libvirt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--refills", type=int, default=6)
    args = parser.parse_args()
    conn = libvirt.open(URI)
    top = tempfile.mkdtemp(prefix="vac-bench-vm-", dir="/var/tmp")
    os.chmod(top, 0o755)
    try:
        mine, theirs = fill(conn, top, args.rounds)
        gaps = refill(top, args.refills)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    best = min(WIDTHS, key=lambda w: statistics.median(theirs[w]))
    ratio = statistics.median(mine) / statistics.median(theirs[best])
    print(f"(a) fill 4 VMs, {args.rounds} rounds, medians")
    print(f"  vacd one cycle, 4 domains running      {statistics.median(mine) * 1000:8.0f} ms")
    for width in WIDTHS:
        print(f"  raw createXML, {width} at once              "
              f"{statistics.median(theirs[width]) * 1000:8.0f} ms"
              + ("  <- best" if width == best else ""))
    print(f"  ratio vacd / best raw = {ratio:.2f}  (target <= {TARGET}: "
          f"{'ok' if ratio <= TARGET else 'OVER TARGET'})")
    one = statistics.median(theirs[1]) / 4
    ok = ratio <= TARGET
    if gaps:
        verdict = statistics.median(gaps) <= one + 0.5
        ok = ok and verdict
        print(f"(b) refill, cycle_seconds = 60: slot dead time median "
              f"{statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms over "
              f"{len(gaps)}; raw createXML {one * 1000:.0f} ms each: "
              f"{'ok' if verdict else 'OVER TARGET'} (target <= raw + 0.5 s)")
    else:
        print("(b) refill: no refills seen")
        ok = False
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
