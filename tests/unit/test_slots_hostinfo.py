# SPDX-License-Identifier: BSD-2-Clause
"""Slots (names, ordinals, addresses) and host facts parsing."""
from __future__ import annotations

import pytest

from vac.host import facts as hostinfo
from vac.machine.slots import Slot, machine_name, make_slots, ordinal_of

CPUINFO = "".join(f"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: X\n\n"
                  for n in range(6))


def test_slot_count_is_the_processor_count():
    assert hostinfo.count_processors(CPUINFO) == 6
    assert len(make_slots("f1.example.com", hostinfo.count_processors(CPUINFO))) == 6


def test_processor_lines_only():
    assert hostinfo.count_processors("processors: 4\nmodel name : processor\n") == 0


@pytest.mark.parametrize("ordinal,name,ip,mac", [
    (0, "f1-00.example.com", "169.254.169.0", "56:4D:A9:FE:A9:00"),
    (5, "f1-05.example.com", "169.254.169.5", "56:4D:A9:FE:A9:05"),
    (42, "f1-42.example.com", "169.254.169.42", "56:4D:A9:FE:A9:2A"),
])
def test_names_and_addresses(ordinal, name, ip, mac):
    slot = make_slots("f1.example.com", 50)[ordinal]
    assert (slot.name, slot.ip, slot.mac) == (name, ip, mac)
    assert slot.vnc_port == 5900 + ordinal


def test_name_uses_first_label_and_keeps_domain():
    assert machine_name("factory1.grid.example.org", 7) == "factory1-07.grid.example.org"
    assert machine_name("factory1.grid.example.org", 123) == "factory1-123.grid.example.org"


def test_ordinal_of_recognises_only_our_names():
    assert ordinal_of("f1.example.com", "f1-07.example.com") == 7
    assert ordinal_of("f1.example.com", "f2-07.example.com") == -1
    assert ordinal_of("f1.example.com", "f1-07.other.com") == -1
    assert ordinal_of("f1.example.com", "f1-7.example.com") == -1
    assert ordinal_of("f1.example.com", "f1-xx.example.com") == -1


def test_addresses_stop_before_the_factory_addresses():
    assert Slot(252, "x").has_address and not Slot(253, "x").has_address


def test_loadavg_and_meminfo_parsers():
    assert hostinfo.parse_loadavg("0.50 1.25 2.00 3/400 12345\n") == (0.5, 1.25, 2.0)
    assert hostinfo.parse_meminfo("MemTotal:  1000 kB\nMemFree: 250 kB\nBad line\n") == {
        "MemTotal": 1000, "MemFree": 250}


def test_read_processors_from_a_fake_proc(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    assert hostinfo.read_processors(str(tmp_path)) == 6
