# SPDX-License-Identifier: BSD-2-Clause
"""The space-wide census: other factories' machinetype_status replies (encoded and decoded as
on the wire) merged with the local census and handed to the real planner; the cycle's poll
(silent factories, failures), the hourly census files and their ageing; rendering."""
from __future__ import annotations

import json
import os
import random

import pytest

from vac.cycle import planner
from vac.machine.observed import Observed
from vac.machine.slots import make_slots
from vac.space import census, client, render
from vac.space import messages as m

NOW = 1_700_000_000.0
SPACE = "vac01.example.com"
CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
factories = f1 f2 f3.example.com .
enable_fake_backend = true
overload_per_processor = 100
host_processors = 4
udp_timeout_seconds = 0.5

[machinetype alpha]
machine_model = fake
target_share = 3
fizzle_seconds = 600
backoff_seconds = 1000

[machinetype beta]
machine_model = fake
target_share = 1
fizzle_seconds = 600
backoff_seconds = 1000
"""


@pytest.fixture
def config(make_config):
    return make_config(CONF)


def status(factory, mt, hs06=0.0, before=0, message=None, when=None, salt="s"):
    """A machinetype_status as another factory's responder sends it, through the wire."""
    reply = m.reply_header(m.MACHINETYPES, m.cookie_for(salt, factory), SPACE, factory,
                           "example.com", "Vac 03.00.02 vacd-responder", int(NOW))
    reply.update({"num_machinetypes": 2, "machinetype": mt, "running_hs06": hs06,
                  "running_machines": int(hs06), "running_processors": int(hs06),
                  "running_cpus": int(hs06), "num_before_fizzle": before,
                  "shutdown_message": message, "shutdown_time": when,
                  "shutdown_machine": None})
    return m.decode_reply(m.encode(reply), SPACE, m.MACHINETYPES, salt)


def result_of(*replies, silent=()):
    names = sorted({r["factory"] for r in replies} | set(silent))
    result = client.Result(kind=m.MACHINETYPES, factories=names)
    for r in replies:
        result.replies.setdefault(r["factory"], {})[r["machinetype"]] = r
        result.expected[r["factory"]] = 2
    return result


def free_slots(n=4):
    return [Observed(slot=s, finished=True, processors=0) for s in make_slots("f1.example.com", n)]


def plan(config, space_census):
    return planner.plan(config, free_slots(), space_census, load=0.0, now=NOW,
                        daemon_started=NOW - 100_000, rng=random.Random(1))


def test_others_are_canonical_without_this_factory(config):
    assert census.others(config.settings) == ["f2.example.com", "f3.example.com"]


def test_shares_count_what_runs_on_the_other_factories(config):
    # f2 and f3 run 30 HS06 of alpha (share 3) and nothing of beta (share 1): alpha's score is
    # 10, beta's 0, so every one of f1's four free slots gets beta.
    result = result_of(status("f2.example.com", "alpha", 18.0),
                       status("f3.example.com", "alpha", 12.0),
                       status("f2.example.com", "beta", 0.0))
    space = census.remote_census(result, config.machinetypes)
    assert space["alpha"].running_hs06 == 30.0
    made = plan(config, space).creates
    assert [c.machinetype for c in made] == ["beta"] * 4


def test_without_the_others_f1_would_split_by_its_own_shares(config):
    made = plan(config, {}).creates
    assert sorted(c.machinetype for c in made) == ["alpha", "alpha", "alpha", "beta"]


def test_an_abort_on_another_factory_backs_off_here_and_says_where(config):
    result = result_of(status("f3.example.com", "alpha", 0.0, message="300 No work",
                              when=int(NOW) - 10),
                       status("f2.example.com", "alpha", 0.0, message="200 Success",
                              when=int(NOW) - 5))
    space = census.remote_census(result, config.machinetypes)
    assert space["alpha"].last_abort_time == NOW - 10
    assert space["alpha"].last_abort_factory == "f3.example.com"
    made = plan(config, space)
    assert {c.machinetype for c in made.creates} == {"beta"}
    poll = census.SpacePoll(query=lambda *a, **k: result)
    merged = poll(config, {}, NOW)
    assert merged["alpha"].last_abort_factory == "f3.example.com"


def test_the_idle_reason_names_the_other_factory(config, make_config):
    only_alpha = make_config(CONF.replace("target_share = 1", "target_share = 0"))
    result = result_of(status("f3.example.com", "alpha", message="500 Broken",
                              when=int(NOW) - 10))
    made = plan(only_alpha, census.remote_census(result, only_alpha.machinetypes))
    assert made.creates == ()
    reason = dict(made.idle)[make_slots("f1.example.com", 4)[0]]
    assert f"backoff of alpha until {int(NOW) - 10 + 1000}: abort on f3 at " in reason


