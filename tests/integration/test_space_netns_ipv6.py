# SPDX-License-Identifier: BSD-2-Clause
"""The three-host space of test_space_netns on IPv6: real vacds with Docker
containers in network namespaces, as the IPv4 test, with

- IPv6-only hosts (2001:db8::1-3, the documentation prefix; names resolve to AAAA only):
  shares converge to 6:2 across the space and `vac machines` lists every machine;
- a mixed set: one IPv4-only host, one IPv6-only, one dual-stack (its responder on the
  default dual-stack socket, its name resolving to both): every host fills its slots, the
  dual-stack host lists every machine of all three, and the IPv4-only host lists its own
  and the dual-stack host's (the IPv6-only one has no address it can reach).
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

pytestmark = [pytest.mark.docker]

# Per host: its IPv4 address, its IPv6 address (either may be None), its VacQuery bind.
SETS = {
    "ipv6": [(None, "2001:db8::1", "2001:db8::1"), (None, "2001:db8::2", "2001:db8::2"),
             (None, "2001:db8::3", "2001:db8::3")],
    "mixed": [("192.0.2.1", None, "192.0.2.1"), (None, "2001:db8::2", "2001:db8::2"),
              ("192.0.2.3", "2001:db8::3", "")],
}


class Host6(Host):
    """A Host (netns_space) with IPv4 and/or IPv6 addresses."""

    def __init__(self, tmp, tag, n, slots, shorts, v4, v6, bind):
        super().__init__(tmp, tag, n, slots, shorts)
        self.v4, self.v6 = v4, v6
        text = self.conf.read_text().replace(f"vacquery_address = {self.address}\n",
                                             f"vacquery_address = {bind}\n" if bind else "")
        self.conf.write_text(text)

    def hosts_lines(self) -> str:
        short = self.name.split(".")[0]
        return "".join(f"{a} {self.name} {short}\n" for a in (self.v6, self.v4) if a)


def _namespaces(hosts: List[Host6], tag: str, made: List[str]) -> None:
    bridge_ns = f"vac6{tag}br"
    ip("netns", "add", bridge_ns)
    made.append(bridge_ns)
    ip("-n", bridge_ns, "link", "add", "br0", "type", "bridge")
    ip("-n", bridge_ns, "link", "set", "br0", "up")
    hosts_file = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
        h.hosts_lines() for h in hosts)
    for h in hosts:
        ip("netns", "add", h.ns)
        made.append(h.ns)
        os.makedirs(f"/etc/netns/{h.ns}", exist_ok=True)
        with open(f"/etc/netns/{h.ns}/hosts", "w") as f:
            f.write(hosts_file)
        inner, outer = f"v6{tag}{h.n}", f"v6{tag}{h.n}b"
        ip("link", "add", inner, "type", "veth", "peer", "name", outer)
        ip("link", "set", inner, "netns", h.ns)
        ip("link", "set", outer, "netns", bridge_ns)
        if h.v4:
            ip("-n", h.ns, "addr", "add", f"{h.v4}/24", "dev", inner)
        if h.v6:
            ip("-n", h.ns, "addr", "add", f"{h.v6}/64", "dev", inner, "nodad")
        ip("-n", h.ns, "link", "set", inner, "up")
        ip("-n", h.ns, "link", "set", "lo", "up")
        ip("-n", bridge_ns, "link", "set", outer, "master", "br0", "up")


@pytest.fixture(params=sorted(SETS))
def space6(request, tmp_path):
    try:
        sdk().inspect_image(IMAGE)
    except Exception as e:  # engine or image missing
        require_engine("docker", False, f"{type(e).__name__}: {e}")
    require_engine("netns", os.geteuid() == 0 and shutil.which("ip") is not None,
                   "network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:4]
    shorts = [f"x{tag}{n}" for n in (1, 2, 3)]
    hosts = [Host6(tmp_path, "6" + tag, n, SLOTS[n - 1], shorts, *SETS[request.param][n - 1])
             for n in (1, 2, 3)]
    made: List[str] = []
    try:
        _namespaces(hosts, tag, made)
        yield request.param, hosts
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


def test_a_space_on_ipv6_and_a_mixed_space_share_and_list_every_machine(space6):
    kind, hosts = space6
    h1, h2, h3 = hosts
    for h in hosts:                     # one after the other: each sees the ones before it
        h.start()
        assert wait_until(lambda h=h: len(h.slot_types()) == h.slots), \
            f"{h.name} did not fill its slots: {open(h.log).read()[-2000:]}"
    assert wait_until(lambda: len([r for r in machines(h3) if r["state"] == "Running"]) == 8,
                      timeout=60), open(h3.log).read()[-2000:]
    replies = machines(h3)
    assert sorted({r["factory"] for r in replies}) == sorted(h.name for h in hosts)
    if kind == "ipv6":                  # every host sees every other: shares as on IPv4
        assert sorted(h3.slot_types().values()) == ["alpha", "alpha"]
        assert running_hs06(replies) == {"alpha": 6.0, "beta": 2.0}
        for h in (h1, h2):
            assert len(machines(h)) == 8
    else:                               # the IPv4-only host reaches h1 and h3, not h2
        seen = {r["factory"] for r in machines(h1, "-t", "2")}
        assert seen == {h1.name, h3.name}
