# SPDX-License-Identifier: BSD-2-Clause
"""The CernVM-FS keep-alive: each cycle the repositories of running containers
(Plan.cvmfs_repositories, kept by the factory's recorder) are listed in the background so that
autofs keeps them mounted; a hung listing never blocks the caller, is not piled up, and is
logged once, as is a repository that cannot be listed."""
from __future__ import annotations

import logging
import os
import threading
import time

from fakefactory import factory_over

from vac.config import load
from vac.backends.fake import FakeBackend
from vac.host import cvmfskeepalive
from vac.host.cvmfskeepalive import CvmfsKeepAlive

LOGGER = "vac.host.cvmfskeepalive"


def _wait(condition, what: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"not within {deadline:g} s: {what}"
        time.sleep(0.02)


def _in_thread(call, deadline: float = 60.0) -> None:
    """Run call in a thread; fail if it has not returned within the (generous) deadline."""
    done = threading.Thread(target=call, daemon=True)
    done.start()
    done.join(deadline)
    assert not done.is_alive(), "keep_alive() blocked"


class Lister:
    """os.listdir, except that the repositories in `hang` block until released."""

    def __init__(self, hang=()):
        self.hang = set(hang)
        self.release = threading.Event()
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, path):
        with self.lock:
            self.calls.append(os.path.basename(path))
        if os.path.basename(path) in self.hang:
            self.release.wait()
        return os.listdir(path)

    def count(self, repo):
        with self.lock:
            return self.calls.count(repo)


def test_each_repository_is_listed_for_real(tmp_path):
    root = tmp_path / "cvmfs"
    for repo in ("atlas.cern.ch", "lhcb.cern.ch"):
        (root / repo).mkdir(parents=True)
        (root / repo / "README").write_text("x")
    lister = Lister()
    keeper = CvmfsKeepAlive(root=str(root), lister=lister)
    keeper.keep_alive(["lhcb.cern.ch", "atlas.cern.ch", "atlas.cern.ch"])
    _wait(lambda: not keeper.running(), "the listings")
    assert sorted(lister.calls) == ["atlas.cern.ch", "lhcb.cern.ch"]
    assert keeper.failing() == {}


def test_a_hung_listing_never_blocks_is_not_repeated_and_is_logged_once(tmp_path, caplog):
    root = tmp_path / "cvmfs"
    for repo in ("hung.example.org", "fine.example.org"):
        (root / repo).mkdir(parents=True)
    clock = [1000.0]
    lister = Lister(hang=["hung.example.org"])
    keeper = CvmfsKeepAlive(root=str(root), timeout=30, lister=lister, clock=lambda: clock[0])
    repos = ["hung.example.org", "fine.example.org"]
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            for cycle in range(6):             # six cycles, 20 s apart
                _in_thread(lambda: keeper.keep_alive(repos))
                _wait(lambda: "fine.example.org" not in keeper.running(), "the good listing")
                clock[0] += 20
            assert lister.count("hung.example.org") == 1     # one stuck thread, not six
            assert lister.count("fine.example.org") == 6     # the others go on every cycle
            assert keeper.running() == ["hung.example.org"]
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and "hung.example.org" in warnings[0] and \
                "has not returned" in warnings[0], warnings
            assert "hung.example.org" in keeper.failing()
            lister.release.set()               # the mount answers again
            _wait(lambda: not keeper.running(), "the hung listing to return")
            _wait(lambda: keeper.failing() == {}, "the repository to recover")
            keeper.keep_alive(repos)
            _wait(lambda: lister.count("hung.example.org") == 2, "a new listing")
        assert any("listed again" in r.getMessage() for r in caplog.records)
    finally:
        lister.release.set()


def test_a_repository_that_cannot_be_listed_is_logged_once(tmp_path, caplog):
    keeper = CvmfsKeepAlive(root=str(tmp_path / "cvmfs"))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for _ in range(4):
            keeper.keep_alive(["missing.example.org", "../etc"])
            _wait(lambda: not keeper.running(), "the listings")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert any("missing.example.org" in w and "cannot list" in w for w in warnings)
    assert any("../etc" in w and "refused" in w for w in warnings)


def test_listings_in_flight_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(cvmfskeepalive, "MAX_LISTINGS", 3)
    lister = Lister(hang=[f"r{n}" for n in range(10)])
    keeper = CvmfsKeepAlive(root=str(tmp_path), lister=lister)
    try:
        _in_thread(lambda: keeper.keep_alive([f"r{n}" for n in range(10)]))
        assert len(keeper.running()) == 3
    finally:
        lister.release.set()


CONF = """
[settings]
state_dir = {state}
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 2
overload_per_processor = 100

[machinetype alpha]
machine_model = fake
target_share = 1
user_data = {user_data}
fake_run_seconds = 5000
cvmfs_repositories = atlas.cern.ch  grid.cern.ch
"""


def test_the_factory_keeps_the_running_machines_repositories(tmp_path, paths, host):
    template = tmp_path / "user_data"
    template.write_text("#!/bin/sh\n")
    conf = tmp_path / "vac.conf"
    conf.write_text(CONF.format(state=paths.state_dir, user_data=template))

    def read_config():
        return load.build(load.read_raw([str(conf)]), host)

    clock = [1_700_000_000.0]
    backend = FakeBackend(read_config().settings, clock=lambda: clock[0])
    factory = factory_over(read_config, backend, lambda: clock[0])
    assert factory.recorder.cvmfs_repositories == ()
    assert factory.run_cycle().created
    clock[0] += 120
    factory.run_cycle()                          # the machines now run
    assert factory.recorder.cvmfs_repositories == ("atlas.cern.ch", "grid.cern.ch")