def test_machinetypes_only_others_know_are_ignored(config):
    result = result_of(status("f2.example.com", "gamma", 50.0))
    assert census.remote_census(result, config.machinetypes) == {}


def test_the_poll_leaves_silent_factories_out_and_survives_a_failing_client(config):
    asked = []

    def query(kind, space, names, timeout, **kw):
        asked.append((kind, space, names, timeout, kw["program"]))
        return result_of(status("f2.example.com", "alpha", 3.0), silent=["f3.example.com"])
    poll = census.SpacePoll(query=query)
    local = {"alpha": census.Census(running_hs06=1.0)}
    merged = poll(config, local, NOW)
    assert merged["alpha"].running_hs06 == 4.0 and poll.silent == ["f3.example.com"]
    assert asked[0] == (m.MACHINETYPES, SPACE, ["f2.example.com", "f3.example.com"], 0.5,
                        "vacd-factory")

    def broken(*a, **k):
        raise OSError("network unreachable")
    assert census.SpacePoll(query=broken)(config, local, NOW) == local


def factory_result(names):
    result = client.Result(kind=m.FACTORY, factories=list(names))
    for name in names:
        result.replies[name] = {"": {"factory": name, "max_processors": 8}}
    return result


def test_census_files_are_written_hourly_and_aged(config):
    s = config.settings
    calls = []

    def query(kind, space, names, timeout, **kw):
        calls.append(names)
        return factory_result(["f1.example.com", "f2.example.com", "../evil"])
    assert census.update_census(config, NOW, query)
    folder = census.census_dir(s)
    assert sorted(os.listdir(folder)) == ["f1.example.com", "f2.example.com"]
    assert calls == [["f1.example.com", "f2.example.com", "f3.example.com"]]
    assert not census.update_census(config, NOW + 3599, query)    # within the hour
    old = os.path.join(folder, "f9.example.com")
    with open(old, "w") as f:
        json.dump({"factory": "f9.example.com"}, f)
    os.utime(old, (NOW - 100_000, NOW - 100_000))                 # more than a day old
    assert sorted(census.fresh_census(s, NOW)) == ["f1.example.com", "f2.example.com"]
    os.utime(old, (NOW - 180_000, NOW - 180_000))                 # more than two days
    assert census.update_census(config, NOW + 3600, query)
    assert "f9.example.com" not in os.listdir(folder)


# Rendering ---------------------------------------------------------------------------

def machine(state, **kw):
    reply = {"factory": "f2.example.com", "machine": "f2-03.example.com", "state": state,
             "machinetype": "lhcb-production-long", "num_cpus": 8, "machine_model": "docker",
             "created_time": NOW - 120, "started_time": NOW - 7200,
             "heartbeat_time": NOW - 60, "cpu_seconds": 7140.0 * 4, "cpu_percentage": 99.5,
             "hs06": 80.0, "shutdown_message": None}
    reply.update(kw)
    return reply


# The original's `vac machines` line, by its columns (read from its queryMachines): name padded
# to 15 and never cut, a space, machinetype 14 ("----------" when none), a space, two spaces and
# the state cut to 9, padded to 11 in all, two spaces, processors %2d, a space, the model class,
# a space, the info cut or padded to 21, then CPU % as %5.1f% or 6 spaces.
def original_line(name, machinetype, state, processors, model, info, percent):
    return (name.ljust(15) + " " + (machinetype or "----------")[:14].ljust(14) + " "
            + ("  " + state)[:11].ljust(11) + "  " + processors + " " + model + " "
            + info[:21].ljust(21) + percent.ljust(6))


def test_machine_lines_have_the_original_columns():
    assert render.machine_line(machine("Running"), NOW) == \
        "f2-03           lhcb-productio   Running     8 DC  2.00 hrs 400.0%      99.5%"
    assert render.machine_line(machine("Running"), NOW) == original_line(
        "f2-03", "lhcb-production-long", "Running", " 8", "DC", " 2.00 hrs 400.0%", " 99.5%")
    assert render.machine_line(machine("Starting", machine_model="cernvm3"), NOW) == \
        original_line("f2-03", "lhcb-production-long", "Starting", " 8", "VM", " 2.00 mins", "")
    line = render.machine_line(machine("Shut down", machinetype=None, num_cpus=None,
                                       machine_model=None,
                                       shutdown_message="300 No more work for you today"),
                               NOW)
    assert line == original_line("f2-03", None, "Shut down", " 1", "??", "", "")
    assert line == "f2-03           ----------       Shut down   1 ??" + 28 * " "
    line = render.machine_line(machine("Shut down", num_cpus=12, machine_model="vm-raw",
                                       shutdown_message="300 No more work for you today"),
                               NOW)
    assert line == original_line("f2-03", "lhcb-production-long", "Shut down", "12", "VM",
                                 '"300 No more work fo"', "")


