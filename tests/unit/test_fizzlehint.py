# SPDX-License-Identifier: BSD-2-Clause
"""The original's "minimum fizzle_seconds" hint (vac.cycle.fizzlehint): a machine that
finished with a 3xx message (no work) is logged once, with how long it ran from `started` to
its last heartbeat, in the original's words; not every cycle, and again only for another
machine."""
from __future__ import annotations

import logging

from vac.backends.fake import FakeBackend
from vac.cycle.fizzlehint import FizzleHints, fizzle_hint
from vac.machine.directory import MachineDir, MachineState
from vac.machine.observed import Observed
from vac.machine.slots import Slot

LOGGER = "vac.cycle.fizzlehint"
SLOT = "f1-00.example.com"


def finished(created=1000, message="300 Nothing to do", started=1010.0, beat=1250.0,
             done=True, name=SLOT) -> Observed:
    return Observed(slot=Slot(0, name), machinetype="alpha",
                    model="fake", state=MachineState.SHUTDOWN, created=created,
                    started=started, finished=done, processors=2, shutdown_message=message,
                    last_heartbeat=beat)


def test_the_hint_says_how_long_the_machine_ran_in_the_originals_words():
    assert fizzle_hint(finished()) == (f'{SLOT} is Shut down (2 alpha "300 Nothing to do") '
                                       "Minimum alpha fizzle_seconds=240 ?")


def test_no_hint_without_a_3xx_message_a_start_a_heartbeat_or_an_end():
    assert fizzle_hint(finished(message="200 Success")) is None
    assert fizzle_hint(finished(message="500 Broken")) is None
    assert fizzle_hint(finished(message=None)) is None
    assert fizzle_hint(finished(started=None)) is None
    assert fizzle_hint(finished(beat=None)) is None
    assert fizzle_hint(finished(done=False)) is None     # its last heartbeat is not known yet


def test_a_hostile_message_is_shown_bounded_and_printable():
    hint = fizzle_hint(finished(message="300 \x1b[2J" + "x" * 5000))
    assert "\x1b" not in hint and len(hint) < 400


def test_the_hint_is_logged_once_per_machine_not_every_cycle(caplog):
    hints = FizzleHints()
    next_one = finished(created=1300, started=1301.0, beat=1400.0)   # the slot's next machine
    with caplog.at_level(logging.INFO, logger=LOGGER):
        lines = [hints.update([finished()]) for _ in range(3)]
        lines += [hints.update([next_one]) for _ in range(2)]
    assert [len(cycle) for cycle in lines] == [1, 0, 0, 1, 0]
    logged = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert logged == [lines[0][0], lines[3][0]] and logged[1].endswith("fizzle_seconds=99 ?")


class EndsEarly(FakeBackend):
    """The fake engine, whose machine can be made to end at a given time with a message."""

    def ends(self, name, at, message):
        machines = self._load()
        machines[name].update(run_seconds=at - machines[name]["started"], message=message)
        self._save(machines)


def test_the_factory_logs_the_hint_of_a_pilot_that_found_nothing(make_factory, paths, caplog):
    factory, backend, clock = make_factory(cap=1, backend_class=EndsEarly)
    t = clock.now
    (name,) = factory.run_cycle().created
    clock.now = t + 50
    factory.run_cycle()                                  # a heartbeat; another slot filled
    backend.ends(name, t + 60, "300 Nothing to do")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for step in (70, 80, 90, 100):                   # finished at 70, then seen finished
            clock.now = t + step
            factory.run_cycle()
    hints = [r.getMessage() for r in caplog.records
             if r.name == LOGGER and "fizzle_seconds=" in r.getMessage()]
    directory = MachineDir.for_slot(paths, name)
    assert directory.finished is not None and len(hints) == 1
    assert hints[0] == (f'{name} is Shut down (1 alpha "300 Nothing to do") Minimum alpha '
                        f"fizzle_seconds={int(directory.heartbeat_time) - int(t)} ?")
    assert int(directory.heartbeat_time) - int(t) == 70   # its last heartbeat, when finished
