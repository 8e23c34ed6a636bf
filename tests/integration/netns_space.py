# SPDX-License-Identifier: BSD-2-Clause
"""Factory hosts of one Vac space, each in a network namespace of its own with its own
address, config, state directory and vacd (started with `ip netns exec`), on the real Docker
engine; `vac machines --json` as each host answers it, and the HS06 of running machines by
machinetype."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Dict, List

from docker_engine import ENGINE, IMAGE, sdk
from testbed import REPO
from waiting import ENGINE_CALL

from vac.machine.directory import MachineDir, read_slot_record
from vac.machine.slots import machine_name
from vac.paths import Paths

DOMAIN = "vacsp.example.com"
SLOTS = (3, 3, 2)
CONF = """
[settings]
backend_timeout_seconds = {engine_call:g}
vac_space = {domain}
factory_name = {name}
factories = {factories}
state_dir = {state}
host_processors = {slots}
overload_per_processor = 1000
mb_per_processor = 64
docker_url = {url}
udp_timeout_seconds = 1
vacquery_address = {address}

[machinetype alpha]
machine_model = docker
root_image = docker://{image}
user_data = {user_data}
target_share = 3
backoff_seconds = 600
docker_pids_limit = 200

[machinetype beta]
machine_model = docker
root_image = docker://{image}
user_data = {user_data}
target_share = 1
backoff_seconds = 600
docker_pids_limit = 200
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Host:
    """One factory host: its namespace, address, config, state directory and vacd."""

    def __init__(self, tmp, tag: str, n: int, slots: int, short_names: List[str]):
        self.n, self.slots = n, slots
        self.ns = f"vacsp{tag}{n}"
        self.name = f"{short_names[n - 1]}.{DOMAIN}"
        self.address = f"192.0.2.{n}"
        self.state = str(tmp / f"state{n}")
        self.conf = tmp / f"vac{n}.conf"
        self.log = str(tmp / f"vacd{n}.log")
        user_data = tmp / "user_data"
        user_data.write_text("#!/bin/sh\nexec sleep 600\n")
        self.conf.write_text(CONF.format(engine_call=ENGINE_CALL, domain=DOMAIN,
                                         name=self.name,
                                         factories=" ".join(short_names), state=self.state,
                                         slots=slots, url=ENGINE, address=self.address,
                                         image=IMAGE, user_data=user_data))
        self.proc = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=REPO)
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, "-m", "vac.daemon",
                 "--config", str(self.conf), "--foreground", "--cycle-seconds", "1"],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cycles(self) -> int:
        with open(self.log) as f:
            return sum(1 for line in f if ": INFO cycle " in line)

    def vac(self, *args: str) -> str:
        out = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-m", "vac.cli",
                              "--config", str(self.conf), *args], cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=REPO), capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def slot_types(self) -> Dict[str, str]:
        """slot name -> machinetype of its current, unfinished machine."""
        paths, found = Paths(self.state), {}
        for k in range(self.slots):
            name = machine_name(self.name, k)
            directory = MachineDir.for_slot(paths, name)
            if directory is not None and directory.finished is None:
                found[name] = read_slot_record(paths, name).machinetype
        return found

    def containers(self) -> List[dict]:
        return sdk().containers(all=True, filters={"label": f"vac.factory={self.name}"})


def running_hs06(replies: List[dict]) -> Dict[str, float]:
    found: Dict[str, float] = {}
    for r in replies:
        if r["state"] == "Running":
            found[r["machinetype"]] = found.get(r["machinetype"], 0.0) + r["hs06"]
    return found


def machines(host: Host, *args: str) -> List[dict]:
    return json.loads(host.vac("machines", "--json", *args))