def test_machine_lines_keep_long_names_and_leave_unknown_cpu_blank():
    long_name = machine("Running", machine="factory0042-slot07.example.com", cpu_percentage=None,
                        heartbeat_time=NOW - 7200)
    assert render.machine_line(long_name, NOW) == original_line(
        "factory0042-slot07", "lhcb-production-long", "Running", " 8", "DC", " 2.00 hrs", "")
    assert render.machine_line(machine("Running", machinetype=None), NOW) == \
        original_line("f2-03", None, "Running", " 8", "DC", "", "")


def test_machines_header_totals_and_silent_factories():
    result = client.Result(kind=m.MACHINES, factories=["f2.example.com", "f3.example.com",
                                                       "f4.example.com"], timeout=2.5,
                           unresolved=["f4.example.com"])
    result.replies["f2.example.com"] = {"a": machine("Running"), "b": machine("Shut down")}
    lines = render.machines_lines(result, NOW)
    assert lines[0] == ("Machine         Machinetype      State   Procs Type Info"
                        "                 CPU%")
    running, header = lines[1], lines[0]
    assert running == render.machine_line(machine("Running"), NOW)
    for word, value in (("Machine", "f2-03"), ("Machinetype", "lhcb"), ("State", "Running"),
                        ("Type", "DC")):        # each heading above its column
        assert header.index(word) == running.index(value), word
    for word, value in (("Procs", " 8 "), ("CPU%", "99.5%")):     # right-aligned columns
        assert header.index(word) + len(word) == running.index(value) + len(value.rstrip()), \
            word
    assert lines[-3] == ("Total: 1 running machines, 8 processors, 80.0 HS06 in 2 slots on "
                         "1 factories, 2 silent")
    assert lines[-2] == "f3 (silent: no reply in 2.5 s)"
    assert lines[-1] == "f4.example.com (silent: does not resolve)"


def test_an_address_is_shown_whole():
    assert render.short("127.0.0.1") == "127.0.0.1" and render.short("::1") == "::1"
    assert render.short("f1.example.com") == "f1"


def test_factory_and_machinetype_lines():
    reply = {"factory": "f2.example.com", "running_processors": 6, "max_processors": 8,
             "running_machines": 3, "max_machines": 8, "load_average": 5.5,
             "root_disk_avail_kb": 1000, "vac_disk_avail_kb": 2000, "mem_used_kb": 300,
             "mem_total_kb": 4000, "vac_version": "Vac 03.00.02 vacd-responder"}
    assert render.factory_line(reply) == \
        'f2  6/8  3/8   5.50      1000      2000      300/    4000 "Vac 03.00.02 vacd-responder"'
    assert render.factory_line(reply, "10.1.2.3").startswith("10.1.2.3  6/8  3/8 ")
    result = client.Result(kind=m.MACHINETYPES, factories=["f2.example.com"])
    result.replies["f2.example.com"] = {"alpha": {"running_machines": 2, "running_hs06": 20.0,
                                                  "shutdown_message": None,
                                                  "shutdown_time": None}}
    assert render.machinetype_lines(result, "alpha") == [
        'Factory Running HS06 Last-outcome "Message"', 'f2  2  20.0 - "-"',
        "Total: 2 running alpha machines, 20.0 HS06 on 1 factories"]


@pytest.mark.parametrize("name, expected", [
    (".", "f1.example.com"), ("f2", "f2.example.com"), ("F3.Example.COM", "f3.example.com"),
    ("f4.other.org.", "f4.other.org")])
def test_factory_names_are_canonical(name, expected):
    assert client.canonical(name, "f1.example.com") == expected


def test_the_poll_runs_the_hourly_census_beside_the_cycle(config):
    kinds = []

    def query(kind, space, names, timeout, **kw):
        kinds.append(kind)
        return factory_result(names) if kind == m.FACTORY else result_of()
    poll = census.SpacePoll(query=query)
    poll(config, {}, NOW)
    poll._census_thread.join(5)
    assert kinds == [m.MACHINETYPES, m.FACTORY]
    assert sorted(census.fresh_census(config.settings, NOW)) == [
        "f1.example.com", "f2.example.com", "f3.example.com"]
    poll(config, {}, NOW + 60)
    poll._census_thread.join(5)
    assert kinds == [m.MACHINETYPES, m.FACTORY, m.MACHINETYPES]   # once an hour


def test_factories_lines_say_when_a_silent_factory_was_last_seen():
    result = client.Result(kind=m.FACTORY, factories=["f2.example.com", "f3.example.com"],
                           timeout=10.0)
    lines = render.factories_lines(result, {"f3.example.com": {"time_sent": NOW - 1800}}, NOW)
    assert lines[0].startswith("Factory Processors(running/max) Machines(running/max) Load")
    assert lines[-2] == "f2 (silent: no reply in 10 s)"
    assert lines[-1] == "f3 (silent: no reply in 10 s; in the census 0h30m ago)"
