# SPDX-License-Identifier: BSD-2-Clause
"""Docker rolling updates without an engine: the pure refresh timing, the image
tracker over a scripted engine and clock (re-resolved at most every docker_pull_seconds, the
last good image kept through a failing registry, logged at most every 10 minutes, the status
file), its thread, and what the backend creates from and records in backend.json."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from typing import Dict, List, Optional, Tuple

import docker
import pytest
from dockerspecs import CONF, make_spec
from fakeclock import Clock

from vac.backends.docker import backend as dk
from vac.backends.docker import images as di
from vac.errors import BackendError

TAG = "127.0.0.1:18650/vac-test/payload:latest"
REPO = "127.0.0.1:18650/vac-test/payload"
ID1, ID2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
DIGEST1, DIGEST2 = f"{REPO}@sha256:" + "a" * 64, f"{REPO}@sha256:" + "b" * 64


# The pure rules ------------------------------------------------------------------------------

def test_due_never_without_interval_at_once_if_never_tried_then_after_the_interval():
    assert di.due(None, None, 0.0) is False
    assert di.due(100.0, None, 10_000.0) is False
    assert di.due(None, 60, 0.0) is True
    assert di.due(100.0, 60, 159.9) is False
    assert di.due(100.0, 60, 160.0) is True
    assert di.due(100.0, 60, 1000.0) is True


def test_seconds_until_due():
    assert di.seconds_until_due(None, 60, 5.0) == 0.0
    assert di.seconds_until_due(100.0, 60, 130.0) == 30.0
    assert di.seconds_until_due(100.0, 60, 500.0) == 0.0


def test_should_log_first_failure_then_at_most_every_ten_minutes():
    assert di.FAILURE_LOG_SECONDS == 600
    assert di.should_log(None, 0.0) is True
    assert di.should_log(0.0, 599.0) is False
    assert di.should_log(0.0, 600.0) is True
    assert di.should_log(0.0, 5.0, every=5.0) is True


@pytest.mark.parametrize("image, repo", [
    (TAG, REPO),
    ("127.0.0.1:18650/vac-test/payload", REPO),      # the port's colon is not a tag
    ("busybox", "busybox"), ("busybox:1.36", "busybox"),
    (f"{REPO}@sha256:" + "c" * 64, REPO),
    ("registry.example.com:5000/a/b:v2@sha256:" + "c" * 64, "registry.example.com:5000/a/b"),
])
def test_repository_of(image, repo):
    assert di.repository_of(image) == repo


def test_repo_digest_of_the_tags_own_repository_only():
    assert di.repo_digest(TAG, ["other/x@sha256:" + "f" * 64, DIGEST1]) == DIGEST1
    assert di.repo_digest(TAG, ["other/x@sha256:" + "f" * 64]) == ""
    assert di.repo_digest(TAG, []) == ""
    hub = "busybox@sha256:" + "d" * 64
    assert di.repo_digest("busybox:latest", [hub]) == hub
    assert di.repo_digest("busybox", ["docker.io/library/busybox@sha256:1"]) == \
        "docker.io/library/busybox@sha256:1"
    assert di.Resolved(TAG, ID1, DIGEST1).version == DIGEST1
    assert di.Resolved("local/only:1", ID1, "").version == ID1


# A scripted engine and registry --------------------------------------------------------------

class Engine:
    """inspect_image/pull as the docker SDK's APIClient does them: the registry maps the tag
    to (id, digest); a pull copies it to the engine; `down` makes pulls fail."""

    def __init__(self):
        self.registry: Dict[str, Tuple[str, str]] = {TAG: (ID1, DIGEST1)}
        self.local: Dict[str, Tuple[str, str]] = {}   # the engine's tags
        self.kept: List[str] = []                     # ids of images it no longer tags
        self.down = ""
        self.pulls: List[str] = []
        self.inspects: List[str] = []
        self.created: List[str] = []
        self.closed = 0

    def pull(self, image, stream=True, decode=True):
        self.pulls.append(image)
        if self.down:
            raise docker.errors.APIError("500 Server Error", explanation=self.down)
        if image not in self.registry:
            return iter([{"error": f"manifest for {image} not found"}])
        self.local[image] = self.registry[image]
        return iter([{"status": "Pulling"}, {"status": "Digest: ..."}])

    def inspect_image(self, image):
        self.inspects.append(image)
        if image not in self.local:
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        image_id, digest = self.local[image]
        return {"Id": image_id, "RepoDigests": [digest] if digest else []}

    def close(self):
        self.closed += 1

    # what create() needs as well
    def info(self):
        return {"CgroupDriver": "systemd"}

    def create_host_config(self, **kw):
        return kw

    def create_container(self, image, host_config=None, **kw):
        if image not in {i for i, _ in self.local.values()} | set(self.kept):
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        self.created.append(image)
        return {"Id": f"container{len(self.created):059d}"}

    def start(self, container_id):
        pass


def tracker(engine: Engine, clock: Clock, status: Optional[str] = None) -> di.ImageTracker:
    return di.ImageTracker(lambda: engine, lambda: status, clock=clock,
                           wall=lambda: 1_700_000_000.0 + clock.now, background=False)


def test_a_tag_is_re_resolved_at_most_every_interval_and_picks_up_the_new_version(caplog):
    caplog.set_level(logging.INFO)
    engine, clock = Engine(), Clock(1000.0)
    t = tracker(engine, clock)
    engine.local[TAG] = engine.registry[TAG]
    t.remember("reg", TAG, 60, 30, di.inspect(engine, TAG), pulled=True)
    assert t.current(TAG) == di.Resolved(TAG, ID1, DIGEST1)
    engine.registry[TAG] = (ID2, DIGEST2)      # v2 pushed
    clock.now += 59.9
    assert t.refresh_due() == [] and engine.pulls == []
    assert t.current(TAG).image_id == ID1
    clock.now += 0.1
    assert t.refresh_due() == [TAG] and engine.pulls == [TAG]
    assert t.current(TAG) == di.Resolved(TAG, ID2, DIGEST2)
    assert engine.closed == 1                  # one client per pass, closed after it
    assert any(f"image {TAG} is now {DIGEST2}" in r.getMessage()
               and "machinetype reg" in r.getMessage() for r in caplog.records)
    clock.now += 30
    assert t.refresh_due() == []               # the next try counts from the last one
    clock.now += 30
    assert t.refresh_due() == [TAG]


def test_an_image_found_locally_is_refreshed_at_once_in_the_background():
    engine, clock = Engine(), Clock(1000.0)
    t = tracker(engine, clock)
    engine.local[TAG] = (ID1, DIGEST1)         # stale local copy; the registry has v2
    engine.registry[TAG] = (ID2, DIGEST2)
    t.remember("reg", TAG, 3600, 30, di.inspect(engine, TAG), pulled=False)
    assert t.current(TAG).image_id == ID1      # the creation used what was there
    assert t.refresh_due() == [TAG]
    assert t.current(TAG).image_id == ID2


def test_a_failing_registry_keeps_the_last_good_image_and_says_so_rate_limited(tmp_path,
                                                                              caplog):
    caplog.set_level(logging.INFO)
    status = str(tmp_path / "docker-images.json")
    engine, clock = Engine(), Clock(1000.0)
    t = tracker(engine, clock, status)
    engine.local[TAG] = engine.registry[TAG]
    t.remember("reg", TAG, 60, 30, di.inspect(engine, TAG), pulled=True)
    engine.down = 'Get "http://127.0.0.1:18650/v2/": connect: connection refused'

    def warnings() -> List[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    for _ in range(10):                        # 10 failed attempts over 9 minutes
        clock.now += 60
        assert t.refresh_due() == [TAG]
        assert t.current(TAG) == di.Resolved(TAG, ID1, DIGEST1)
    assert len(warnings()) == 1
    assert warnings()[0] == (
        f"machinetype reg: cannot refresh image {TAG} from its registry: {engine.down}; "
        f"new machines keep starting from the last good image ({DIGEST1})")
    written = json.load(open(status))["images"][TAG]
    assert written["error"] == engine.down and written["image_version"] == DIGEST1
    assert written["failing_since"] == 1_700_000_000 + 1060
    assert written["machinetypes"] == ["reg"] and written["pull_seconds"] == 60
    clock.now += 60                            # 10 minutes after the first warning
    t.refresh_due()
    assert len(warnings()) == 2
    engine.down = ""
    engine.registry[TAG] = (ID2, DIGEST2)
    clock.now += 60
    t.refresh_due()
    assert t.current(TAG).image_id == ID2
    written = json.load(open(status))["images"][TAG]
    assert written["error"] == "" and written["failing_since"] is None
    assert written["image_version"] == DIGEST2 and written["checked"] == 1_700_000_000 + 1720
    assert any("refreshed again" in r.getMessage() for r in caplog.records)


def test_an_unreachable_engine_is_a_failure_that_keeps_the_image():
    clock = Clock(1000.0)

    def connect():
        raise ConnectionError("no socket")

    t = di.ImageTracker(connect, lambda: None, clock=clock, background=False)
    t.remember("reg", TAG, 60, 30, di.Resolved(TAG, ID1, DIGEST1), pulled=False)
    assert t.refresh_due() == [TAG]
    assert t.status()[TAG]["error"] == "Docker engine not reachable: no socket"
    assert t.current(TAG).image_id == ID1


def test_a_pull_error_event_is_a_failure():
    engine, clock = Engine(), Clock(1000.0)
    t = tracker(engine, clock)
    t.remember("reg", "gone/image:1", 60, 30, di.Resolved("gone/image:1", ID1), pulled=False)
    t.refresh_due()
    assert "manifest for gone/image:1 not found" in t.status()["gone/image:1"]["error"]


def test_the_thread_refreshes_on_its_own_and_stops():
    engine = Engine()
    engine.local[TAG] = engine.registry[TAG]
    t = di.ImageTracker(lambda: engine, lambda: None)
    try:
        t.remember("reg", TAG, 0.05, 30, di.inspect(engine, TAG), pulled=True)
        deadline = time.monotonic() + 5
        while len(engine.pulls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(engine.pulls) >= 3
        assert [th for th in threading.enumerate() if th.name == "vac-docker-images"]
    finally:
        t.stop()
    assert not [th for th in threading.enumerate() if th.name == "vac-docker-images"]


# What the backend creates from and records ---------------------------------------------------

@pytest.fixture
def backend_and_spec(make_config, paths):
    def make(extra: str = ""):
        config = make_config(CONF.format(extra=f"root_image = docker://{TAG}\n{extra}",
                                         url="unix:///nonexistent.sock"))
        engine = Engine()
        backend = dk.DockerBackend(config.settings)
        backend._api = engine
        backend.images = tracker(engine, Clock(1000.0), config.settings.paths.docker_images)
        return backend, engine, (lambda created=1700000000: make_spec(paths, config,
                                                                      created=created))
    return make


def test_without_docker_pull_seconds_the_tag_is_resolved_locally_and_pulled_only_if_missing(
        backend_and_spec):
    backend, engine, spec = backend_and_spec()
    first = spec()
    backend.create(first)
    assert engine.pulls == [TAG]                           # missing: pulled, as today
    assert engine.created == [ID1]                          # from the id, not the tag
    record = first.directory.read_backend_record()
    assert record["image"] == TAG and record["image_id"] == ID1
    assert record["image_version"] == DIGEST1
    engine.registry[TAG] = (ID2, DIGEST2)
    second = spec(1700000100)
    backend.create(second)
    assert engine.pulls == [TAG] and engine.created == [ID1, ID1]   # never pulled again
    assert backend.images.status() == {}                    # nothing tracked


def test_with_docker_pull_seconds_creation_uses_the_last_resolution_without_engine_calls(
        backend_and_spec):
    backend, engine, spec = backend_and_spec("docker_pull_seconds = 300")
    first = spec()
    backend.create(first)
    inspected = len(engine.inspects)
    assert backend.images.current(TAG).image_id == ID1
    written = os.stat(first.settings.paths.docker_images).st_ino
    engine.local[TAG] = (ID2, DIGEST2)          # the tag moves behind our back
    engine.kept.append(ID1)
    later = spec(1700000100)
    backend.create(later)
    assert len(engine.inspects) == inspected and engine.pulls == [TAG]
    assert os.stat(first.settings.paths.docker_images).st_ino == written   # nothing new
    assert later.directory.read_backend_record()["image_version"] == DIGEST1
    status = json.load(open(later.settings.paths.docker_images))["images"][TAG]
    assert status["image_version"] == DIGEST1 and status["machinetypes"] == ["dock"]
    backend.images.stop()


def test_a_machinetype_that_unsets_docker_pull_seconds_stops_the_refreshing(make_config,
                                                                          backend_and_spec):
    backend, engine, spec = backend_and_spec("docker_pull_seconds = 300")
    first = spec()
    backend.create(first)
    assert list(backend.images.status()) == [TAG]
    mt = dataclasses.replace(first.machinetype, docker_pull_seconds=None)
    later = dataclasses.replace(spec(1700000100), machinetype=mt)
    backend.create(later)
    assert backend.images.status() == {}
    assert json.load(open(later.settings.paths.docker_images))["images"] == {}
    assert backend.images.refresh_due() == []


def test_a_resolution_from_the_thread_is_not_overwritten_by_a_local_one():
    engine, clock = Engine(), Clock(1000.0)
    t = tracker(engine, clock)
    t.remember("a", TAG, 60, 30, di.Resolved(TAG, ID2, DIGEST2), pulled=True)
    t.remember("b", TAG, 60, 30, di.Resolved(TAG, ID1, DIGEST1), pulled=False)
    assert t.current(TAG).image_id == ID2
    assert t.status()[TAG]["machinetypes"] == ["a", "b"]
    t.drop("a", TAG)
    assert t.status()[TAG]["machinetypes"] == ["b"]


def test_an_image_id_the_engine_lost_is_resolved_anew(backend_and_spec):
    backend, engine, spec = backend_and_spec("docker_pull_seconds = 300")
    backend.create(spec())
    engine.local.clear()                        # removed by hand
    engine.registry[TAG] = (ID2, DIGEST2)
    later = spec(1700000100)
    backend.create(later)
    assert engine.created == [ID1, ID2] and engine.pulls == [TAG, TAG]
    assert later.directory.read_backend_record()["image_id"] == ID2
    assert backend.images.current(TAG).image_id == ID2
    backend.images.stop()


def test_an_image_that_cannot_be_pulled_fails_the_creation(backend_and_spec):
    backend, engine, spec = backend_and_spec()
    engine.registry.clear()
    with pytest.raises(BackendError, match="manifest for .* not found"):
        backend.create(spec())
    assert engine.created == []
