# SPDX-License-Identifier: BSD-2-Clause
"""vac.config.pipefetch: pipe fetches in parallel and in the background, with a backoff per
URL; and vac.config.pipes with force, progress and states (what config check shows)."""
from __future__ import annotations

import json
import logging
import os
import threading

import pytest
from fakeclock import Clock

from vac.config import model, pipefetch, pipes
from vac.config.pipecache import PipeState
from vac.config.pipefetch import Landed, PipeFetcher, backoff_seconds
from vac.errors import FetchError

URL = "https://pipes.example.org/p.pipe"
NOW = 1_700_000_000.0
WAIT = 30           # generous: only ever reached when something is wrong
GOOD = {"cache_seconds": 3600, "machinetypes": [{"suffix": "a", "target_share": 1}]}


def state(prefix="p", url=URL, fetched=None, due=True):
    return PipeState(prefix, url, f"/nonexistent/{prefix}.pipe", fetched, due)


def section(prefix="p", url=URL):
    return model.PipeSection(prefix=prefix, url=url, target_share=1.0, options={},
                             origin=f"vac.conf [vacuum_pipe {prefix}]")


class Job:
    """A background job whose answers are given per call; records each call; can be held."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []
        self.hold = threading.Event()
        self.hold.set()
        self.lock = threading.Lock()

    def __call__(self, st, now):
        with self.lock:
            self.calls.append(st.prefix)
            answer = self.answers.pop(0) if self.answers else Landed(True, "", False)
        assert self.hold.wait(WAIT)
        if isinstance(answer, Exception):
            raise answer
        return answer


FAIL = Landed(ok=False, error="timed out after 30 s", changed=False)


# ---- the backoff ---------------------------------------------------------------------------

def test_backoff_doubles_from_one_period_and_is_capped():
    assert [backoff_seconds(n, 60) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert backoff_seconds(10, 60) == pipefetch.MAX_BACKOFF_SECONDS
    assert backoff_seconds(10 ** 6, 60) == pipefetch.MAX_BACKOFF_SECONDS
    assert backoff_seconds(1, 0) == 1.0          # never a busy loop


def test_a_failing_pipe_waits_out_its_backoff_then_is_retried(caplog):
    clock, job = Clock(), Job(FAIL, FAIL, Landed(True, "", True))
    fetcher = PipeFetcher(job, clock=clock)
    try:
        assert fetcher.schedule([state()], clock.now, period=10) == ["p"]
        assert fetcher.wait_idle(WAIT)
        failing = fetcher.failing()["p"]
        assert failing.failures == 1 and failing.next_try == NOW + 10
        for late in (1, 5, 9.9):               # every cycle of the backoff: no new try
            assert fetcher.schedule([state()], NOW + late, period=10) == []
        clock.now = NOW + 10
        assert fetcher.schedule([state()], NOW + 10, period=10) == ["p"]
        assert fetcher.wait_idle(WAIT)
        assert fetcher.failing()["p"].failures == 2
        assert fetcher.failing()["p"].next_try == NOW + 10 + 20          # doubled
        assert fetcher.schedule([state()], NOW + 29, period=10) == []
        with caplog.at_level(logging.INFO, logger="vac.config.pipefetch"):
            assert fetcher.schedule([state()], NOW + 30, period=10) == ["p"]
            assert fetcher.wait_idle(WAIT)
        assert fetcher.failing() == {} and job.calls == ["p", "p", "p"]
        assert "fetched again after 2 failed attempts" in caplog.text
    finally:
        fetcher.stop()


def test_a_failure_is_reported_each_cycle_in_the_same_words():
    clock, job = Clock(), Job(FAIL, FAIL)
    fetcher = PipeFetcher(job, clock=clock)
    try:
        assert fetcher.conditions() == []
        fetcher.schedule([state()], NOW, period=1)
        assert fetcher.wait_idle(WAIT)
        said = [fetcher.conditions()]
        fetcher.schedule([state()], NOW + 0.5, period=1)      # backing off
        said.append(fetcher.conditions())
        clock.now = NOW + 1
        fetcher.schedule([state()], NOW + 1, period=1)        # tried, fails again
        assert fetcher.wait_idle(WAIT) and len(job.calls) == 2
        said.append(fetcher.conditions())
        assert all(len(lines) == 1 for lines in said) and len({s[0] for s in said}) == 1, said
        line = said[0][0]
        assert line.startswith(f"{URL} (pipe p): cannot fetch since ")
        assert "timed out after 30 s" in line and "gives no machinetypes" in line
    finally:
        fetcher.stop()


def test_a_failing_pipe_with_a_cached_copy_says_it_is_still_used():
    fetcher = PipeFetcher(Job(FAIL), clock=Clock())
    try:
        fetcher.schedule([state(fetched=NOW - 7200)], NOW, period=1)
        assert fetcher.wait_idle(WAIT)
        assert "still using the copy fetched at" in fetcher.conditions()[0]
    finally:
        fetcher.stop()


def test_a_pipe_fetched_elsewhere_stops_failing(caplog):
    fetcher = PipeFetcher(Job(FAIL), clock=Clock())
    try:
        fetcher.schedule([state()], NOW, period=1)
        assert fetcher.wait_idle(WAIT) and "p" in fetcher.failing()
        with caplog.at_level(logging.INFO, logger="vac.config.pipefetch"):
            fetcher.schedule([state(fetched=NOW + 0.5, due=False)], NOW + 0.5, period=1)
        assert fetcher.failing() == {} and "by another process" in caplog.text
    finally:
        fetcher.stop()


def test_a_pipe_no_longer_configured_is_no_longer_reported():
    fetcher = PipeFetcher(Job(FAIL), clock=Clock())
    try:
        fetcher.schedule([state()], NOW, period=1)
        assert fetcher.wait_idle(WAIT) and "p" in fetcher.failing()
        fetcher.schedule([], NOW + 1, period=1)
        assert fetcher.failing() == {}
    finally:
        fetcher.stop()


def test_a_job_that_raises_counts_as_a_failure_and_the_worker_goes_on():
    job = Job(RuntimeError("bug"), Landed(True, "", False))
    fetcher = PipeFetcher(job, clock=Clock(), workers=1)
    try:
        fetcher.schedule([state()], NOW, period=1)
        assert fetcher.wait_idle(WAIT)
        assert "RuntimeError: bug" in fetcher.failing()["p"].error
        fetcher.schedule([state()], NOW + 1, period=1)
        assert fetcher.wait_idle(WAIT) and fetcher.failing() == {}
    finally:
        fetcher.stop()


# ---- what is fetched, and when ------------------------------------------------------------

def test_only_due_fetchable_pipes_are_fetched():
    job = Job()
    fetcher = PipeFetcher(job, clock=Clock())
    try:
        queued = fetcher.schedule([state("fresh", due=False), state("ftp", url="ftp://x/p"),
                                   state("due")], NOW, period=1)
        assert queued == ["due"] and fetcher.wait_idle(WAIT) and job.calls == ["due"]
    finally:
        fetcher.stop()


def test_a_pipe_being_fetched_is_not_fetched_again_however_many_cycles_pass():
    job = Job()
    job.hold.clear()                           # a host that does not answer
    fetcher = PipeFetcher(job, clock=Clock())
    try:
        assert fetcher.schedule([state()], NOW, period=1) == ["p"]
        for cycle in range(1, 30):
            assert fetcher.schedule([state()], NOW + cycle, period=1) == []
        assert not fetcher.wait_idle(0.05)
        job.hold.set()
        assert fetcher.wait_idle(WAIT) and job.calls == ["p"]
    finally:
        job.hold.set()
        fetcher.stop()


def test_a_pipe_is_fetched_at_most_once_per_period():
    job = Job()                                # cache_seconds 0: due at every cycle
    fetcher = PipeFetcher(job, clock=Clock())
    try:
        assert fetcher.schedule([state()], NOW, period=60) == ["p"]
        assert fetcher.wait_idle(WAIT)
        assert fetcher.schedule([state()], NOW + 59, period=60) == []
        assert fetcher.schedule([state()], NOW + 60, period=60) == ["p"]
        assert fetcher.wait_idle(WAIT)
    finally:
        fetcher.stop()


def test_a_hanging_pipe_does_not_hold_up_the_others():
    job = Job()
    slow = threading.Event()

    def answer(st, now):
        if st.prefix == "hang":
            assert slow.wait(WAIT)
        return job(st, now)

    landed = []
    fetcher = PipeFetcher(answer, on_landed=lambda st: landed.append(st.prefix),
                          clock=Clock())
    try:
        job.answers = [Landed(True, "", True)] * 3
        fetcher.schedule([state("hang"), state("a"), state("b"), state("c")], NOW, period=1)
        assert _until(lambda: sorted(landed) == ["a", "b", "c"])
        assert "hang" not in landed
    finally:
        slow.set()
        fetcher.stop()


def test_fetches_run_in_parallel():
    barrier = threading.Barrier(3, timeout=WAIT)   # passes only if 3 jobs run at once

    def job(st, now):
        barrier.wait()
        return Landed(True, "", False)

    fetcher = PipeFetcher(job, clock=Clock(), workers=3)
    try:
        fetcher.schedule([state("a"), state("b"), state("c")], NOW, period=1)
        assert fetcher.wait_idle(WAIT) and fetcher.failing() == {}
    finally:
        fetcher.stop()


def test_on_landed_only_when_the_cached_copy_changed():
    landed = []
    job = Job(Landed(True, "", False), Landed(True, "", True))
    fetcher = PipeFetcher(job, on_landed=lambda st: landed.append(st.prefix), clock=Clock())
    try:
        fetcher.schedule([state()], NOW, period=1)
        assert fetcher.wait_idle(WAIT) and landed == []
        fetcher.schedule([state()], NOW + 1, period=1)
        assert fetcher.wait_idle(WAIT) and landed == ["p"]
    finally:
        fetcher.stop()


def test_stop_does_not_wait_for_a_hung_fetch_and_nothing_lands_after_it():
    job = Job(Landed(True, "", True))
    job.hold.clear()
    landed = []
    fetcher = PipeFetcher(job, on_landed=lambda st: landed.append(st), clock=Clock())
    fetcher.schedule([state()], NOW, period=1)
    assert _until(lambda: job.calls == ["p"])
    fetcher.stop()                    # returns although the job hangs (bounded wait)
    job.hold.set()
    assert fetcher.wait_idle(WAIT)
    assert landed == [] and fetcher.schedule([state()], NOW + 10, period=1) == []


def _until(condition, timeout=WAIT):
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return True
        done.wait(0.01)
    return condition()


# ---- run_parallel ---------------------------------------------------------------------------

def test_run_parallel_runs_at_once_and_keeps_the_order():
    barrier = threading.Barrier(3, timeout=WAIT)

    def task(n):
        return lambda: (barrier.wait(), n)[1]

    assert pipefetch.run_parallel([(str(n), task(n)) for n in range(3)]) == [0, 1, 2]


def test_run_parallel_says_what_it_waits_for(monkeypatch):
    monkeypatch.setattr(pipefetch, "PROGRESS_SECONDS", 0.05)
    said = []
    release = threading.Event()

    def slow():
        assert release.wait(WAIT)
        return "slow"

    def progress(text):
        said.append(text)
        if text.startswith("still waiting"):
            release.set()

    assert pipefetch.run_parallel([("A", lambda: "a"), ("B", slow)], progress) == ["a", "slow"]
    assert said[0] == "fetching 2 pipes: A, B"
    assert said[1].startswith("still waiting for B (")


# ---- load_pipes: force, parallel, states --------------------------------------------------

def test_force_fetches_a_fresh_cache_and_reports_a_404(paths):
    pipes.load_pipes([section()], paths, update=True, now=NOW,
                     fetcher=lambda url, **kw: json.dumps(GOOD).encode())
    gone = FetchError(URL, "HTTP status 404", 404)

    def fetcher(url, **kw):
        raise gone

    result = pipes.load_pipes([section()], paths, update=True, now=NOW + 1, fetcher=fetcher)
    assert result.errors == ()                     # fresh: update alone does not fetch
    result = pipes.load_pipes([section()], paths, update=False, now=NOW + 1, fetcher=fetcher,
                              force=True)
    assert len(result.errors) == 1 and "HTTP status 404" in result.errors[0]
    assert "still using the last good cached copy" in result.errors[0]
    assert list(result.values) == ["p-a"]


def test_load_pipes_fetches_in_parallel_and_says_so(paths):
    barrier = threading.Barrier(2, timeout=WAIT)

    def fetcher(url, **kw):
        barrier.wait()
        return json.dumps(GOOD).encode()

    said = []
    other = "https://pipes.example.org/q.pipe"
    result = pipes.load_pipes([section(), section("q", other)], paths, update=True, now=NOW,
                              fetcher=fetcher, progress=said.append)
    assert sorted(result.values) == ["p-a", "q-a"] and result.errors == ()
    assert said and URL in said[0] and other in said[0]


def test_states_name_the_pipes_not_fetched_yet(paths):
    other = "https://pipes.example.org/q.pipe"
    pipes.load_pipes([section("q", other)], paths, update=True, now=NOW,
                     fetcher=lambda url, **kw: json.dumps(GOOD).encode())
    result = pipes.load_pipes([section(), section("q", other)], paths, update=False,
                              now=NOW + 1)
    p, q = result.states
    assert (p.fetched, p.due) == (None, True) and (q.fetched, q.due) == (NOW, False)
    assert len(result.unfetched) == 1 and result.unfetched[0].startswith(
        f"{URL} (pipe p): not fetched yet")
    assert q.cache == paths.pipe_cache("q") and os.path.exists(q.cache)


def test_refresh_caches_what_it_fetched_and_says_whether_it_changed(paths):
    st = PipeState("p", URL, paths.pipe_cache("p"), None, True)
    answer = json.dumps(GOOD).encode()
    assert pipes.refresh(st, NOW, lambda url, **kw: answer) == Landed(True, "", True)
    assert pipes.refresh(st, NOW + 1, lambda url, **kw: answer) == Landed(True, "", False)
    assert os.stat(st.cache).st_mtime == NOW + 1
    broken = pipes.refresh(st, NOW + 2, lambda url, **kw: b"{nope")
    assert not broken.ok and "not valid JSON" in broken.error
    assert os.stat(st.cache).st_mtime == NOW + 1          # the last good copy stays


@pytest.mark.parametrize("url, fetchable", [("https://x/p", True), ("http://x/p", True),
                                            ("file:///srv/p.pipe", True), ("ftp://x/p", False),
                                            ("/srv/p.pipe", False)])
def test_fetchable_schemes(url, fetchable):
    assert state(url=url).fetchable is fetchable
