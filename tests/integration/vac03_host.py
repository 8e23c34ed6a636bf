# SPDX-License-Identifier: BSD-2-Clause
"""A mixed space in network namespaces: factory hosts running our vacd (netns_space.Host)
and one host where an original Vac 03 factory answers VacQuery (vac03_responder.py serving a
state directory in the original's layout, written with vac03_state.py, with running
machines); the namespaces, the bridge joining them and /etc/netns/<ns>/hosts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Dict, List

from netns_space import DOMAIN, ip
from testbed import REPO
from vac03_state import machine_dir, mark_started

from vac.machine.slots import machine_name

RESPONDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vac03_responder.py")
CPU = "1234 87.5\n"          # a heartbeat as the original's vacd writes one: seconds, CPU %


class OriginalHost:
    """A host whose factory is the original Vac 03: running machines of one machinetype in
    every slot, and its responder in the host's namespace on port 995."""

    def __init__(self, tmp, tag: str, n: int, short_names: List[str], machinetype: str,
                 slots: int = 2):
        self.n, self.slots, self.machinetype = n, slots, machinetype
        self.ns = f"vacsp{tag}{n}"
        self.name = f"{short_names[n - 1]}.{DOMAIN}"
        self.address = f"192.0.2.{n}"
        self.state = str(tmp / f"state{n}")
        self.log = str(tmp / f"vac03-responder{n}.log")
        self.conf = tmp / f"vac03-{n}.json"
        self.truth: Dict[str, Dict[str, object]] = {}
        self.proc = None

    def write_state(self) -> None:
        """One running 1-processor machine per slot, as the original leaves them: started
        and heartbeat files, the heartbeat with CPU seconds and CPU %."""
        for k in range(self.slots):
            name = machine_name(self.name, k)
            path = machine_dir(self.state, name, self.machinetype, "docker",
                               "#!/bin/sh\nexec sleep 600\n", processors=1)
            job_id = f"vac03-job-{k}"
            mark_started(path, job_id)
            with open(os.path.join(path, "heartbeat"), "w") as f:
                f.write(CPU)
            self.truth[name] = {
                "machinetype": self.machinetype, "uuid": job_id, "state": "Running",
                "num_processors": 1, "hs06": 1.0, "cpu_seconds": 1234, "cpu_percentage": 87.5,
                "started_time": int(os.stat(os.path.join(path, "started")).st_ctime),
                "heartbeat_time": int(os.stat(os.path.join(path, "heartbeat")).st_ctime),
                "created_time": int(os.path.basename(path).split("_")[0])}
        self.conf.write_text(json.dumps({
            "state": self.state, "factory": self.name, "space": DOMAIN, "slots": self.slots,
            "mb_per_processor": 64, "log": self.log, "address": "",
            "machinetypes": {"alpha": {"fizzle_seconds": 600, "max_wallclock_seconds": 86400},
                             "beta": {"fizzle_seconds": 600, "max_wallclock_seconds": 86400}}}))

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, RESPONDER, str(self.conf)],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def bound(self) -> bool:
        return os.path.exists(self.log) and "bound " in open(self.log).read()

    def sent(self) -> List[dict]:
        with open(self.log) as f:
            return [json.loads(line[5:]) for line in f if line.startswith("sent ")]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def containers(self) -> List[dict]:
        return []


def make_namespaces(hosts, bridge_ns: str, tag: str, made: List[str]) -> None:
    """One namespace per host (its address on a veth into a bridge in bridge_ns) and an
    /etc/netns/<ns>/hosts naming every host; every namespace made is appended to made."""
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
        inner, outer = f"vo{tag}{h.n}", f"vo{tag}{h.n}b"
        ip("link", "add", inner, "type", "veth", "peer", "name", outer)
        ip("link", "set", inner, "netns", h.ns)
        ip("link", "set", outer, "netns", bridge_ns)
        ip("-n", h.ns, "addr", "add", f"{h.address}/24", "dev", inner)
        ip("-n", h.ns, "link", "set", inner, "up")
        ip("-n", h.ns, "link", "set", "lo", "up")
        ip("-n", bridge_ns, "link", "set", outer, "master", "br0", "up")
