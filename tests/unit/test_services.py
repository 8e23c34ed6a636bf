# SPDX-License-Identifier: BSD-2-Clause
"""The cycle's host preparation and vacd's metadata service lifecycle
(vac.backends.libvirt.services), on the fake backend and on 127.0.0.1 with port 0: no engines,
no privileged ports."""
from __future__ import annotations

import json
import logging
import signal
import urllib.error
import urllib.request

import pytest
from fakeclock import Clock
from fakefactory import factory_over

from vac import daemon, planfile
from vac.backends.fake import FakeBackend
from vac.backends.libvirt.services import MetadataSupervisor, needs_metadata
from vac.errors import BackendError

FAKE = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
overload_per_processor = 100
host_processors = 2

[machinetype alpha]
machine_model = fake
target_share = 1
fake_run_seconds = 1000
"""

VM = """
[settings]
vac_space = vac01.example.com
factory_name = {factory}
host_processors = 2
libvirt_uri = qemu+unix:///system?socket=/nonexistent/vac-test/libvirt-sock
libvirt_shutdown_wait_seconds = 2.5

[machinetype vm]
machine_model = vm-raw
target_share = 1
kernel = /nonexistent/vmlinuz
"""


class PreparingFake(FakeBackend):
    """A fake whose host preparation a test can make fail."""

    def __init__(self, settings, clock):
        super().__init__(settings, clock=clock)
        self.prepared = 0
        self.failure = ""

    def prepare_host(self) -> None:
        self.prepared += 1
        if self.failure:
            raise BackendError("fake", self.failure)


@pytest.fixture
def fake_factory(make_config):
    clock = Clock()
    cfg = make_config(FAKE)
    fake = PreparingFake(cfg.settings, clock)
    hook_calls = []

    def hook(config):
        hook_calls.append(fake.prepared)
        return []

    factory = factory_over(lambda: make_config(FAKE), fake, clock, cfg.settings,
                           after_prepare=hook)
    return factory, fake, hook_calls, clock


def test_prepare_host_runs_once_per_cycle_before_the_hook(fake_factory):
    factory, fake, hook_calls, clock = fake_factory
    report = factory.run_cycle()
    assert len(report.created) == 2 and report.errors == []
    assert fake.prepared == 1 and hook_calls == [1]
    clock.now += 60
    factory.run_cycle()
    assert fake.prepared == 2 and hook_calls == [1, 2]


def test_failed_host_preparation_makes_machinetypes_wait_without_a_crash(fake_factory, caplog):
    factory, fake, hook_calls, clock = fake_factory
    fake.failure = "network vac_169.254.0.0: cannot start"
    with caplog.at_level(logging.WARNING):
        report = factory.run_cycle()
    assert report.created == [] and report.errors == [] and report.finished == []
    assert len(report.idle) == 2
    for reason in report.idle.values():
        assert reason.startswith("backend fake unavailable: host preparation failed: ")
        assert "network vac_169.254.0.0: cannot start" in reason and "alpha waiting" in reason
    assert "host preparation failed" in caplog.text
    assert hook_calls == [1]                      # the hook still runs
    fake.failure = ""
    clock.now += 60
    assert len(factory.run_cycle().created) == 2


def test_failed_preparation_leaves_running_machines_managed(fake_factory):
    factory, fake, _, clock = fake_factory
    names = factory.run_cycle().created
    fake.failure = "broken"
    clock.now += 60
    report = factory.run_cycle()
    assert report.finished == report.destroyed == report.created == []
    summary = json.load(open(factory.config.settings.paths.plan))
    assert summary["unmanaged"] == {}
    assert sorted(fake.created) == sorted(names)


def test_hook_problems_are_cycle_errors(fake_factory):
    factory, _, _, _ = fake_factory
    factory.after_prepare = lambda config: ["cannot serve metadata on 169.254.169.253:80: x"]
    assert factory.run_cycle().errors == ["cannot serve metadata on 169.254.169.253:80: x"]


def _get(address, port, path):
    try:
        with urllib.request.urlopen(f"http://{address}:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_supervisor_serves_only_when_a_vm_machinetype_is_configured(make_config):
    assert not needs_metadata(make_config(FAKE))
    vm = make_config(VM.format(factory="v1.example.com"))
    assert needs_metadata(vm)
    assert vm.settings.libvirt_shutdown_wait_seconds == 2.5
    supervisor = MetadataSupervisor(addresses=("127.0.0.1",), port=0)
    try:
        assert supervisor.ensure(make_config(FAKE)) == []
        assert supervisor.bound() == []
        assert supervisor.ensure(vm) == []
        (address, port), = supervisor.bound()
        assert address == "127.0.0.1" and port > 0
        assert _get(address, port, "/latest/user-data") == 404   # not a slot's address
        assert supervisor.ensure(vm) == [] and supervisor.bound() == [(address, port)]
        assert supervisor.ensure(make_config(VM.format(factory="v2.example.com"))) == []
        assert supervisor.servers.service.factory_name == "v2.example.com"
        assert len(supervisor.bound()) == 1
    finally:
        supervisor.close()
    assert supervisor.bound() == []


def test_supervisor_reports_addresses_it_cannot_bind(make_config):
    supervisor = MetadataSupervisor(addresses=("192.0.2.77",), port=0)
    try:
        problems = supervisor.ensure(make_config(VM.format(factory="v1.example.com")))
    finally:
        supervisor.close()
    assert len(problems) == 1 and "cannot serve metadata on 192.0.2.77:0" in problems[0]


def test_vacd_gets_the_host_services_from_the_backend_registry(make_config):
    """vacd names no backend: the registry gives it the supervisor, with the defaults unless
    tests give an address and a port."""
    from vac.backends import host_services

    default = host_services()
    assert isinstance(default, MetadataSupervisor) and default.port == 80
    assert default.addresses == ("169.254.169.253", "169.254.169.254")
    supervisor = host_services(["127.0.0.1"], 0)
    try:
        assert supervisor.ensure(make_config(VM.format(factory="v1.example.com"))) == []
        assert supervisor.bound()[0][0] == "127.0.0.1"
    finally:
        supervisor.close()


def test_vacd_lives_while_libvirtd_is_unreachable_and_closes_the_service(tmp_path, caplog):
    conf = tmp_path / "vac.conf"
    conf.write_text(VM.format(factory="v1.example.com").replace(
        "[settings]", f"[settings]\nstate_dir = {tmp_path / 'state'}", 1))
    args = daemon.parse_args(["--config", str(conf), "--foreground", "--cycles", "2",
                              "--cycle-seconds", "0", "--metadata-address", "127.0.0.1",
                              "--metadata-port", "0"])
    vacd = daemon.Daemon(args, str(tmp_path / "state"))
    seen = []
    ensure = vacd.services.ensure

    def spy(config):
        problems = ensure(config)
        seen.append(vacd.services.bound())
        return problems

    vacd.factory.after_prepare = spy
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        with caplog.at_level(logging.INFO):
            assert vacd.run() == 0
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    assert len(seen) == 2 and seen[0] == seen[1] and seen[0][0][0] == "127.0.0.1"
    assert vacd.services.bound() == []                   # closed on exit
    assert "cycle failed" not in caplog.text
    summary = planfile.read(str(tmp_path / "state" / "plan.json"))
    assert set(summary.idle) == {"v1-00.example.com", "v1-01.example.com"}
    for reason in summary.idle_texts().values():
        assert "backend libvirt unavailable" in reason and "vm waiting" in reason
