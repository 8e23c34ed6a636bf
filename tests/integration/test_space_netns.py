# SPDX-License-Identifier: BSD-2-Clause
"""Three factories as separate network hosts, each a real vacd with real Docker containers.

The test makes three network namespaces with their own addresses (192.0.2.1-3, the TEST-NET
documentation range) joined by a bridge in a fourth namespace, and /etc/netns/<ns>/hosts so
each host resolves the others' names; it removes all of it at the end. Each vacd answers
VacQuery on its own address, port 995, and polls the other two each cycle. Docker's socket
is reachable from every namespace, so the containers are real.

- Shares converge across the space: two machinetypes 3:1 over 3 + 3 + 2 slots, factories
  started one after the other, give 6:2 running HS06 (each factory alone would make 5:3).
- An abort on one factory backs the machinetype off on all: a slot freed on another factory
  after a good run is refilled with the other machinetype.
- `vac machines` from one host lists every slot of all three.
- A stopped factory is reported silent while the others carry on.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from typing import List

import pytest
from docker_engine import IMAGE, sdk
from netns_space import SLOTS, Host, ip, machines, running_hs06
from testbed import require_engine
from waiting import wait_until

from vac.machine.directory import MachineDir
from vac.paths import Paths

pytestmark = [pytest.mark.docker]


@pytest.fixture
def space(tmp_path):
    try:
        sdk().inspect_image(IMAGE)
    except Exception as e:  # engine or image missing
        require_engine("docker", False, f"{type(e).__name__}: {e}")
    require_engine("netns", os.geteuid() == 0 and shutil.which("ip") is not None,
                   "network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:4]
    shorts = [f"s{tag}{n}" for n in (1, 2, 3)]
    hosts = [Host(tmp_path, tag, n, SLOTS[n - 1], shorts) for n in (1, 2, 3)]
    bridge_ns = f"vacsp{tag}br"
    made: List[str] = []
    try:
        ip("netns", "add", bridge_ns)
        made.append(bridge_ns)
        ip("-n", bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", bridge_ns, "link", "set", "br0", "up")
        hosts_file = "127.0.0.1 localhost\n" + "".join(
            f"{h.address} {h.name} {h.name.split('.')[0]}\n" for h in hosts)
        for h in hosts:
            ip("netns", "add", h.ns)
            made.append(h.ns)
            os.makedirs(f"/etc/netns/{h.ns}", exist_ok=True)
            with open(f"/etc/netns/{h.ns}/hosts", "w") as f:
                f.write(hosts_file)
            inner, outer = f"vs{tag}{h.n}", f"vs{tag}{h.n}b"
            ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            ip("link", "set", inner, "netns", h.ns)
            ip("link", "set", outer, "netns", bridge_ns)
            ip("-n", h.ns, "addr", "add", f"{h.address}/24", "dev", inner)
            ip("-n", h.ns, "link", "set", inner, "up")
            ip("-n", h.ns, "link", "set", "lo", "up")
            ip("-n", bridge_ns, "link", "set", outer, "master", "br0", "up")
        yield hosts
    finally:
        for h in hosts:
            h.stop()
        api = sdk()
        for h in hosts:
            for c in h.containers():
                api.remove_container(c["Id"], force=True)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def test_three_factories_share_back_off_and_answer_as_one_space(space):
    h1, h2, h3 = space
    for h in space:                     # one after the other: each sees the ones before it
        h.start()
        assert wait_until(lambda h=h: len(h.slot_types()) == h.slots), \
            f"{h.name} did not fill its slots: {open(h.log).read()[-2000:]}"
    assert sorted(h3.slot_types().values()) == ["alpha", "alpha"]   # alone: alpha, beta

    # `vac machines` from one host lists every slot of all three; shares are 3:1 by HS06.
    assert wait_until(lambda: len([r for r in machines(h3) if r["state"] == "Running"]) == 8,
                      timeout=30)
    replies = machines(h3)
    assert sorted({r["factory"] for r in replies}) == sorted(h.name for h in space)
    assert len(replies) == 8
    assert running_hs06(replies) == {"alpha": 6.0, "beta": 2.0}
    for h in space:                     # what check-vacd reads
        assert os.path.exists(os.path.join(h.state, "responder-heartbeat"))

    # An abort of alpha on h1 backs alpha off on h2 too.
    abort_slot = next(n for n, t in h1.slot_types().items() if t == "alpha")
    end(h1, abort_slot, "300 No more work")
    assert wait_until(lambda: h1.slot_types().get(abort_slot) == "beta")
    good_slot = next(n for n, t in h2.slot_types().items() if t == "alpha")
    old = MachineDir.for_slot(Paths(h2.state), good_slot).path
    end(h2, good_slot, "200 Success")
    # Without the abort, alpha (score 4/3) would beat beta (3) for the freed slot.
    assert wait_until(lambda: good_slot in h2.slot_types() and
                      MachineDir.for_slot(Paths(h2.state), good_slot).path != old)
    assert h2.slot_types()[good_slot] == "beta"
    lines = h2.vac("machinetype", "alpha").splitlines()
    assert any(line.startswith(h1.name.split(".")[0]) and "300 No more work" in line
               for line in lines), lines

    # A stopped factory is silent; the others carry on.
    h3.stop()
    before = h1.cycles()
    text = h1.vac("machines", "-t", "2").splitlines()
    assert text[-1] == f"{h3.name.split('.')[0]} (silent: no reply in 2 s)"
    listed = [line for line in text if line.startswith(("s", "-")) and "silent" not in line]
    assert len(listed) == 6
    assert wait_until(lambda: h1.cycles() >= before + 2)
    assert len(h3.containers()) == 2    # its machines keep running without vacd


def end(host: Host, slot: str, message: str) -> None:
    """The machine in this slot writes a shutdown message and its container stops."""
    directory = MachineDir.for_slot(Paths(host.state), slot)
    directory.write("joboutputs/shutdown_message", message + "\n")
    container = next(c for c in host.containers() if c["Names"][0].lstrip("/") == slot)
    sdk().kill(container["Id"])
