# SPDX-License-Identifier: BSD-2-Clause
"""mjf-heartbeat and metadata-heartbeat: fresh while the metadata servers serve (the first
address's server writes the MJF one, the second's the metadata one), so factory_status (VacMon,
`vac factories --json`) shows both services alive; left to age once they are closed."""
from __future__ import annotations

import logging
import os
import time

from vac.backends.libvirt import heartbeat, metadata
from vac.space import replies

FACTORY = "f1.example.com"
CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 2
"""


def _wait(condition, what: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"not within {deadline:g} s: {what}"
        time.sleep(0.05)


def test_both_heartbeats_are_fresh_while_serving_and_age_after_close(paths, make_config):
    config = make_config(CONF)
    before = replies.factory_status(config, time.time())
    assert before["mjf_heartbeat_time"] == 0 and before["metadata_heartbeat_time"] == 0
    service = metadata.MetadataService(paths, FACTORY)
    servers = metadata.MetadataServers(service, addresses=("127.0.0.1", "127.0.0.2"), port=0)
    mjf = os.path.join(paths.state_dir, "mjf-heartbeat")
    meta = os.path.join(paths.state_dir, "metadata-heartbeat")
    try:
        assert servers.ensure() == []
        _wait(lambda: os.path.exists(mjf) and os.path.exists(meta), "both heartbeat files")
        started = time.time()
        body = replies.factory_status(config, started)
        for key in ("mjf_heartbeat_time", "metadata_heartbeat_time"):
            assert started - 120 <= body[key] <= started + 1, (key, body[key])
        with open(mjf) as f:
            assert int(f.read()) == body["mjf_heartbeat_time"]
        for path in (mjf, meta):            # made old: the serving loop writes them again
            os.utime(path, (1000, 1000))
        _wait(lambda: os.stat(mjf).st_mtime > 1000 and os.stat(meta).st_mtime > 1000,
              "the heartbeats rewritten while serving")
    finally:
        servers.close()
    for path in (mjf, meta):
        os.utime(path, (1000, 1000))
    time.sleep(3 * heartbeat.INTERVAL)
    body = replies.factory_status(config, time.time())
    assert body["mjf_heartbeat_time"] == 1000 and body["metadata_heartbeat_time"] == 1000


def test_one_address_keeps_only_the_mjf_heartbeat(paths):
    service = metadata.MetadataService(paths, FACTORY)
    servers = metadata.MetadataServers(service, addresses=("127.0.0.1",), port=0)
    try:
        assert servers.ensure() == []
        _wait(lambda: os.path.exists(os.path.join(paths.state_dir, "mjf-heartbeat")),
              "mjf-heartbeat")
        assert not os.path.exists(os.path.join(paths.state_dir, "metadata-heartbeat"))
    finally:
        servers.close()


def test_a_heartbeat_is_written_at_most_once_an_interval(tmp_path):
    clock = [5000.0]
    beat = heartbeat.ServiceHeartbeat(str(tmp_path), "mjf-heartbeat", clock=lambda: clock[0],
                                      interval=3600)
    beat.beat()
    assert (tmp_path / "mjf-heartbeat").read_text() == "5000\n"
    assert os.stat(tmp_path / "mjf-heartbeat").st_mtime == 5000
    clock[0] = 6000.0
    beat.beat()                                 # within the interval: not rewritten
    assert (tmp_path / "mjf-heartbeat").read_text() == "5000\n"


def test_a_heartbeat_that_cannot_be_written_is_logged_once(tmp_path, caplog):
    missing = tmp_path / "not-yet"
    beat = heartbeat.ServiceHeartbeat(str(missing), "metadata-heartbeat", interval=0)
    with caplog.at_level(logging.INFO, logger="vac.backends.libvirt.heartbeat"):
        for _ in range(5):
            beat.beat()
        missing.mkdir()
        beat.beat()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "metadata-heartbeat not written" in warnings[0].getMessage()
    assert (missing / "metadata-heartbeat").exists()
    assert any("written again" in r.getMessage() for r in caplog.records)
