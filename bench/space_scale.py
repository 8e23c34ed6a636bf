# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark the space at site scale: 1,000 factories x 64 machines, in one run.

(1) `vac machines` (client and rendering) over the first 100 and then all 1,000 factories,
    ours beside the raw call, alternately: the raw call is the original's pattern, every
    factory asked at once and every short one asked again at once after a quiet spell, with
    the same socket and receive buffer. For each: time, replies, lost (announced or slotted
    but never received, checked against the truth: each factory's slot names), rounds.
(2) The census per cycle: the machinetypes query a factory makes of the 999 others each
    cycle (ours and raw). The factory's CPU per cycle is what its poll costs this process
    plus what answering 999 such queries costs a responder (measured as the responders'
    CPU over one poll); datagrams per cycle site-wide are N x (queries + replies) of one poll.
(3) The shares simulation of bench/space.py (real planner, simulated clock, four
    machinetypes 4:3:2:1) at 1,000 factories x 64 slots, each factory deciding from a census
    as the per-cycle poll gives it (the others as of their last cycle: up to one cycle old).

Responders are the real vac.space.responder.Responder.handle (status read from each
factory's state directory, one fake-backend cycle filled its slots), many per process on
loopback ports, served by one selector loop per process. Building 1,000 state directories
takes minutes: --state DIR keeps them for the next run. No target is asserted here; the
numbers are printed with their targets beside them.

    python3 bench/space_scale.py [--factories 1000] [--state DIR] [--quick]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import selectors
import socket
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.space import SPACE, SimFactory, TYPES, build, config_text, filled_factory  # noqa
from bench.space import check_listed  # noqa: E402
from bench.sidebyside import timed_alternately  # noqa: E402
from vac.cycle import planner  # noqa: E402
from vac.space import censusdata, client, render  # noqa: E402
from vac.space import messages as m  # noqa: E402
from vac.space.censusdata import Census  # noqa: E402
from vac.space import responder as responder_module  # noqa: E402
from vac.space.responder import CACHE_SECONDS, Responder, bind_udp  # noqa: E402

SLOTS = 64
PROCESSES = 8
TIMEOUT = 10.0


# Responders: many per process, one selector loop --------------------------------------

def factory_config(folder: str, name: str, slots: int):
    """A factory's config, its state directory filled by one fake cycle unless kept."""
    path = os.path.join(folder, name + ".conf")
    if os.path.isdir(os.path.join(folder, name, "machines")) and os.path.exists(path):
        with open(path) as f:
            return build(path, f.read(), slots)
    return filled_factory(folder, name, slots, 0).config


def serve(folder: str, names: List[str], slots: int, ports, warm: bool) -> None:
    """Answer VacQuery for each named factory on a loopback port of its own (put on `ports`
    as (name, port)), forever. Warm: each responder reads its state once, here, and answers
    from those bodies (its cache made endless), as 1,000 hosts reading their own disks in
    parallel would; else every query more than CACHE_SECONDS after the last reads the disk,
    all 1,000 factories' reads on this machine's cores."""
    selector, bound = selectors.DefaultSelector(), []
    if warm:
        responder_module.CACHE_SECONDS = float("inf")
    for name in names:
        config = factory_config(folder, name, slots)
        responder = Responder(lambda c=config: c)
        if warm:
            for kind in (m.MACHINES, m.MACHINETYPES, m.FACTORY):
                responder._bodies(config, kind, time.time(), time.monotonic())
        responder.sock = bind_udp("127.0.0.1", 0)
        responder.sock.setblocking(False)
        selector.register(responder.sock, selectors.EVENT_READ, (responder, config))
        bound.append((name, responder.sock.getsockname()[1]))
    ports.put(bound)
    while True:
        for key, _ in selector.select(1.0):
            responder, config = key.data
            for _ in range(256):
                try:
                    data, sender = responder.sock.recvfrom(m.QUERY_LIMIT + 1)
                except (BlockingIOError, InterruptedError):
                    break
                responder.handle(config, data, sender)


def start_servers(folder: str, names: List[str], slots: int, warm: bool):
    """(server processes, name -> loopback address)."""
    ctx = multiprocessing.get_context("fork")
    ports, procs = ctx.Queue(), []
    for i in range(PROCESSES):
        proc = ctx.Process(target=serve, args=(folder, names[i::PROCESSES], slots, ports, warm),
                           daemon=True)
        proc.start()
        procs.append(proc)
    addresses: Dict[str, Tuple[str, int]] = {}
    for _ in procs:
        addresses.update({n: ("127.0.0.1", p) for n, p in ports.get(timeout=3600)})
    return procs, addresses


def cpu_seconds(pids: List[int]) -> float:
    """User + system CPU seconds of these processes (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# The raw call: the original's pattern --------------------------------------------------

def raw_query(kind: str, names: List[str], addresses, timeout: float,
              rounds: int = client.ROUNDS) -> client.Result:
    """Every factory asked at once; after `timeout / rounds` s without a reply every short
    one asked again at once, up to `rounds` asks; all within `timeout`."""
    result = client.Result(kind=kind, factories=list(names), timeout=timeout)
    salt, deadline = m.new_salt(), time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        client.big_buffer(sock)
        ask = list(names)
        while ask and time.monotonic() < deadline:
            for name in ask:
                data = m.encode(m.make_query(kind, SPACE, m.cookie_for(salt, name), "raw"))
                sock.sendto(data, addresses[name])
                result.asks[name] = result.asks.get(name, 0) + 1
                result.queries += 1
            _raw_receive(sock, result, salt, deadline, timeout / rounds)
            ask = [n for n in names if not result.complete(n) and result.asks[n] < rounds]
    result.rounds = max(result.asks.values(), default=0)
    return result


def _raw_receive(sock, result: client.Result, salt: str, deadline: float,
                 quiet: float) -> None:
    """Take replies until `quiet` s pass without one, every factory is complete, or the
    deadline."""
    waiting = {n for n in result.factories if not result.complete(n)}
    while waiting:
        sock.settimeout(max(0.001, min(quiet, deadline - time.monotonic())))
        try:
            data = sock.recv(m.REPLY_LIMIT + 1)
        except socket.timeout:
            return
        result.datagrams += 1
        try:
            reply = m.decode_reply(data, SPACE, result.kind, salt)
        except m.MessageError:
            continue
        factory = reply["factory"]
        key = reply.get("machine") or reply.get("machinetype") or ""
        result.replies.setdefault(factory, {})[key] = reply
        result.expected[factory] = reply.get(m.COUNT_FIELD.get(result.kind, ""), 1)
        if result.complete(factory):
            waiting.discard(factory)


# (1) vac machines ----------------------------------------------------------------------

def lost(result: client.Result, per_factory: int) -> int:
    return sum(per_factory - len(result.replies.get(n, {})) for n in result.factories)


def machines_side(query, names, addresses, slots, runs):
    def run() -> float:
        began, cpu = time.monotonic(), time.process_time()
        result = query(m.MACHINES, names, addresses)
        lines = render.machines_lines(result, time.time())
        took = time.monotonic() - began
        runs.append((took, result, lines, time.process_time() - cpu))
        return took
    return run


def ours(kind, names, addresses):
    return client.query(kind, SPACE, names, TIMEOUT, addresses=addresses)


def raw(kind, names, addresses):
    return raw_query(kind, names, addresses, TIMEOUT)


def bench_machines(names, addresses, slots, pairs) -> None:
    print(f"(1) vac machines, {len(names)} factories x {slots} machines "
          f"({len(names) * slots} replies), timeout {TIMEOUT:g} s, {pairs} runs each "
          f"(target: every machine listed, < 5 s at 1,000)")
    print(f"    {'side':6}{'median s':>10}{'min':>8}{'max':>8}{'replies':>9}{'lost':>7}"
          f"{'rounds':>8}{'queries':>9}{'datagrams':>11}{'CPU s':>7}  listed in full")
    found = {"ours": [], "raw": []}
    timed_alternately(pairs, machines_side(ours, names, addresses, slots, found["ours"]),
                      machines_side(raw, names, addresses, slots, found["raw"]))
    for side, runs in found.items():
        times = [r[0] for r in runs]
        worst = max(runs, key=lambda r: lost(r[1], slots))[1]
        full = 0
        for _, result, lines, _ in runs:
            try:
                check_listed(result, lines, names, slots)
                full += 1
            except SystemExit:
                pass
        print(f"    {side:6}{statistics.median(times):10.3f}{min(times):8.3f}"
              f"{max(times):8.3f}{len(names) * slots - lost(worst, slots):9d}"
              f"{lost(worst, slots):7d}{worst.rounds:8d}{worst.queries:9d}"
              f"{worst.datagrams:11d}{statistics.median(r[3] for r in runs):7.2f}"
              f"  {full}/{len(runs)} runs")
    print("    (replies, lost, rounds, queries, datagrams: of the side's worst run; CPU s: "
          "the client's median, this process)")


# (2) The census per cycle --------------------------------------------------------------

def bench_census(names, addresses, procs, repeat) -> None:
    asker, others = names[0], names[1:]
    n = len(names)
    print(f"(2) census per cycle: a factory's machinetypes poll of the {n - 1} others "
          f"({len(TYPES)} machinetypes), {repeat} polls each")
    print(f"    {'side':6}{'poll s':>8}{'client CPU s':>14}{'answering CPU s':>17}"
          f"{'factory CPU s/cycle':>21}{'datagrams/cycle site-wide':>27}{'lost':>6}")
    for side, query in (("ours", ours), ("raw", raw)):   # queries 999 apart: no cache
        walls, mine, theirs, datagrams, missing = [], [], [], [], []
        for _ in range(repeat):
            time.sleep(CACHE_SECONDS + 0.1)   # each responder reads its disk, as in a cycle
            cpu, served, began = time.process_time(), cpu_seconds([p.pid for p in procs]), \
                time.monotonic()
            result = query(m.MACHINETYPES, others, addresses)
            walls.append(time.monotonic() - began)
            mine.append(time.process_time() - cpu)
            theirs.append(cpu_seconds([p.pid for p in procs]) - served)
            datagrams.append(n * (result.queries + result.datagrams))
            missing.append(lost(result, len(TYPES)))
        med = statistics.median
        print(f"    {side:6}{med(walls):8.3f}{med(mine):14.3f}{med(theirs):17.3f}"
              f"{med(mine) + med(theirs):21.3f}{med(datagrams):27,.0f}{max(missing):6d}")
    print(f"    (the census a factory plans from is its own poll of that cycle: as old as "
          f"the poll, at most udp_timeout_seconds; the asker was {asker})")


# (3) Shares at 1,000 factories ---------------------------------------------------------

ADDED = ("running_hs06", "num_before_fizzle", "running_machines", "running_processors")


def _plus(total: Dict[str, Census], part: Dict[str, Census], sign: int) -> Dict[str, Census]:
    """total + sign * part over the additive fields (this simulation has no aborts)."""
    out = dict(total)
    for name, entry in part.items():
        base = out.get(name, Census())
        out[name] = Census(**{f: getattr(base, f) + sign * getattr(entry, f) for f in ADDED})
    return out


def simulate(config, factories, slots, hours, rng):
    """bench/space.py's simulation with the space's sum kept as a running total: each
    factory plans from the others' censuses as of their last cycle and its own now; a
    factory with no free slot and no finished machine has nothing to decide and is
    skipped. Returns (mean error, worst error, seconds until 95 % full)."""
    fleet = [SimFactory(i, slots) for i in range(factories)]
    start = now = 1_700_000_000.0
    end = start + hours * 3600
    local: List[Dict[str, Census]] = [{} for _ in fleet]
    total: Dict[str, Census] = {}
    errors, filled_at = [], None
    while now < end:
        for i in rng.sample(range(factories), factories):
            f = fleet[i]
            if len(f.machines) == slots and all(e > now for _, _, e in f.machines.values()):
                continue
            seen = f.observed(now)
            mine = censusdata.local_census(seen, {}, config.machinetypes, now)
            census = censusdata.add_census(_plus(total, local[i], -1), mine)
            plan = planner.plan(config, seen, census, load=0.0, now=now,
                                daemon_started=now - 10 ** 6, rng=rng)
            for finish in plan.finishes:
                f.machines.pop(next(s.ordinal for s in f.slots if s.name == finish.name))
            for create in plan.creates:
                f.machines[create.slot.ordinal] = (create.machinetype, now,
                                                   now + rng.uniform(3600, 4 * 3600))
            new = censusdata.local_census(f.observed(now), {}, config.machinetypes, now)
            total = _plus(_plus(total, local[i], -1), new, 1)
            local[i] = new
        now += 60.0
        running = {t: 0 for t in TYPES}
        for f in fleet:
            for mt, _start, stop in f.machines.values():
                running[mt] += stop > now
        count = sum(running.values())
        if filled_at is None and count >= 0.95 * factories * slots:
            filled_at = now - start
        if now >= end - hours * 3600 / 2 and count:
            errors.append(max(abs(running[t] / count - s / sum(TYPES.values()))
                              for t, s in TYPES.items()))
    return sum(errors) / max(1, len(errors)), max(errors or [0]), filled_at


def bench_shares(folder, factories, slots, hours) -> None:
    text = config_text("f0000.example.com", os.path.join(folder, "sim"), slots)
    config = build(os.path.join(folder, "sim-scale.conf"), text, slots)
    began = time.monotonic()
    mean, worst, filled = simulate(config, factories, slots, hours, random.Random(7))
    shown = f"{filled / 60:.0f} min" if filled is not None else "never"
    print(f"(3) shares, {factories} factories x {slots} slots, {hours} h simulated in "
          f"{time.monotonic() - began:.0f} s: error at steady state mean {100 * mean:.1f} %, "
          f"worst {100 * worst:.1f} % (target <= 5 %); 95 % of slots full after {shown}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factories", type=int, default=1000)
    parser.add_argument("--state", help="keep the factories' state here (reused next time)")
    parser.add_argument("--quick", action="store_true", help="fewer runs, shorter simulation")
    parser.add_argument("--warm", action="store_true",
                        help="responders answer from their state read once (see serve)")
    parser.add_argument("--no-shares", action="store_true", help="skip the simulation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.state or scratch
        os.makedirs(folder, exist_ok=True)
        names = [f"f{i:04d}.example.com" for i in range(args.factories)]
        began = time.monotonic()
        procs, addresses = start_servers(folder, names, SLOTS, args.warm)
        print(f"{args.factories} responders of {SLOTS} machines ready in "
              f"{time.monotonic() - began:.0f} s ({PROCESSES} processes, loopback; "
              f"{'warm: state read once' if args.warm else 'cold: state read per query'})")
        try:
            for count in sorted({min(100, args.factories), args.factories}):
                bench_machines(names[:count], addresses, SLOTS, 2 if args.quick else 3)
            bench_census(names, addresses, procs, 2 if args.quick else 3)
        finally:
            for p in procs:
                p.terminate()
        if not args.no_shares:
            bench_shares(folder, args.factories, SLOTS, 2 if args.quick else 6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
