# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: the accounting cost per finished machine and one metrics scrape at 1,000 slots.

(a) records.settle() over 1,000 finished machines marked pending (read the directory, build
    the record, check it against the loader's rules, archive it, queue it with dirq, unmark),
    beside the bare minimum of the same I/O (one archive file write and one QueueSimple.add()
    of a ready-made text per machine), alternating, on the same filesystem.
(b) one scrape of the metrics endpoint's registry (generate_latest) with 1,000 slots, half
    running, half shut down.
Run:

    python3 bench/accounting.py [--machines N] [--repeat R]
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dirq.QueueSimple import QueueSimple  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from vac import fsutil  # noqa: E402
from vac.accounting import records  # noqa: E402
from vac.config import load  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record  # noqa: E402
from vac.machine.slots import make_slots  # noqa: E402
from vac.web.metrics import Metrics  # noqa: E402

NOW = time.time()
CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
state_dir = {state}
host_processors = {slots}
enable_fake_backend = true
gocdb_sitename = UKI-BENCH
hs06_per_processor = 10

[machinetype alpha]
machine_model = fake
target_share = 1
fizzle_seconds = 60
accounting_fqan = /lhcb/Role=pilot
"""


def make_state(root: str, slots: int, finished_every: int = 1):
    state = os.path.join(root, "state")
    conf = os.path.join(root, "vac.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(state=state, slots=slots))
    host = HostFacts(fqdn="f1.example.com", processors=slots, uid_of=lambda u: None,
                     vg_exists=lambda n: False)
    config = load.build(load.read_raw([conf]), host)
    paths = config.settings.paths
    paths.ensure()
    for n, slot in enumerate(make_slots("f1.example.com", slots)):
        created = int(NOW) - 7200
        d = MachineDir.create(paths, created, "alpha", slot.name)
        write_slot_record(paths, slot.name, SlotRecord(created, "alpha", "fake"))
        d.write("jobfeatures/job_id", str(uuid.uuid4()))
        d.write("jobfeatures/allocated_cpu", "1\n")
        d.write("jobfeatures/max_rss_bytes", str(2048 * 1048576))
        d.write("machinefeatures/hs06", "10.0")
        d.write("accounting_fqan", "/lhcb/Role=pilot")
        d.write("started", str(created), mtime=created)
        d.write("heartbeat", "3500.0 97.2", mtime=NOW - 60)
        if n % finished_every == 0:
            d.write("joboutputs/shutdown_message", "200 Success")
            fsutil.touch(d.file("finished"), NOW - 30)
    return config


def settle_once(machines: int) -> float:
    root = tempfile.mkdtemp(prefix="vac-bench-acct-")
    try:
        config = make_state(root, machines)
        for name in os.listdir(config.settings.paths.machines):
            records.mark_pending(config.settings.paths,
                                 MachineDir(os.path.join(config.settings.paths.machines, name)))
        began = time.perf_counter()
        result = records.settle(config, NOW)
        took = time.perf_counter() - began
        assert len(result.queued) == machines, result
        return took / machines
    finally:
        shutil.rmtree(root)


def bare_once(machines: int, text: str) -> float:
    root = tempfile.mkdtemp(prefix="vac-bench-bare-")
    try:
        os.makedirs(os.path.join(root, "archive"))
        queue = QueueSimple(os.path.join(root, "outgoing"))
        began = time.perf_counter()
        for n in range(machines):
            with open(os.path.join(root, "archive", f"{n:014d}"), "w") as f:
                f.write(text)
            queue.add(text)
        return (time.perf_counter() - began) / machines
    finally:
        shutil.rmtree(root)


def scrape_times(slots: int, repeat: int):
    root = tempfile.mkdtemp(prefix="vac-bench-metrics-")
    try:
        config = make_state(root, slots, finished_every=2)   # half running, half shut down
        metrics = Metrics(lambda: config)
        for _ in range(20):
            metrics.creations.labels("alpha").inc()
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            body = generate_latest(metrics.registry)
            times.append(time.perf_counter() - began)
        assert b'vac_slots{machinetype="alpha",state="running"} 500.0' in body, body
        return times, len(body)
    finally:
        shutil.rmtree(root)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    text = ("APEL-individual-job-message: v0.3\n" + "Key: value\n" * 19 + "%%\n")
    ours, bare = [], []
    for _ in range(args.repeat):      # alternate, so drifts hit both alike
        ours.append(settle_once(args.machines))
        bare.append(bare_once(args.machines, text))
    o, b = statistics.median(ours), statistics.median(bare)
    print(f"(a) accounting per finished machine ({args.machines} machines, median of "
          f"{args.repeat}): settle {o * 1e6:.0f} us, bare archive write + dirq add "
          f"{b * 1e6:.0f} us, ratio {o / b:.2f}")
    times, size = scrape_times(1000, max(args.repeat * 4, 20))
    print(f"(b) one metrics scrape at 1,000 slots: median {statistics.median(times) * 1e3:.1f} "
          f"ms, max {max(times) * 1e3:.1f} ms ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
