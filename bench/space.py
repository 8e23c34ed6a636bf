# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark the space: responder throughput, `vac machines` over 100 factories, and shares.

(a) A responder (its own process, 64 slots of fake machines) on loopback: factory queries
    answered per second and machines queries (64 replies each) per second, with a window of
    queries in flight.
(b) The `vac machines` client and rendering against 100 responders of 32 slots each on
    loopback ports (four processes of 25): wall time until every reply is in.
(c) A space simulation with the real planner and census code and a simulated clock: 50
    factories (--factories, e.g. 1000) x 32 slots, four machinetypes with target shares
    4:3:2:1 and random run times, every factory deciding each 60 s cycle from the space-wide
    census, in which each other factory counts as of its own last cycle (up to one cycle old,
    as in the space); the error between each machinetype's running HS06 share and its target
    at steady state, beside the same with the original's one creation per cycle (the two run
    side by side in two processes).

    python3 bench/space.py [--quick] [--factories N] [--hours H] [--simulation-only]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import socket
import sys
import tempfile
import time
from dataclasses import replace
from typing import Dict, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vac.backends.fake import FakeBackend  # noqa: E402
from vac.config import load  # noqa: E402
from vac.cycle import planner  # noqa: E402
from vac.cycle.backendpool import BackendPool  # noqa: E402
from vac.cycle.factory import Factory  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402
from vac.machine.directory import MachineState  # noqa: E402
from vac.machine.observed import Observed  # noqa: E402
from vac.machine.slots import machine_name, make_slots  # noqa: E402
from vac.space import censusdata, client, render  # noqa: E402
from vac.space.censusdata import Census  # noqa: E402
from vac.space import messages as m  # noqa: E402
from vac.space.responder import Responder  # noqa: E402

SPACE = "bench.example.com"
CONF = """
[settings]
vac_space = {space}
factory_name = {name}
state_dir = {state}
enable_fake_backend = true
overload_per_processor = 1000
host_processors = {slots}
max_creations_per_cycle = {creations}
vacquery_address = 127.0.0.1
vacquery_port = {port}
"""
MT = """
[machinetype {name}]
machine_model = fake
target_share = {share}
max_wallclock_seconds = 100000
fake_run_seconds = 100000
"""
TYPES = {"t1": 4, "t2": 3, "t3": 2, "t4": 1}


def config_text(name, state, slots, port=0, creations=1000):
    text = CONF.format(space=SPACE, name=name, state=state, slots=slots, port=port,
                       creations=creations)
    return text + "".join(MT.format(name=n, share=s) for n, s in TYPES.items())


def build(path, text, slots):
    with open(path, "w") as f:
        f.write(text)
    return load.build(load.read_raw([path]), HostFacts(fqdn="bench.example.com",
                                                         processors=slots))


def filled_factory(folder, name, slots, port):
    """A factory whose slots one fake-backend cycle has filled; its config loader."""
    path = os.path.join(folder, name + ".conf")
    text = config_text(name, os.path.join(folder, name), slots, port)
    conf = build(path, text, slots)
    pool = BackendPool(conf.settings, {"fake": FakeBackend(conf.settings)})
    factory = Factory(lambda: build(path, text, slots), pool, loadavg=lambda: (0.0, 0.0, 0.0))
    factory.run_cycle()
    return factory


def serve(folder, names, slots, ports, ready):
    responders = []
    for name, port in zip(names, ports):
        factory = filled_factory(folder, name, slots, port)
        responder = Responder(lambda f=factory: f.config)
        responder.start()
        responder.bound.wait(10)
        responders.append(responder)
    ready.set()
    time.sleep(3600)


def free_ports(n):
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_servers(folder, groups, slots):
    procs, ctx = [], multiprocessing.get_context("fork")
    for names, ports in groups:
        ready = ctx.Event()
        proc = ctx.Process(target=serve, args=(folder, names, slots, ports, ready), daemon=True)
        proc.start()
        procs.append((proc, ready))
    for _proc, ready in procs:
        ready.wait(300)
    return [p for p, _ in procs]


# (a) Responder throughput ---------------------------------------------------------------

def throughput(port, kind, seconds, window=32):
    salt = m.new_salt()
    data = m.encode(m.make_query(kind, SPACE, m.cookie_for(salt, "r.example.com"), "bench"))
    expect = 64 if kind == m.MACHINES else 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        s.settimeout(1.0)
        target = ("127.0.0.1", port)
        sent = replies = 0
        began = time.monotonic()
        for _ in range(window):
            s.sendto(data, target)
            sent += 1
        while time.monotonic() - began < seconds:
            try:
                s.recv(m.REPLY_LIMIT)
            except socket.timeout:
                break
            replies += 1
            if replies % expect == 0:
                s.sendto(data, target)
                sent += 1
        took = time.monotonic() - began
    return replies / expect / took, replies / took


