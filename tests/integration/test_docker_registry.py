# SPDX-License-Identifier: BSD-2-Clause
"""Rolling updates from a real registry: Debian's docker-registry on 127.0.0.1:18650
(started and stopped by the test, storage in tmp_path), the real Docker engine and the
factory's real cycle.

v1 is pushed as :latest and the engine's own copy untagged, so the first creation pulls it;
machines start from v1 (its repo digest in backend.json). v2 is pushed as :latest and the
engine's tag set back to v1, so only a pull from the registry can bring v2: before
docker_pull_seconds has passed new machines still start from v1; after it the tracker's
thread has re-resolved the tag and new machines start from v2's digest while the v1 machines
run on untouched. Then the registry is stopped: creation goes on from v2 (the last good
image), the failure is logged once (machinetype, image, error) and `vac slots` shows it.

The two payload images are built from the local busybox test image (no network); every image
and container the test makes is named vac-test-reg-* (or is the registry's
127.0.0.1:18650/vac-test/payload) and removed in its teardown.
"""
from __future__ import annotations

import io
import json
import logging
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from typing import Dict, List

import pytest
from docker_engine import ENGINE, IMAGE, engine_ready, sdk
from testbed import require_engine
from waiting import ENGINE_CALL, wait_until

from vac import cli
from vac.machine.directory import MachineDir
from vac.slotview import image_notes, slot_rows

pytestmark = [pytest.mark.docker]

PORT = 18650
REPOSITORY = f"127.0.0.1:{PORT}/vac-test/payload"
TAG = f"{REPOSITORY}:latest"
LOCAL = "vac-test-reg-payload"
PULL_SECONDS = 6
MT = "reg"

REGISTRY_CONF = """version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {storage}
http:
  addr: 127.0.0.1:{port}
"""

CONF = """
[settings]
backend_timeout_seconds = {engine_call:g}
vac_space = registry.example.com
factory_name = {factory}
state_dir = {state}
host_processors = 8
overload_per_processor = 1000
mb_per_processor = 64
max_creations_per_cycle = 2
docker_url = {url}

[machinetype {mt}]
machine_model = docker
root_image = docker://{image}
user_data = {user_data}
target_share = 1
docker_pids_limit = 200
docker_pull_seconds = {pull}
docker_pull_timeout_seconds = 30
backoff_seconds = 600
"""

PAYLOAD = """#!/bin/sh
echo "$VAC_TEST_REG_VERSION" > "$JOBOUTPUTS/version"
exec sleep 300
"""


class Registry:
    """docker-registry serve on 127.0.0.1:PORT with its storage under `top`."""

    def __init__(self, binary: str, top):
        self.binary = binary
        self.top = top
        self.proc = None

    def start(self) -> None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", PORT)) == 0:
                pytest.fail(f"127.0.0.1:{PORT} is taken: a registry left running?")
        self.top.mkdir(exist_ok=True)
        conf = self.top / "config.yml"
        conf.write_text(REGISTRY_CONF.format(storage=self.top / "storage", port=PORT))
        log = open(self.top / "registry.log", "w")
        self.proc = subprocess.Popen([self.binary, "serve", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log)
        log.close()
        if not wait_until(self.answers, 20):
            self.stop()
            pytest.fail(f"docker-registry did not answer on {PORT}: "
                        f"{(self.top / 'registry.log').read_text()[-2000:]}")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v2/", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def registry(tmp_path):
    engine_ready()
    binary = shutil.which("docker-registry")
    require_engine("docker-registry", binary is not None,
                   "no docker-registry on PATH: run scripts/ci/setup-registry.sh")
    reg = Registry(binary, tmp_path / "registry")
    reg.start()
    yield reg
    reg.stop()


def build(version: str) -> str:
    """A tiny image FROM the busybox test image that says its version; returns its id."""
    dockerfile = f"FROM {IMAGE}\nENV VAC_TEST_REG_VERSION={version}\n" \
                 f"LABEL vac-test-reg={version}\n"
    list(sdk().build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{LOCAL}:{version}",
                     rm=True, decode=True))
    return str(sdk().inspect_image(f"{LOCAL}:{version}")["Id"])


def push(image_id: str) -> str:
    """Tag image_id as TAG, push it; return the repo digest the registry gave it."""
    api = sdk()
    api.tag(image_id, REPOSITORY, "latest")
    digest = ""
    for event in api.push(REPOSITORY, tag="latest", stream=True, decode=True):
        assert not event.get("error"), event
        digest = (event.get("aux") or {}).get("Digest") or digest
    assert digest.startswith("sha256:")
    return f"{REPOSITORY}@{digest}"


def remove_image(ref: str) -> None:
    import docker
    try:
        sdk().remove_image(ref, force=True)
    except docker.errors.NotFound:
        pass


@pytest.fixture
def images():
    engine_ready()
    made = {"v1": build("v1"), "v2": build("v2")}
    yield made
    remove_image(TAG)
    for version, image_id in made.items():
        remove_image(f"{LOCAL}:{version}")
        remove_image(image_id)


