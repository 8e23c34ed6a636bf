# SPDX-License-Identifier: BSD-2-Clause
"""vacd: run factory cycles until told to stop.

SIGTERM stops the daemon after the current cycle and leaves every machine running; SIGHUP starts
the next cycle at once (the configuration is re-read at the start of every cycle). vacd does not
fork: systemd (or the demo script) runs it; without --foreground it logs to /var/log/vacd.log,
with it to stderr; under systemd (Type=notify) it says READY=1 after its first cycle, a
one-line STATUS= after each, and pings the watchdog (vac.service). A missing or rejected
configuration never stops it: it keeps cycling on what it has. When a VM machinetype is
configured, vacd also runs the metadata service (the backends' host services, asked of the
backend registry), bound after each cycle's host preparation and closed on exit.
"""
from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import logging
import os
import select
import signal
import sys
import threading
import time
from typing import List, Optional, Set

from vac import __version__, planfile
from vac.backends import host_services
from vac.config import assemble, pipefetch, pipes, presence
from vac.config.load import config_files
from vac.cycle.factory import SAME_SECOND, CycleReport, Factory
from vac.cycle.watchers import MessageWatcher, Watchers
from vac.errors import ConfigError, ConfigMissing, VacError
from vac.host.cvmfskeepalive import CvmfsKeepAlive
from vac.host.facts import HostFacts
from vac.paths import Paths
from vac.service import journal, statusline
from vac.service.lock import StateLock, state_dir_of
from vac.service.sdnotify import Notifier, WatchdogPinger
from vac.space.census import SpacePoll
from vac.space.responder import Responder, config_source
from vac.web.metricsserver import MetricsEndpoint
from vac.web.statusserver import StatusEndpoint

log = logging.getLogger("vacd")

LOG_FILE = "/var/log/vacd.log"
EX_CONFIG = 78          # sysexits.h; vacd.service does not restart on it (a --config missing)
# The watchdog pings stop when the main loop has not turned for this long: a cycle can take
# minutes when an engine hangs (each call has its timeout); a hung vacd is restarted after it.
STALL_SECONDS = 1800.0


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    """vacd's parser (tests/unit/test_manpages.py checks vacd.8 against it)."""
    parser = argparse.ArgumentParser(prog="vacd", description="The Vac factory daemon.")
    parser.add_argument("--config", action="append", metavar="FILE",
                        help="read this file instead of /etc/vac.d/*.conf, /etc/vac.conf and "
                             "/var/run/vac.conf (repeatable; later files win)")
    parser.add_argument("--foreground", action="store_true", help="log to stderr")
    parser.add_argument("--cycles", type=int, default=0, help="stop after N cycles (0: never)")
    parser.add_argument("--cycle-seconds", type=float, default=None,
                        help="seconds from one cycle's start to the next (default: "
                             "cycle_seconds from the config, else 60)")
    parser.add_argument("--log-file", default=LOG_FILE, help=argparse.SUPPRESS)
    # Tests of vacd itself serve metadata on 127.0.0.1 and port 0 instead.
    parser.add_argument("--metadata-address", action="append", help=argparse.SUPPRESS)
    parser.add_argument("--metadata-port", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"vacd {__version__}")
    return parser