def bench_responder(folder, seconds):
    port = free_ports(1)[0]
    procs = start_servers(folder, [(["r.example.com"], [port])], 64)
    try:
        fq, _ = throughput(port, m.FACTORY, seconds)
        mq, mr = throughput(port, m.MACHINES, seconds, window=2)
    finally:
        for p in procs:
            p.terminate()
    print(f"(a) responder: {fq:,.0f} factory queries/s (target >= 5,000); "
          f"{mq:,.0f} machines queries/s against 64 machines ({mr:,.0f} replies/s)")


# (b) vac machines against 100 factories ---------------------------------------------------

def bench_machines(folder, factories=100, slots=32, repeat=5):
    names = [f"f{i:03d}.example.com" for i in range(factories)]
    ports = free_ports(factories)
    groups = [(names[i::4], ports[i::4]) for i in range(4)]
    procs = start_servers(folder, groups, slots)
    addresses = {n: ("127.0.0.1", p) for n, p in zip(names, ports)}
    times = []
    try:
        for _ in range(repeat):
            began = time.monotonic()
            result = client.query(m.MACHINES, SPACE, names, 10.0, addresses=addresses)
            lines = render.machines_lines(result, time.time())
            times.append(time.monotonic() - began)
            check_listed(result, lines, names, slots)
    finally:
        for p in procs:
            p.terminate()
    times.sort()
    print(f"(b) vac machines, {factories} factories x {slots} slots: median "
          f"{times[len(times) // 2]:.3f} s (min {times[0]:.3f}, max {times[-1]:.3f}; "
          f"target < 1 s), {factories * slots} replies, {result.rounds} round(s)")


def check_listed(result, lines, names, slots):
    """Every slot of every factory listed, checked against the truth (its slot names): the
    result holds exactly those machines, all running, and the text has a line for each
    between the header and the totals."""
    for name in names:
        want = {machine_name(name, k) for k in range(slots)}
        got = result.replies.get(name, {})
        if set(got) != want or any(r.get("state") != "Running" for r in got.values()):
            raise SystemExit(f"{name}: {len(got)} of {slots} machines listed running "
                             f"(rounds {result.rounds}, short {result.short()[:3]})")
    body = lines[1:-1]
    if lines[0] != render.MACHINES_HEADER or len(body) != len(names) * slots or \
            not lines[-1].startswith(f"Total: {len(names) * slots} running machines"):
        raise SystemExit(f"vac machines printed {len(lines)} lines for "
                         f"{len(names) * slots} machines: {lines[-1]!r}")


# (c) Space simulation -------------------------------------------------------------------

class SimFactory:
    def __init__(self, i, slots):
        self.slots = make_slots(f"f{i:02d}.example.com", slots)
        self.index = {slot.name: k for k, slot in enumerate(self.slots)}
        self.machines: Dict[int, Tuple[str, float, float]] = {}   # ordinal -> (mt, start, end)

    def observed(self, now):
        return [self.observe(slot, now) for slot in self.slots]

    def observe(self, slot, now):
        held = self.machines.get(slot.ordinal)
        if held is None:
            return Observed(slot=slot, finished=True, processors=0)
        mt, start, end = held
        state = MachineState.SHUTDOWN if now >= end else MachineState.RUNNING
        return Observed(slot=slot, machinetype=mt, model="fake", state=state,
                        created=int(start), started=start, processors=1,
                        shutdown_time=int(start) + 100000, last_heartbeat=now,
                        shutdown_message="200 Success" if now >= end else None)

    def carry_out(self, plan, seen, now, rng):
        """Finish and create as planned; the slots as observed after (only those changed are
        observed again)."""
        after = list(seen)
        for finish in plan.finishes:
            k = self.index[finish.name]
            self.machines.pop(self.slots[k].ordinal)
            after[k] = self.observe(self.slots[k], now)
        for create in plan.creates:
            k = self.index[create.slot.name]
            self.machines[create.slot.ordinal] = (create.machinetype, now,
                                                  now + rng.uniform(3600, 4 * 3600))
            after[k] = self.observe(self.slots[k], now)
        return after


COUNTED = ("running_hs06", "num_before_fizzle", "running_machines", "running_processors")


