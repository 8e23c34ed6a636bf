# SPDX-License-Identifier: BSD-2-Clause
"""A pipe host that accepts and never answers holds up neither vacd's cycles nor its refills:
a real vacd with real Docker machines whose payloads run two seconds, a good pipe
(file://) whose machinetype runs too, then a second pipe on a real TCP listener that accepts
and never sends a byte. The pace with the hanging pipe is compared with the pace measured just
before in the same run (gaps between cycles, slot dead times); the hanging pipe is retried
only after each try has ended (never once per cycle), its failure logged once; the good pipe's
machines keep coming."""
from __future__ import annotations

import json
import signal
import socket
import threading
import time
from typing import List, Tuple

import pytest
from docker_engine import IMAGE, engine_ready
from dockerfactory import DockerFactory, machine_dirs
from refill_payload import PAYLOAD
from vacd_process import start_vacd, stop
from waiting import wait_until

pytestmark = [pytest.mark.docker]

GOOD_PIPE = """
[vacuum_pipe good]
vacuum_pipe_url = file://{pipe}
target_share = 1
machine_model = docker
root_image = docker://{image}
user_data = {user_data}
backoff_seconds = 0
fizzle_seconds = 0
docker_pids_limit = 200
"""
HANGING_PIPE = """
[vacuum_pipe hang]
vacuum_pipe_url = http://127.0.0.1:{port}/hang.pipe
target_share = 1
"""


class SilentHost:
    """Accepts TCP connections and never answers; notes when each opened and closed."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: List[List[float]] = []      # [opened, closed or 0]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections.append([time.monotonic(), 0.0])
                record = self.connections[-1]
            threading.Thread(target=self._hold, args=(conn, record), daemon=True).start()

    def _hold(self, conn: socket.socket, record: List[float]) -> None:
        with conn:
            while conn.recv(4096):      # read the request, answer nothing, until EOF
                pass
        record[1] = time.monotonic()

    def seen(self) -> List[Tuple[float, float]]:
        with self.lock:
            return [tuple(c) for c in self.connections]

    def close(self) -> None:
        self.sock.close()


class CycleClock:
    """The monotonic time at which each 'cycle N:' line appeared in vacd's log."""

    def __init__(self, log: str) -> None:
        self.log = log
        self.ends: List[float] = []
        self.running = True
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while self.running:
            try:
                with open(self.log) as f:
                    count = sum(1 for line in f if ": INFO cycle " in line)
            except OSError:
                count = 0
            now = time.monotonic()
            self.ends.extend([now] * (count - len(self.ends)))
            time.sleep(0.05)

    def gaps(self, since: float, until: float = float("inf")) -> List[float]:
        ends = [t for t in self.ends if since <= t <= until]
        return [b - a for a, b in zip(ends, ends[1:])]


def dead_times(dirs, since_epoch: float = 0) -> List[float]:
    """Per slot, from each machine's shutdown_message to the next machine's first act, for
    next machines created since since_epoch."""
    gaps = []
    by_slot = {}
    for d in sorted(dirs, key=lambda d: d.created):
        by_slot.setdefault(d.name, []).append(d)
    for machines in by_slot.values():
        for old, new in zip(machines, machines[1:]):
            ended, running = old.shutdown_message_time, new.mtime("joboutputs/began")
            if ended is not None and running is not None and new.created >= since_epoch:
                gaps.append(running - ended)
    return gaps


def by_type(dirs, machinetype: str, since_epoch: float = 0):
    return [d for d in dirs if d.machinetype == machinetype and d.created >= since_epoch]


def test_a_pipe_host_that_never_answers_holds_up_no_cycle_and_no_refill(tmp_path, make_config):
    engine_ready()
    dock = DockerFactory(tmp_path, make_config)
    host = SilentHost()
    pipe = tmp_path / "good.pipe"
    pipe.write_text(json.dumps({"machinetypes": [{"suffix": "a", "target_share": 1}]}))
    good = GOOD_PIPE.format(pipe=pipe, image=IMAGE, user_data=dock.user_data)
    extra = "backoff_seconds = 0\nfizzle_seconds = 0\n"
    log = str(tmp_path / "vacd.log")
    try:
        dock.write(PAYLOAD, slots=2, extra_mt=extra + good)
        vacd = start_vacd(dock.config_file, log)
        clock = CycleClock(log)
        try:
            # Before: the good pipe alone. Its first fetch lands in the background and the
            # cycle after it creates its machines; the pace is measured.
            assert wait_until(lambda: len(by_type(machine_dirs(dock), "good-a")) >= 3
                              and len(machine_dirs(dock)) >= 8 and len(clock.ends) >= 6,
                              120, step=0.2), open(log).read()[-3000:]
            began = time.monotonic()
            before_gaps = clock.gaps(0, began)
            before_dead = dead_times(machine_dirs(dock))
            slowest_gap, slowest_dead = max(before_gaps), max(before_dead)
            if slowest_gap > 10 or slowest_dead > 10:
                pytest.skip(f"this host is too slow to tell a 30 s stall from its own pace "
                            f"(cycles {before_gaps}, dead times {before_dead})")
            # Then: the hanging pipe too.
            hung_at = time.time()
            dock.write(PAYLOAD, slots=2, extra_mt=extra + good + HANGING_PIPE.format(
                port=host.port))
            vacd.send_signal(signal.SIGHUP)
            assert wait_until(lambda: len(host.seen()) >= 2 and all(
                closed for _, closed in host.seen()[:2]), 180, step=0.2), \
                (host.seen(), open(log).read()[-3000:])
            ended = time.monotonic()
            after_dirs = machine_dirs(dock)
        finally:
            clock.running = False
            stop(vacd, signal.SIGTERM)     # a fetch in progress does not hold up the exit
        text = open(log).read()
        seen = host.seen()
        first_open, first_closed = seen[0]
        # Cycles kept their pace while the pipe host held a fetch, and went on through it.
        bound = 3 * slowest_gap + 1.0
        after_gaps = clock.gaps(began, ended)
        assert after_gaps and max(after_gaps) <= bound, (before_gaps, after_gaps, bound)
        assert len([t for t in clock.ends if first_open < t < first_closed]) >= 2, \
            (seen, clock.ends)
        # Refills kept theirs, and the good pipe's machines kept coming.
        new = [d for d in after_dirs if d.created >= hung_at]
        after_dead = dead_times(after_dirs, hung_at)
        assert after_dead and max(after_dead) <= 3 * slowest_dead + 1.0, (before_dead,
                                                                          after_dead)
        assert len(by_type(new, "good-a")) >= 2 and len(by_type(new, "dock")) >= 2, new
        # The hanging pipe: one try at a time, the next only after the last one ended (a
        # backoff, not once per cycle), its failure logged once.
        for (_, closed), (opened, _) in zip(seen, seen[1:]):
            assert closed and opened >= closed, seen
        assert text.count("(pipe hang): cannot fetch since") == 1, text[-3000:]
        assert not [line for line in text.splitlines()
                    if "no longer reported" in line and "(pipe hang)" in line]
        assert "pipe good: fetched" in text
    finally:
        host.close()
        dock.remove_all()
