# SPDX-License-Identifier: BSD-2-Clause
"""Pacing a VacQuery client's queries against its receive buffer (pure: no sockets).

A factory answers one query with all its replies at once, so the replies in flight are the
sum, over the factories asked and not yet complete, of what each announced (an estimate
before its first reply). The Pacer asks the next factory only while that sum stays within
the budget (half the receive buffer, at REPLY_COST bytes a datagram), so no burst overflows
the buffer. A factory still short after `quiet` seconds without a reply goes back to the
end of the queue to be asked again, up to `rounds` asks; one asked that many times is given
up (the caller reports it as short or silent).
"""
from __future__ import annotations

from collections import deque
from typing import Deque, Dict, List

from vac.space import messages as m

# What the kernel charges a socket's receive buffer for one reply datagram of up to about
# 1.4 KB (measured on loopback, IPv4 and IPv6: 2304 bytes for 700 and for 1400 bytes).
REPLY_COST = 2304
# Replies assumed of a factory that has not answered yet.
FIRST_GUESS = {m.MACHINES: 64, m.MACHINETYPES: 4, m.FACTORY: 1}


def budget(buffer_bytes: int) -> int:
    """Replies that may be in flight: those that fit in half the buffer, at least one."""
    return max(1, buffer_bytes // REPLY_COST // 2)


class Pacer:
    """Which factory to ask when; Result (replies, expected, asks) is read, never written."""

    def __init__(self, names: List[str], kind: str, rounds: int, quiet: float,
                 budget_replies: int = 1 << 30):
        self.queue: Deque[str] = deque(names)
        self.kind, self.rounds, self.quiet = kind, rounds, quiet
        self.budget = budget_replies
        self.flying: Dict[str, float] = {}      # factory -> last query or reply (monotonic)
        self.reserved: Dict[str, int] = {}     # factory -> replies reserved in the budget

    def in_flight(self) -> int:
        return sum(self.reserved.values())

    def finished(self) -> bool:
        return not self.queue and not self.flying

    def next_check(self, now: float) -> float:
        """When the quietest factory in flight is due to be given up or asked again."""
        return min((last + self.quiet for last in self.flying.values()), default=now)

    def due(self, now: float, result) -> List[str]:
        """The factories to ask now (their asks are counted by the caller)."""
        self._expire(now, result)
        asked: List[str] = []
        while self.queue:
            name = self.queue[0]
            if result.complete(name):    # a late reply completed it while it waited
                self.queue.popleft()
                continue
            cost = self._cost(name, result)
            if self.flying and self.in_flight() + cost > self.budget:
                break
            self.queue.popleft()
            self.flying[name], self.reserved[name] = now, cost
            asked.append(name)
        return asked

    def heard(self, name: str, now: float, result) -> None:
        """A reply from `name` was taken into the result."""
        if name not in self.flying:
            return
        if result.complete(name):
            self._land(name)
            return
        self.flying[name] = now
        self.reserved[name] = max(self.reserved[name], result.expected.get(name, 1))

    def _expire(self, now: float, result) -> None:
        for name, last in list(self.flying.items()):
            if now - last < self.quiet:
                continue
            self._land(name)
            if not result.complete(name) and result.asks.get(name, 0) < self.rounds:
                self.queue.append(name)

    def _land(self, name: str) -> None:
        self.flying.pop(name, None)
        self.reserved.pop(name, None)

    def _cost(self, name: str, result) -> int:
        if name in result.expected:
            return result.expected[name]
        known = list(result.expected.values())
        guess = sum(known) // len(known) if known else FIRST_GUESS.get(self.kind, 1)
        return max(1, guess)
