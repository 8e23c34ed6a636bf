# SPDX-License-Identifier: BSD-2-Clause
"""Pipe fetches off the critical path: in parallel, in the background, with a backoff per URL.

vacd's cycle never fetches a pipe: it reads the cache (vac.config.pipes, update=False) and
hands the pipes that are due to a PipeFetcher. Its few daemon threads run the job
(vac.config.pipes.refresh: fetch.fetch_bytes with a connect timeout of a few seconds and an
overall bound, then the cache written), so a pipe host that accepts and never answers holds a
worker, never a cycle or a refill. A pipe is fetched at most once per cycle period (a document
with cache_seconds 0 cannot make cycles run back to back), never twice at once. A failing URL is
tried again after a backoff that doubles from one cycle period up to MAX_BACKOFF_SECONDS. While
it fails, conditions() says so in the same words while the cause is the same: vacd adds them to
the configuration's warnings each cycle (the status page shows them; vacd's log, through
vac.service.journal.Repeats, shows such a line once when the failure starts and says when it
is no longer reported); the recovery is logged too. A fetch
that changes the cached copy calls on_landed (vacd then runs its next cycle at once with it).

run_parallel gives one-off fetches (`vac config check --fetch`) the same parallelism, saying
what it is still waiting for.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

from vac.config.pipecache import PipeState

log = logging.getLogger(__name__)

WORKERS = 4
MAX_BACKOFF_SECONDS = 1800
PROGRESS_SECONDS = 5
STOP_WAIT_SECONDS = 1.0

T = TypeVar("T")


@dataclass(frozen=True)
class Landed:
    """What one background fetch came to."""

    ok: bool          # a usable document was fetched and cached
    error: str        # why not
    changed: bool     # the cached copy changed (or is new)


@dataclass(frozen=True)
class Failing:
    """A pipe whose fetches fail: since when, how many times, when it is tried again."""

    since: float
    failures: int
    next_try: float
    error: str
    state: PipeState

    def text(self) -> str:
        """The condition in words that stay the same while the cause does."""
        return (f"{self.state.where}: cannot fetch since {_when(self.since)}: {self.error}; "
                f"{_fallback(self.state)}; tried again less and less often (up to every "
                f"{MAX_BACKOFF_SECONDS} s)")


Job = Callable[[PipeState, float], Landed]


def backoff_seconds(failures: int, period: float) -> float:
    """The wait before the next try after `failures` failures in a row: one cycle period,
    doubling each time, at most MAX_BACKOFF_SECONDS."""
    return min(MAX_BACKOFF_SECONDS, max(1.0, period) * 2.0 ** min(max(failures, 1) - 1, 30))


def run_parallel(tasks: Sequence[Tuple[str, Callable[[], T]]],
                 progress: Optional[Callable[[str], None]] = None,
                 workers: int = WORKERS) -> List[T]:
    """Run each (label, task) on up to `workers` threads; their results in task order.
    progress(text) hears what is fetched, then every PROGRESS_SECONDS what is still awaited."""
    if not tasks:
        return []
    if progress is None and len(tasks) == 1:
        return [tasks[0][1]()]
    if progress is not None:
        progress(f"fetching {len(tasks)} pipe{'s' if len(tasks) > 1 else ''}: "
                 + ", ".join(label for label, _ in tasks))
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        futures = [pool.submit(task) for _, task in tasks]
        labels = dict(zip(futures, (label for label, _ in tasks)))
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=PROGRESS_SECONDS)
            if pending and progress is not None:
                progress(f"still waiting for {', '.join(sorted(labels[f] for f in pending))} "
                         f"({time.monotonic() - began:.0f} s)")
        return [f.result() for f in futures]


class PipeFetcher:
    """vacd's background pipe fetches; schedule() is called by every cycle, never blocks."""

    def __init__(self, job: Job, on_landed: Optional[Callable[[PipeState], None]] = None,
                 workers: int = WORKERS, clock: Callable[[], float] = time.time):
        self._job = job
        self._on_landed = on_landed
        self._clock = clock
        self._workers = workers
        self._queue: "queue.Queue[Optional[Tuple[PipeState, float]]]" = queue.Queue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy: Set[str] = set()
        self._failing: Dict[str, Failing] = {}
        self._last_start: Dict[str, float] = {}
        self._threads: List[threading.Thread] = []
        self._stopped = False

    def schedule(self, states: Sequence[PipeState], now: float, period: float) -> List[str]:
        """Queue a fetch of every pipe that is due, fetchable, not being fetched, not backing
        off and not tried within the last period; the prefixes queued."""
        queued = []
        with self._lock:
            if self._stopped:
                return []
            known = {_key(s) for s in states}
            for gone in [k for k in self._failing if k not in known]:
                del self._failing[gone]     # no longer configured (or its URL changed)
            for state in states:
                self._note_fetched_elsewhere(state)
                if self._wanted(state, now, period):
                    self._busy.add(_key(state))
                    self._last_start[_key(state)] = now
                    self._queue.put((state, period))
                    queued.append(state.prefix)
            self._start_workers()
        return queued

    def conditions(self) -> List[str]:
        """A sentence for each pipe failing now, the same while its cause is the same."""
        with self._lock:
            return [self._failing[key].text() for key in sorted(self._failing)]

    def failing(self) -> Dict[str, Failing]:
        """prefix -> how its fetches fail, for every pipe failing now."""
        with self._lock:
            return {key.split(" ", 1)[0]: f for key, f in self._failing.items()}

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no fetch is queued or running (tests); False if still busy."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._busy, timeout)

    def stop(self) -> None:
        """No more fetches and no more on_landed calls once this returns; a worker in the
        middle of a fetch is left (a daemon thread) after a short wait, so a pipe host that
        never answers cannot hold up vacd's exit."""
        with self._lock:
            self._stopped = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # ---- inside ------------------------------------------------------------------------

    def _wanted(self, state: PipeState, now: float, period: float) -> bool:
        key = _key(state)
        if not state.due or not state.fetchable or key in self._busy:
            return False
        failing = self._failing.get(key)
        if failing is not None and now < failing.next_try:
            return False
        last = self._last_start.get(key)
        return last is None or not last <= now < last + period

    def _note_fetched_elsewhere(self, state: PipeState) -> None:
        """A failing pipe whose cache became fresh (`vac config check --fetch` did it)."""
        failing = self._failing.get(_key(state))
        if failing is not None and not state.due and _key(state) not in self._busy:
            del self._failing[_key(state)]
            log.info("pipe %s: %s is fetched again (by another process) after %d failed "
                     "attempts since %s", state.prefix, state.url, failing.failures,
                     _when(failing.since))

    def _start_workers(self) -> None:
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < min(self._workers, len(self._busy)):
            thread = threading.Thread(target=self._work, name="pipe-fetch", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            state, period = item
            landed = self._run(state)
            with self._lock:   # on_landed under the lock: never after stop() returned
                self._busy.discard(_key(state))
                self._note(state, landed, period)
                self._idle.notify_all()
                if landed.ok and landed.changed and self._on_landed is not None \
                        and not self._stopped:
                    self._on_landed(state)

    def _run(self, state: PipeState) -> Landed:
        try:
            return self._job(state, self._clock())
        except Exception as e:  # noqa: BLE001 - a bug must not end the worker
            log.exception("pipe %s: fetching %s failed", state.prefix, state.url)
            return Landed(ok=False, error=f"{type(e).__name__}: {e}", changed=False)

    def _note(self, state: PipeState, landed: Landed, period: float) -> None:
        """Keep the backoff; log the recovery (the failure is in conditions())."""
        key, now = _key(state), self._clock()
        failing = self._failing.pop(key, None)
        if landed.ok:
            if failing is not None:
                log.info("pipe %s: %s fetched again after %d failed attempts since %s",
                         state.prefix, state.url, failing.failures, _when(failing.since))
            return
        count = failing.failures + 1 if failing is not None else 1
        wait_s = backoff_seconds(count, period)
        self._failing[key] = Failing(since=failing.since if failing is not None else now,
                                     failures=count, next_try=now + wait_s, error=landed.error,
                                     state=state)
        log.debug("pipe %s: attempt %d failed: %s; next in %.0f s", state.prefix, count,
                  landed.error, wait_s)


def _key(state: PipeState) -> str:
    return f"{state.prefix} {state.url}"


def _fallback(state: PipeState) -> str:
    if state.fetched is not None:
        return f"still using the copy fetched at {_when(state.fetched)}"
    return "it gives no machinetypes until a fetch succeeds"


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
