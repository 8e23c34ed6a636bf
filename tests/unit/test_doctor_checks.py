# SPDX-License-Identifier: BSD-2-Clause
"""vac doctor: warnings are a warning, not "ok config"; the machinetypes' local files
and the configured features' Python modules are checked; a rejected or missing configuration
still gets the host checks; each FAIL line gives the fix of its own cause; while vacd runs, its
listeners must answer (a real silent UDP socket, real HTTP servers)."""
from __future__ import annotations

import dataclasses
import http.server
import json
import socket
import threading

import pytest

from vac import cli, optional
from vac.backends.apptainer import checks as apptainerchecks
from vac.backends.docker import checks as dockerchecks
from vac.ops import backendchecks, checks, doctor, filechecks, servicechecks

SETTINGS = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
vacquery_port = 19263
vacquery_address = 127.0.0.1
"""
FAKE = """
[machinetype alpha]
machine_model = fake
target_share = 1
"""


def by_name(lines):
    return {c.name: c for c in lines}


def test_warnings_make_the_config_line_a_warning_with_each_listed(make_config, tmp_path,
                                                                  capsys):
    config = make_config(SETTINGS + "description = our factory\n" + FAKE)
    lines = doctor.run_checks(config)
    assert lines[0].name == "config" and lines[0].status == checks.WARN
    assert lines[0].detail.endswith("; 1 warnings")
    warning = lines[1]
    assert warning.name == "config-warning" and warning.status == checks.WARN
    assert "description" in warning.detail and warning.fix == doctor.UNSUPPORTED_FIX
    assert cli.main(["--config", str(tmp_path / "vac.conf"), "doctor"]) == 0  # warnings pass
    out = capsys.readouterr().out
    assert "ok   config:" not in out and out.startswith("warn config: 1 machinetypes")


def test_without_warnings_the_config_line_is_ok(make_config):
    lines = doctor.run_checks(make_config(SETTINGS + FAKE))
    assert lines[0].name == "config" and lines[0].status == checks.OK
    assert "config-warning" not in by_name(lines)


def test_the_machinetypes_local_files_are_checked_resolved(make_config, tmp_path):
    config = make_config(SETTINGS + FAKE + f"user_data = {tmp_path}/no-such-template\n"
                         f"user_data_file_dir = {tmp_path}\n"
                         "user_data_file_ok = /etc/hostname\n"
                         "user_data_file_rel = hostcert.pem\n"
                         "[machinetype beta]\nmachine_model = fake\ntarget_share = 1\n"
                         "user_data = https://example.org/user_data\n")
    lines = by_name(doctor.run_checks(config))
    template = lines["user_data alpha"]
    assert template.status == checks.FAIL
    assert f"{tmp_path}/no-such-template does not exist" in template.detail
    assert template.fix.startswith(f"put the file at {tmp_path}/no-such-template")
    assert lines["user_data_file_dir alpha"].status == checks.FAIL
    assert lines["user_data_file_dir alpha"].fix.startswith("name a file, not a directory")
    assert lines["user_data_file_ok alpha"] == checks.Check("user_data_file_ok alpha", checks.OK,
                                                            "/etc/hostname")
    mt = config.machinetypes["alpha"]
    relative = lines["user_data_file_rel alpha"]
    assert relative.status == checks.FAIL
    assert f"{mt.machinetype_path}/files/hostcert.pem does not exist" in relative.detail
    assert "user_data beta" not in lines            # a URL is fetched, not a local file


def test_kernel_and_initrd_are_local_files_too(make_config, tmp_path):
    (tmp_path / "vmlinuz").write_text("kernel")
    config = make_config(SETTINGS + FAKE + f"kernel = {tmp_path}/vmlinuz\n"
                         f"initrd = {tmp_path}/initrd.img\n")
    found = filechecks.machinetype_files(config.machinetypes["alpha"])
    assert [(c.name, c.status) for c in found] == [("kernel alpha", checks.OK),
                                                   ("initrd alpha", checks.FAIL)]


def test_a_missing_library_is_a_failed_line_with_its_package(make_config, monkeypatch):
    config = make_config(SETTINGS + "metrics_port = 19262\nmetrics_address = 127.0.0.1\n" +
                         FAKE)
    real = optional.installed
    monkeypatch.setattr(optional, "installed",
                        lambda module: module != "prometheus_client" and real(module))
    line = by_name(doctor.run_checks(config))["library prometheus_client"]
    assert line.status == checks.FAIL
    assert line.detail.startswith("metrics_port is set but the Python module "
                                  "prometheus_client is not installed")
    assert line.fix == optional.LIBRARIES["prometheus_client"].install()
    monkeypatch.setattr(optional, "installed", real)
    assert by_name(doctor.run_checks(config))["libraries"].status == checks.OK


def test_an_engine_whose_library_is_missing_gets_the_install_not_start_the_engine(
        make_config, monkeypatch):
    config = make_config(SETTINGS)
    real = optional.installed
    monkeypatch.setattr(optional, "installed", lambda module: module != "docker" and real(module))
    line = backendchecks.engine("docker", config.settings)
    assert line.status == checks.FAIL and "python3-docker" in line.fix
    assert line.fix != dockerchecks.ENGINE_FIX


def test_a_docker_root_image_that_is_not_docker_gets_the_root_image_fix(make_config):
    config = make_config(SETTINGS + FAKE)
    mt = dataclasses.replace(config.machinetypes["alpha"], machine_model="docker",
                             root_image="/images/busybox.tar")
    line = dockerchecks.docker_image(mt, config.settings)
    assert line.status == checks.FAIL and "is not docker://<image>" in line.detail
    assert line.fix == "root_image = docker://<image> in [machinetype alpha]"


def test_apptainer_engine_fix_follows_the_cause(make_config):
    s = make_config(SETTINGS).settings
    missing = dataclasses.replace(s, singularity_path="/nonexistent/apptainer")
    assert backendchecks.engine_fix("apptainer", missing, None) == \
        apptainerchecks.APPTAINER_BINARY_FIX
    no_user = dataclasses.replace(s, singularity_path="/bin/true",
                                  singularity_user="vac-no-such-user")
    assert backendchecks.engine_fix("apptainer", no_user, None) == "useradd -r -m vac-no-such-user"
    nobody = dataclasses.replace(s, singularity_path="/bin/true", singularity_user="nobody")
    assert backendchecks.engine_fix("apptainer", nobody, "1.3.4") == apptainerchecks.CGROUP_FIX


def test_a_rejected_configuration_still_gets_host_checks_on_its_settings(tmp_path, capsys):
    state = tmp_path / "state-of-the-file"
    state.mkdir()
    conf = tmp_path / "vac.conf"
    conf.write_text(SETTINGS + f"state_dir = {state}\n" + FAKE + "target_share = lots\n")
    assert cli.main(["--config", str(conf), "doctor", "--json"]) == 1
    lines = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert lines["config"]["status"] == "FAIL" and "target_share" in lines["config"]["detail"]
    assert "[settings] of the configuration alone" in lines["config-fallback"]["detail"]
    assert lines["state-disk"]["detail"].startswith(f"{state}:")
    assert lines["vacquery-port"]["detail"] == "udp 127.0.0.1:19263 free"
    assert {"clock", "vacd", "libraries"} <= set(lines)


def test_a_missing_configuration_gets_the_defaults_and_the_fix_to_write_it(tmp_path, capsys):
    missing = tmp_path / "nowhere.conf"
    assert cli.main(["--config", str(missing), "doctor", "--json"]) == 1
    lines = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert lines["config"]["fix"].startswith(f"write {missing}")
    assert "the default settings" in lines["config-fallback"]["detail"]
    assert {"clock", "vacd", "state-dir", "vacquery-port"} & set(lines)


def test_a_responder_that_does_not_answer_fails(make_config):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        s = dataclasses.replace(make_config(SETTINGS).settings,
                                vacquery_port=silent.getsockname()[1])
        line = servicechecks.responder(s, timeout=0.5)
    finally:
        silent.close()
    assert line.status == checks.FAIL
    assert line.detail.startswith("vacd runs but udp 127.0.0.1:") and "0.5 s" in line.detail
    assert line.fix == servicechecks.LOG_FIX


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200 if self.path in ("/api", "/metrics") else 500)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_port():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_listeners_answering_or_not(http_port, monkeypatch):
    assert servicechecks.http("status-port", "", http_port, "/api", "status_port",
                              "jinja2").status == checks.OK
    wrong = servicechecks.http("status-port", "127.0.0.1", http_port, "/nope", "status_port",
                               "jinja2")
    assert wrong.status == checks.FAIL and wrong.detail.endswith("answers HTTP 500")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    refused = servicechecks.http("metrics-port", "127.0.0.1", closed, "/metrics",
                                 "metrics_port", "prometheus_client", timeout=1)
    assert refused.status == checks.FAIL and refused.fix == servicechecks.LOG_FIX
    monkeypatch.setattr(optional, "installed", lambda module: False)
    refused = servicechecks.http("metrics-port", "127.0.0.1", closed, "/metrics",
                                 "metrics_port", "prometheus_client", timeout=1)
    assert refused.fix == optional.LIBRARIES["prometheus_client"].install()


def test_while_vacd_runs_the_ports_must_answer_not_just_be_held(make_config, monkeypatch):
    config = make_config(SETTINGS + FAKE)
    monkeypatch.setattr(checks, "vacd_running",
                        lambda s: ([checks.Check("vacd", checks.OK, "running")], 4242))
    monkeypatch.setattr(servicechecks, "ANSWER_TIMEOUT", 0.3)
    monkeypatch.setattr(servicechecks, "served",
                        lambda s: [servicechecks.responder(s, timeout=0.3)])
    line = by_name(doctor.run_checks(config))["vacquery-port"]
    assert line.status == checks.FAIL and line.detail.startswith("vacd runs but")


VM = """
[machinetype vm]
machine_model = vm-raw
root_image = /nonexistent/vac-doctor/vm.img
target_share = 1
"""
DOCKER = """docker_url = unix:///nonexistent/vac-doctor/docker.sock
[machinetype box]
machine_model = docker
root_image = docker://registry.example.com/payload:1
target_share = 1
"""


def test_each_backend_says_its_own_lines_and_ports(make_config, monkeypatch):
    """The doctor names no backend: the libvirt wing adds /dev/kvm, the QEMU user and the
    metadata service's ports; container wings add the host's cgroup lines; VMs do not."""
    config = make_config(SETTINGS + VM)
    real = optional.installed
    monkeypatch.setattr(optional, "installed", lambda module: module != "libvirt" and real(module))
    names = [c.name for c in doctor.run_checks(config)]
    start = names.index("libvirt-engine")
    assert names[start:start + 3] == ["libvirt-engine", "image vm", "kvm"]
    assert names[start + 3] in ("qemu-user", "qemu-traversal")
    assert names.count("metadata-port") == 2 and "cgroups" not in names
    docker = make_config(SETTINGS + DOCKER)
    lines = doctor.run_checks(docker)
    assert "cgroups" in by_name(lines) and "metadata-port" not in by_name(lines)
    engine = by_name(lines)["docker-engine"]
    if engine.status == checks.FAIL and "python3-docker" not in engine.fix:
        assert engine.fix == dockerchecks.ENGINE_FIX
        assert by_name(lines)["image box"].detail == "not checked: the engine is not usable"