class SiteCensus:
    """Every factory's census as it last counted it, and what each factory is told of the others.

    As in the space, a factory hears each other factory's census as that factory counted it
    at its own last cycle: up to one cycle old. others(i) gives exactly what
    add_census(every other factory's census, in factory order) would, without folding all of
    them for each factory (which made the simulation grow with the square of the factories):
    the counted fields are running totals less factory i's own; the last outcome and last
    abort, which are not sums, are folded with add_census from the factories whose census
    has an outcome time and the first other factory (add_census keeps the first of equal
    times, and the first entry's when none has one). The counted fields are whole numbers
    here (1 HS06 per processor), so the totals are exact.
    """

    def __init__(self, factories):
        self.local = [{} for _ in range(factories)]
        self.totals: Dict[str, list] = {}
        self.having: Dict[str, int] = {}     # machinetype -> factories whose census has it
        self.timed = set()                   # factories whose census has an outcome time
        self.outcomes: Dict[int, dict] = {}  # factory -> its census with the counts zeroed

    def update(self, i, census):
        self._count(self.local[i], -1)
        self._count(census, 1)
        self.local[i] = census
        self.outcomes.pop(i, None)
        if any(c.shutdown_time is not None or c.last_abort_time is not None
               for c in census.values()):
            self.timed.add(i)
        else:
            self.timed.discard(i)

    def _count(self, census, sign):
        for name, entry in census.items():
            total = self.totals.setdefault(name, [0.0, 0, 0, 0])
            for k, field in enumerate(COUNTED):
                total[k] += sign * getattr(entry, field)
            self.having[name] = self.having.get(name, 0) + sign

    def others(self, i):
        own = self.local[i]
        first = next((j for j, c in enumerate(self.local) if j != i and c), None)
        folded = sorted((self.timed - {i}) | ({first} if first is not None else set()))
        outcomes = [self._outcome(j) for j in folded]
        sums = {}
        for name, total in self.totals.items():
            if self.having[name] - (name in own) > 0:
                mine = own.get(name)
                sums[name] = Census(**{f: t - (getattr(mine, f) if mine else 0)
                                       for f, t in zip(COUNTED, total)})
        return censusdata.add_census(*outcomes, sums)

    def _outcome(self, j):
        if j not in self.outcomes:
            self.outcomes[j] = {n: replace(c, **dict.fromkeys(COUNTED, 0))
                                for n, c in self.local[j].items()}
        return self.outcomes[j]


def simulate(config, factories, slots, hours, rng):
    fleet = [SimFactory(i, slots) for i in range(factories)]
    now, step, end = 1_700_000_000.0, 60.0, 1_700_000_000.0 + hours * 3600
    site = SiteCensus(factories)
    errors, filled_at = [], None
    while now < end:
        for i in rng.sample(range(factories), factories):   # factories cycle in turn
            f = fleet[i]
            seen = f.observed(now)
            mine = censusdata.local_census(seen, {}, config.machinetypes, now)
            census = censusdata.add_census(site.others(i), mine)
            plan = planner.plan(config, seen, census, load=0.0, now=now,
                                daemon_started=now - 10 ** 6, rng=rng)
            after = f.carry_out(plan, seen, now, rng)
            site.update(i, censusdata.local_census(after, {}, config.machinetypes, now))
        now += step
        running = {n: 0 for n in TYPES}
        for f in fleet:
            for mt, _start, stop in f.machines.values():
                if stop > now:
                    running[mt] += 1
        total = sum(running.values())
        if filled_at is None and total >= 0.95 * factories * slots:
            filled_at = now - 1_700_000_000.0
        if now >= end - hours * 3600 / 2 and total:
            errors.append(max(abs(running[n] / total - s / sum(TYPES.values()))
                              for n, s in TYPES.items()))
    return sum(errors) / max(1, len(errors)), max(errors or [0]), filled_at


RUNS = (("ours (many creations per cycle)", 1000), ("original (one creation per cycle)", 1))


def simulate_run(folder, factories, slots, hours, creations):
    """One simulation with max_creations_per_cycle = creations: its results and CPU seconds."""
    text = config_text("f00.example.com", os.path.join(folder, f"sim{creations}"), slots,
                       creations=creations)
    config = build(os.path.join(folder, f"sim{creations}.conf"), text, slots)
    began = time.process_time()
    result = simulate(config, factories, slots, hours, random.Random(7))
    return result + (time.process_time() - began,)


def bench_simulation(folder, factories, slots, hours):
    """Ours and the original's one creation per cycle, side by side in two processes."""
    began = time.monotonic()
    with multiprocessing.get_context("fork").Pool(len(RUNS)) as pool:
        results = pool.starmap(simulate_run, [(folder, factories, slots, hours, creations)
                                              for _label, creations in RUNS])
    took = time.monotonic() - began
    for (label, _creations), (mean, worst, filled, cpu) in zip(RUNS, results):
        shown = f"{filled / 60:.0f} min" if filled is not None else "never"
        print(f"(c) {label}: {factories} x {slots} slots, {hours:g} h simulated in "
              f"{cpu:.0f} s of CPU: share error at steady state mean {100 * mean:.2f} %, "
              f"worst {100 * worst:.2f} % (target <= 5 %); 95 % of slots full after {shown}")
    print(f"(c) both simulations in {took:.0f} s wall time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--factories", type=int, default=50,
                        help="factories in the simulation (c) (default 50)")
    parser.add_argument("--hours", type=float, help="hours simulated (default 12, quick 4)")
    parser.add_argument("--simulation-only", action="store_true", help="only (c)")
    args = parser.parse_args()
    hours = args.hours or (4 if args.quick else 12)
    with tempfile.TemporaryDirectory() as folder:
        if not args.simulation_only:
            bench_responder(folder, 2.0 if args.quick else 5.0)
            bench_machines(folder, repeat=3 if args.quick else 5)
        bench_simulation(folder, args.factories, 32, hours)
    return 0


if __name__ == "__main__":
    sys.exit(main())