class Waker:
    """Sleep until a timeout, a signal or wake().

    A Python signal handler runs only between bytecodes of the main thread, so a signal that
    arrives just before a blocking wait would be handled only when the wait ends (SIGTERM
    ignored for a whole cycle). The C-level handler writes the signal number to this pipe
    (signal.set_wakeup_fd) the moment the signal arrives, so select() returns at once.
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        for fd in (self.read_fd, self.write_fd):
            os.set_blocking(fd, False)

    def set(self) -> None:
        try:
            os.write(self.write_fd, b"w")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is pending anyway

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            os.close(fd)

    def wait(self, timeout: float) -> None:
        ready, _, _ = select.select([self.read_fd], [], [], timeout)
        if ready:
            try:
                while os.read(self.read_fd, 4096):
                    pass
            except BlockingIOError:
                pass


class Daemon:
    """The main loop with its signal handling; the cycle itself is Factory.run_cycle."""

    def __init__(self, args: argparse.Namespace, state_dir: str,
                 repeats: Optional[journal.Repeats] = None, notifier: Optional[Notifier] = None):
        self.args = args
        self.state_dir = state_dir      # the one vacd.lock is held on
        self.repeats = repeats or journal.Repeats()
        self.notifier = notifier or Notifier()
        self.watchdog = WatchdogPinger(self.notifier, STALL_SECONDS)
        self.stop = threading.Event()
        self.wake = Waker()
        self.host = HostFacts.read()
        self.services = host_services(args.metadata_address, args.metadata_port)
        self.factory = Factory(self._load_config, after_prepare=self.services.ensure,
                               space_census=SpacePoll(), state_dir=state_dir, host=self.host)
        # The VacQuery responder (vac.space): its own thread, answering from the state
        # directory and the config the factory holds (cached pipes only).
        self.responder = Responder(config_source(lambda: self.factory.config, self._cached))
        # A machine's end wakes vacd at once (its backend's watcher), to refill its slot.
        self.watchers = Watchers(self.wake.set)
        self.messages = MessageWatcher(lambda: self.factory.config, self.watchers.on_end)
        # Running containers' CernVM-FS repositories listed each cycle, in the background.
        self.cvmfs = CvmfsKeepAlive()
        self.full_cycle_now = False
        self.retry: Set[str] = set()
        self.config_problem: Optional[ConfigError] = None   # the last load's, for STATUS=
        # Pipes are fetched in the background (vac.config.pipefetch): a cycle reads the cache.
        self.pipe_fetcher = pipefetch.PipeFetcher(pipes.refresh, on_landed=self._pipe_landed)
        # The Prometheus endpoint (vac.web), when metrics_port is set: it only reads.
        self.metrics = MetricsEndpoint(lambda: self.factory.config, self.responder)
        # The status page (vac.web), when status_port is set: it only reads, too.
        self.status = StatusEndpoint(lambda: self.factory.config, self.factory.space_census,
                                     self.metrics)

    @property
    def files(self) -> List[str]:
        """The files to read, listed again each time: /etc/vac.conf may appear at any time."""
        return config_files(self.args.config)

    def _load_config(self):
        files = self.files
        try:
            presence.require(files, explicit=bool(self.args.config))
            now = time.time()
            config, found = assemble.load_config_with_pipes(files, self.host, update=False,
                                                            now=now)
        except ConfigError as e:
            self.config_problem = e
            raise
        self.config_problem = None
        self.pipe_fetcher.schedule(found.states, now, self._period())
        failing = tuple(self.pipe_fetcher.conditions())     # pipes whose fetches fail
        return dataclasses.replace(config, warnings=config.warnings + failing)

    def _pipe_landed(self, state) -> None:
        """A background fetch brought a new or changed pipe document: a cycle now uses it."""
        self.full_cycle_now = True
        self.wake.set()

    def _cached(self):
        files = self.files
        presence.require(files, explicit=bool(self.args.config))
        return assemble.load_config(files, self.host, update=False, now=time.time())

    def _on_term(self, signum, frame) -> None:
        log.info("signal %d: stopping after this cycle; machines keep running", signum)
        self.stop.set()
        self.wake.set()

    def _on_hup(self, signum, frame) -> None:
        log.info("SIGHUP: reloading configuration now")
        self.full_cycle_now = True
        self.wake.set()

    def run(self) -> int:
        previous_wakeup = signal.set_wakeup_fd(self.wake.write_fd, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        log.info("vacd %s starting with %s", __version__, ", ".join(self.files) or "no files")
        self.responder.start()
        self.messages.start()
        self.watchdog.start()
        try:
            done = self._loop()
        finally:
            self.notifier.stopping("stopping; machines keep running")
            self.watchdog.stop()
            signal.set_wakeup_fd(previous_wakeup)
            self.pipe_fetcher.stop()        # before wake.close(): it wakes vacd
            self.wake.close()
            self.watchers.stop()
            self.messages.stop()
            self.responder.stop()
            self.services.close()
            self.metrics.close()
            self.status.close()
        log.info("vacd stopped after %d cycles", done)
        return 0

    def _loop(self) -> int:
        """Run cycles until stopped or --cycles are done, and refills in between whenever a
        watcher reports a machine's end; return how many cycles ran."""
        done = 0
        due = time.monotonic()
        while not self.stop.is_set():
            self.watchdog.tick()
            if time.monotonic() >= due or self.full_cycle_now:
                self.full_cycle_now = False
                began = time.monotonic()
                self._cycle(done + 1)
                done += 1
                if self.args.cycles and done >= self.args.cycles:
                    break
                due = began + self._period()
                if self.factory.pool is not None:   # None until a configuration was read
                    self.watchers.ensure(self.factory.pool)
            else:
                self._refill(self.watchers.take())
            wait = due - time.monotonic()
            if self.retry:   # slots whose machine ended within its first second
                wait = min(wait, 1.0)
                self.watchers.pending(self.retry)
                self.retry = set()
            self.wake.wait(max(0.0, wait))
        return done

    def _cycle(self, number: int) -> None:
        for text in self.repeats.next_cycle():
            log.info("no longer reported: %s", text)
        began, started = time.time(), time.monotonic()
        try:
            report = self.factory.run_cycle()
        except Exception:  # noqa: BLE001 - a bug must not stop vacd: machines need managing
            log.exception("cycle %d failed; the next cycle runs as usual", number)
            report = CycleReport(errors=["cycle failed: see the log"])
        self.cvmfs.keep_alive(self.factory.recorder.cvmfs_repositories)   # never blocks
        self.metrics.after_cycle(report, time.monotonic() - started)
        self.status.after_cycle()
        self._note_retries(report)
        log.info("cycle %d: created %d, finished %d, destroyed %d, errors %d", number,
                 len(report.created), len(report.finished), len(report.destroyed),
                 len(report.errors))
        self._tell_systemd(number, began)

    def _tell_systemd(self, number: int, began: float) -> None:
        """READY=1 after the first cycle, and the cycle's one-line STATUS= each time."""
        if not self.notifier.enabled:
            return
        config = self.factory.config
        paths = config.settings.paths if config is not None else Paths(self.state_dir)
        record = planfile.read(paths.plan)
        if record is not None and record.time < int(began) - 1:
            record = None   # an earlier cycle's: this one wrote none
        text = statusline.line(number, record, self.config_problem)
        if number == 1:
            self.notifier.ready(text)
        else:
            self.notifier.status(text)

    def _note_retries(self, report: CycleReport) -> None:
        """Slots whose machine ended within its first second: refilled a second later."""
        self.retry = {n for n, why in report.idle.items() if why == SAME_SECOND}

    def _refill(self, names) -> None:
        if not names:
            return
        try:
            report = self.factory.refill(names)
        except Exception:  # noqa: BLE001 - the periodic cycle is the safety net
            log.exception("refill of %s failed; the next cycle will see to it",
                          ", ".join(sorted(names)))
            return
        if report is None:
            return
        self._note_retries(report)
        if report.finished or report.created or report.errors:
            log.info("refill %s: finished %d, created %d, errors %d", ", ".join(sorted(names)),
                     len(report.finished), len(report.created), len(report.errors))

    def _period(self) -> float:
        if self.args.cycle_seconds is not None:
            return self.args.cycle_seconds
        config = self.factory.config
        return config.settings.cycle_seconds if config is not None else 60.0


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    repeats = journal.setup(args.foreground, args.log_file)
    try:   # SIGABRT (systemd's watchdog) prints where every thread hangs
        faulthandler.enable()
    except (AttributeError, ValueError, OSError):  # stderr without a descriptor (tests)
        pass
    try:  # one vacd per state directory, the lock held until this process ends
        state_dir = state_dir_of(config_files(args.config))
        state_lock = StateLock(state_dir).acquire()
    except VacError as e:
        log.error("not starting: %s", e)
        if not journal.under_journal() and not args.foreground:
            print(f"vacd: not starting: {e}", file=sys.stderr)
        return EX_CONFIG if isinstance(e, ConfigMissing) else 1
    try:
        return Daemon(args, state_dir, repeats).run()
    finally:
        state_lock.release()


if __name__ == "__main__":
    sys.exit(main())
