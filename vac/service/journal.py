# SPDX-License-Identifier: BSD-2-Clause
"""Where vacd's log lines go, and at which priority.

Under systemd (JOURNAL_STREAM names stderr) each line goes to stderr with a "<N>" prefix, the
syslog priority the journal reads (SyslogLevelPrefix=, on by default): errors at err (3),
warnings at warning (4), the rest at info (6); every line of a multi-line message (a traceback)
carries it, so `journalctl -u vacd -p warning` is the list of what needs attention. The journal
stamps time and pid itself. Otherwise lines go to the log file (or stderr with --foreground)
with the time and pid.

A warning or error that holds across cycles is logged once, when it appears, and an info line
says when it clears (Repeats): the same line every cycle would bury what is new.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Callable, Dict, List, Tuple

LOG_FORMAT = "%(asctime)s vacd[%(process)d]: %(levelname)s %(message)s"
PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
            logging.DEBUG: 7}


def under_journal() -> bool:
    """True when systemd connected stderr to the journal (JOURNAL_STREAM names stderr's inode)."""
    try:
        st = os.fstat(sys.stderr.fileno())
        return os.environ.get("JOURNAL_STREAM", "") == f"{st.st_dev}:{st.st_ino}"
    except (OSError, ValueError, AttributeError):
        return False


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (a level between two takes the more urgent)."""
    for level in sorted(PRIORITY, reverse=True):
        if levelno >= level:
            return PRIORITY[level]
    return 7


class JournalFormatter(logging.Formatter):
    """"<3>ERROR message" on every line of the record."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


class Repeats(logging.Filter):
    """Lets a WARNING or ERROR line through only when it is not already holding.

    A line holds from when it is first logged until a whole cycle has passed without it and it
    has not been logged for QUIET_SECONDS (a thread may log it more often than cycles run, or
    less). The daemon calls next_cycle() at each cycle's start: it returns the lines that
    stopped holding, for an info line each. Lines come from several threads (the responder's,
    the watchers'), hence the lock.
    """

    QUIET_SECONDS = 10.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.lock = threading.Lock()
        self.last_seen: Dict[Tuple[int, str, str], float] = {}
        self.cycle_began = clock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.levelno, record.name, record.getMessage())
        with self.lock:
            new = key not in self.last_seen
            self.last_seen[key] = self.clock()
        return new

    def next_cycle(self) -> List[str]:
        now = self.clock()
        with self.lock:
            gone = [key for key, seen in self.last_seen.items()
                    if seen < self.cycle_began and now - seen >= self.QUIET_SECONDS]
            for key in gone:
                del self.last_seen[key]
            self.cycle_began = now
        return sorted(text for _, _, text in gone)


def setup(foreground: bool, log_file: str) -> Repeats:
    """The root logger's one handler (journal, --foreground stderr, or the log file), with a
    Repeats filter on it, which is returned."""
    handler: logging.Handler
    if under_journal():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter())
    else:
        if foreground:
            handler = logging.StreamHandler(sys.stderr)
        else:
            from logging.handlers import WatchedFileHandler  # reopens after logrotate

            handler = WatchedFileHandler(log_file)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%b %d %H:%M:%S"))
    repeats = Repeats()
    handler.addFilter(repeats)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return repeats