class World:
    """A factory of its own with PULL_SECONDS on the registry's tag."""

    def __init__(self, tmp_path, make_config):
        from vac.cycle.factory import Factory
        self.name = f"rg{uuid.uuid4().hex[:8]}.example.com"
        user_data = tmp_path / "user_data"
        user_data.write_text(PAYLOAD)
        self.text = CONF.format(engine_call=ENGINE_CALL,
                                factory=self.name, state=tmp_path / "state", url=ENGINE,
                                mt=MT, image=TAG, user_data=user_data, pull=PULL_SECONDS)
        self.make_config = make_config
        self.factory = Factory(self.load)
        self.config_file = str(self.load().files[0])

    def load(self):
        return self.make_config(self.text)

    def backend(self):
        return self.factory.pool.get("docker")

    def cycle(self) -> List[str]:
        report = self.factory.run_cycle()
        assert report.errors == [] and report.machine_errors == {}, report
        assert len(report.created) == 2, report
        return report.created

    def dir(self, name: str) -> MachineDir:
        d = MachineDir.for_slot(self.load().settings.paths, name)
        assert d is not None
        return d

    def record(self, name: str) -> Dict:
        return self.dir(name).read_backend_record()

    def version_seen(self, name: str) -> str:
        assert wait_until(lambda: self.dir(name).read("joboutputs/version")), name
        return (self.dir(name).read("joboutputs/version") or "").strip()

    def status(self) -> Dict:
        text = open(self.load().settings.paths.docker_images).read()
        return json.loads(text)["images"][TAG]

    def remove_all(self) -> None:
        if self.factory.pool is not None:
            backend = self.backend()
            backend.images.stop()
            for machine in backend.list_machines():
                backend.destroy(machine.name, None)
        api = sdk()
        for c in api.containers(all=True, filters={"label": f"vac.factory={self.name}"}):
            api.remove_container(c["Id"], force=True)


@pytest.fixture
def world(tmp_path, make_config, images, registry):
    w = World(tmp_path, make_config)
    yield w
    w.remove_all()


def running_container(container_id: str) -> Dict:
    attrs = sdk().inspect_container(container_id)
    assert attrs["State"]["Running"], attrs["State"]
    return attrs


def test_rolling_update_from_a_real_registry(world, images, registry, caplog, capsys):
    caplog.set_level(logging.INFO)
    v1 = push(images["v1"])
    remove_image(TAG)            # the engine lacks the tag: the first creation pulls it
    before = time.monotonic()    # the creation's pull counts as the tag's last refresh
    first = world.cycle()
    for name in first:
        rec = world.record(name)
        assert rec["image"] == TAG and rec["image_version"] == v1
        assert rec["image_id"] == images["v1"]
        assert running_container(rec["container_id"])["Image"] == images["v1"]

    v2 = push(images["v2"])
    sdk().tag(images["v1"], REPOSITORY, "latest")   # only the registry knows v2 now
    assert v2 != v1
    early = world.cycle()        # within docker_pull_seconds: not re-resolved yet
    assert time.monotonic() - before < PULL_SECONDS, "the host is too slow for this test"
    assert {world.record(n)["image_version"] for n in early} == {v1}
    assert all(world.version_seen(n) == "v1" for n in first + early)

    backend = world.backend()

    def resolved_id() -> str:
        current = backend.images.current(TAG)
        return current.image_id if current is not None else ""

    assert wait_until(lambda: resolved_id() == images["v2"]), \
        backend.images.status()
    assert time.monotonic() - before >= PULL_SECONDS        # at most every PULL_SECONDS
    assert world.status()["image_version"] == v2 and world.status()["error"] == ""
    old = {n: world.record(n)["container_id"] for n in first + early}
    later = world.cycle()
    for name in later:
        rec = world.record(name)
        assert rec["image_version"] == v2 and rec["image_id"] == images["v2"]
        assert running_container(rec["container_id"])["Image"] == images["v2"]
        assert world.version_seen(name) == "v2"
    for name, container_id in old.items():    # the v1 machines run on, untouched
        assert world.record(name)["container_id"] == container_id
        assert running_container(container_id)["Image"] == images["v1"]
        assert world.version_seen(name) == "v1"

    registry.stop()
    assert wait_until(lambda: world.status()["error"] != "")
    status = world.status()
    assert "connection refused" in status["error"] and status["image_version"] == v2
    last = world.cycle()         # creation goes on with the last good image
    assert {world.record(n)["image_version"] for n in last} == {v2}
    assert all(world.version_seen(n) == "v2" for n in last)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and "cannot refresh image" in r.getMessage()]
    assert len(warned) == 1, warned        # rate-limited: once while the failure lasts
    assert f"machinetype {MT}" in warned[0] and TAG in warned[0]
    assert "connection refused" in warned[0] and v2 in warned[0]

    config = world.load()
    notes = image_notes(config)
    assert [n["image"] for n in notes] == [TAG]
    assert "registry failing" in notes[0]["text"] and "connection refused" in notes[0]["text"]
    rows = {r["name"]: r for r in slot_rows(config, time.time())}
    for name in first + early:
        assert rows[name]["image_version"] == v1 and v1[:-52] in rows[name]["detail"]
    for name in later + last:
        assert rows[name]["image_version"] == v2
    assert cli.main(["--config", world.config_file, "slots", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["images"][0]["error"] == status["error"]
    assert {s["image_version"] for s in shown["slots"] if s["name"] in later} == {v2}
    assert cli.main(["--config", world.config_file, "slots"]) == 0
    text = capsys.readouterr().out
    assert f"image {TAG}: registry failing for" in text and v2[:-52] in text
