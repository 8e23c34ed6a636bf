# SPDX-License-Identifier: BSD-2-Clause
"""How a machine ended: its shutdown code, whether that is an abort, the fizzle rule, and the
message its outcome is judged by. The one place for these rules: the planner, the
census, finishing, the space's replies and the web pages all ask here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

ABORT_CODE = 300          # shutdown codes >= 300 are aborts, as in the original
FIZZLE_FORMAT = "300 Vac detects fizzle after {} seconds"


def message_code(message: Optional[str]) -> Optional[int]:
    """The shutdown code: the message's first 3 characters if they are ASCII digits."""
    if not message:
        return None
    head = message.lstrip()[:3]
    if len(head) == 3 and head.isascii() and head.isdigit():
        return int(head)
    return None


def is_abort(message: Optional[str]) -> bool:
    """True for 300 no work, 400 banned, 500 site, 600 grid-wide, 700 transient problems."""
    code = message_code(message)
    return code is not None and code >= ABORT_CODE


def oom_message(limit_mib: int) -> str:
    """The shutdown message of a container the kernel's OOM killer ended (every backend)."""
    return f"700 Vac: container killed by the OOM killer (memory limit {limit_mib} MiB)"


def code_label(message: Optional[str]) -> str:
    """The shutdown code as the metrics and pages label it: "300", or "none"."""
    code = message_code(message)
    return "none" if code is None else f"{code:03d}"


def fizzled(started: Optional[float], ended: Optional[float], fizzle_seconds: float) -> bool:
    """A machine fizzled if it started and ran less than fizzle_seconds. One that never
    started did not run at all: its outcome is its message (a failed creation's 700)."""
    return started is not None and ended is not None and fizzle_seconds > 0 \
        and ended - started < fizzle_seconds


def outcome_message(message: Optional[str], started: Optional[float], ended: Optional[float],
                    fizzle_seconds: float) -> Optional[str]:
    """The message a machine's outcome is judged by (the rule the original
    meant; its own fizzle synthesis never ran).

    A message with a code is returned as it is. A machine that ran (it has `started`) for less
    than fizzle_seconds and left no coded message gets "300 Vac detects fizzle after N
    seconds". Otherwise the message (perhaps None) is returned unchanged, so a caller writes
    the result only when the machine wrote nothing itself.
    """
    if message_code(message) is not None or not fizzled(started, ended, fizzle_seconds):
        return message
    return FIZZLE_FORMAT.format(max(0, int(ended - started)))


@dataclass(frozen=True)
class LastOutcome:
    """The machine finishes/<machinetype> names: its message, when it ended, when it started."""

    message: Optional[str]
    time: Optional[float]
    machine: str
    started: Optional[float] = None
    created: Optional[int] = None


def latest(a: Optional[LastOutcome], b: Optional[LastOutcome]) -> Optional[LastOutcome]:
    """Of two outcomes, the one that counts for backoff: the one reported last.

    The original took the most recently *created* finished machine, so a pilot's abort
    reported after a younger pilot's success was dropped for good, and its slot refilled at
    once. At the same report time an abort wins, then the more recently created; on a full
    tie, b. An outcome without a time is the oldest.
    """
    if a is None or b is None:
        return b if a is None else a
    return a if _order(a) > _order(b) else b


def _order(outcome: LastOutcome) -> Tuple[float, int, float]:
    when = -math.inf if outcome.time is None else outcome.time
    created = -math.inf if outcome.created is None else outcome.created
    return when, 1 if is_abort(outcome.message) else 0, created
