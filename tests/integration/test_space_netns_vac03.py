# SPDX-License-Identifier: BSD-2-Clause
"""A mixed space: two hosts run our vacd with real Docker containers and a third is an
original Vac 03 factory, all in network namespaces as in test_space_netns.

The original's host answers VacQuery as the original's responder does (vac03_responder.py:
its reply shapes, field order and types, from a state directory in the original's layout
with two running 1-processor beta machines). Its machinetype_status for beta carries
"running_processors": 2.0 and "running_cpus": 2.0, as Python 2 sent them.

- Our factories' census counts the original's machines: with alpha:beta 3:1 over 3 + 3 + 2
  slots, the original's 2 beta machines are the space's whole beta share, so our six slots
  all run alpha (a factory that did not count them would start beta: alone, 3 slots at 3:1
  give two alpha and one beta).
- `vac machines` from our host lists the original's machines as they are on its disk
  (machinetype, uuid, times from the files' ctimes, CPU seconds and %, HS06), with its types.
- `vac machinetype beta` totals the original's machines, its integral floats read as ints,
  and no reply of the original's is refused.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
from docker_engine import IMAGE, sdk
from netns_space import Host, machines, running_hs06
from testbed import REPO, require_engine
from vac03_host import OriginalHost, make_namespaces
from waiting import wait_until

pytestmark = [pytest.mark.docker]


@pytest.fixture
def mixed(tmp_path):
    try:
        sdk().inspect_image(IMAGE)
    except Exception as e:  # engine or image missing
        require_engine("docker", False, f"{type(e).__name__}: {e}")
    require_engine("netns", os.geteuid() == 0 and shutil.which("ip") is not None,
                   "network namespaces need root and iproute2")
    tag = uuid.uuid4().hex[:4]
    shorts = [f"o{tag}{n}" for n in (1, 2, 3)]
    ours = [Host(tmp_path, "o" + tag, n, 3, shorts) for n in (1, 2)]
    for h in ours:                      # a busy host may answer the first poll late
        h.conf.write_text(h.conf.read_text().replace("udp_timeout_seconds = 1\n",
                                                      "udp_timeout_seconds = 5\n"))
    original = OriginalHost(tmp_path, "o" + tag, 3, shorts, "beta")
    made = []
    try:
        make_namespaces(ours + [original], f"vacsp{tag}obr", tag, made)
        yield ours, original
    finally:
        for h in ours + [original]:
            h.stop()
        api = sdk()
        for h in ours:
            for c in h.containers():
                api.remove_container(c["Id"], force=True)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def vac(host: Host, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, "-m", "vac.cli",
                           "--config", str(host.conf), *args], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                          text=True, timeout=60)


def test_our_factories_count_list_and_accept_an_original_factory(mixed):
    (h1, h2), original = mixed
    original.write_state()
    original.start()
    assert wait_until(original.bound), open(original.log).read()[-2000:]
    for h in (h1, h2):                  # one after the other: each sees the ones before it
        h.start()
        assert wait_until(lambda h=h: len(h.slot_types()) == h.slots), \
            f"{h.name} did not fill its slots: {open(h.log).read()[-2000:]}"

    # The census: the original's two beta machines are the space's beta share.
    assert sorted(h1.slot_types().values()) == ["alpha"] * 3, open(h1.log).read()[-2000:]
    assert sorted(h2.slot_types().values()) == ["alpha"] * 3, open(h2.log).read()[-2000:]
    sent = [r for r in original.sent() if r["message_type"] == "machinetype_status"]
    beta = [r for r in sent if r["machinetype"] == "beta"]
    assert beta and all(type(r["running_processors"]) is float and r["running_processors"]
                        == 2.0 and type(r["running_cpus"]) is float for r in beta)
    assert len({r["cookie"] for r in sent}) >= 2          # asked by both our factories

    # `vac machines` from our host lists every machine, the original's as they are on disk.
    assert wait_until(lambda: len([r for r in machines(h2) if r["state"] == "Running"]) == 8,
                      timeout=60), open(h2.log).read()[-2000:]
    out = vac(h2, "machines", "--json")
    assert out.returncode == 0 and "refused" not in out.stderr, out.stderr
    replies = json.loads(out.stdout)
    assert sorted({r["factory"] for r in replies}) == sorted([h1.name, h2.name, original.name])
    assert running_hs06(replies) == {"alpha": 6.0, "beta": 2.0}
    theirs = {r["machine"]: r for r in replies if r["factory"] == original.name}
    assert sorted(theirs) == sorted(original.truth)
    for name, truth in original.truth.items():
        for field, value in truth.items():
            got = theirs[name][field]
            assert got == value and type(got) is type(value), (name, field, got, value)
        assert theirs[name]["vac_version"].startswith("Vac 03.01")

    # `vac machinetype beta`: the original's 2.0 processors read as an int, nothing refused.
    out = vac(h1, "machinetype", "beta", "--json")
    assert out.returncode == 0 and "refused" not in out.stderr, out.stderr
    found = {r["factory"]: r for r in json.loads(out.stdout)}
    assert found[original.name]["running_processors"] == 2
    assert type(found[original.name]["running_processors"]) is int
    assert found[original.name]["running_hs06"] == 2.0
    assert type(found[original.name]["running_hs06"]) is float
    assert found[original.name]["running_machines"] == 2
    text = vac(h1, "machinetype", "beta")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    row = next(line.split() for line in lines if line.startswith(original.name.split(".")[0]))
    assert row[1:3] == ["2", "2.0"], lines
    assert lines[-1] == "Total: 2 running beta machines, 2.0 HS06 on 3 factories", lines
