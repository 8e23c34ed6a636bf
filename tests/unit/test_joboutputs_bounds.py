# SPDX-License-Identifier: BSD-2-Clause
"""A VM's joboutputs bounds are vac.conf [settings] (joboutputs_file_mb, joboutputs_machine_mb,
joboutputs_machine_files; defaults 1 MiB, 16 MiB, 64): checked when the configuration is read,
applied by the metadata service (PUT: 413 over the file bound, 403 past the machine's) and to
the joboutputs framed on a VM's serial console."""
from __future__ import annotations

import base64
import http.client
import os

import pytest

from vac.backends.libvirt import console, metadata, services
from vac.errors import ConfigError
from vac.machine import joboutputs
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
from vac.machine.slots import machine_name

FACTORY = "f1.example.com"
MIB = 1024 * 1024
CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 2
"""


def _conf(make_config, extra: str):
    return make_config(CONF + extra)


def test_the_defaults_are_the_documented_bounds(make_config):
    s = _conf(make_config, "").settings
    assert (s.joboutputs_file_mb, s.joboutputs_machine_mb, s.joboutputs_machine_files) == \
        (1, 16, 64)
    assert joboutputs.Bounds.of(s) == joboutputs.Bounds(MIB, 16 * MIB, 64) == \
        joboutputs.Bounds()


def test_the_bounds_are_settings(make_config):
    s = _conf(make_config, "joboutputs_file_mb = 50\njoboutputs_machine_mb = 200\n"
                           "joboutputs_machine_files = 10\n").settings
    assert joboutputs.Bounds.of(s) == joboutputs.Bounds(50 * MIB, 200 * MIB, 10)


@pytest.mark.parametrize("lines, option, words", [
    ("joboutputs_file_mb = 0\n", "joboutputs_file_mb", "must be 1 to 256"),
    ("joboutputs_file_mb = 257\n", "joboutputs_file_mb", "must be 1 to 256"),
    ("joboutputs_machine_mb = 5000\n", "joboutputs_machine_mb", "must be 1 to 4096"),
    ("joboutputs_machine_files = -1\n", "joboutputs_machine_files", "must be 1 to 4096"),
    ("joboutputs_file_mb = 20\njoboutputs_machine_mb = 18\n", "joboutputs_machine_mb",
     "must not be less than joboutputs_file_mb (20)"),
    # the machine's bound left at its default: the problem is where the file's was set
    ("joboutputs_file_mb = 20\n", "vac.conf:[settings]:joboutputs_file_mb",
     "must not be more than joboutputs_machine_mb (16, its default)"),
    ("joboutputs_file_mb = 1.5\n", "joboutputs_file_mb", ""),
])
def test_a_wrong_bound_is_an_error_naming_the_option(make_config, lines, option, words):
    with pytest.raises(ConfigError) as e:
        _conf(make_config, lines)
    text = "\n".join(str(p) for p in e.value.problems)
    assert option in text and words in text, text


def _vm(paths, ordinal=3) -> MachineDir:
    name = machine_name(FACTORY, ordinal)
    write_slot_record(paths, name, SlotRecord(1700000000, "vmtype", "vm-raw"))
    return MachineDir.create(paths, 1700000000, "vmtype", name)


def _put(port: int, name: str, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("PUT", f"/joboutputs/{name}", body=body)
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_metadata_service_applies_the_configured_bounds(paths, make_config):
    directory = _vm(paths)
    service = metadata.MetadataService(paths, FACTORY,
                                       client_address=lambda _: "169.254.169.3")
    server = metadata.serve(service, "127.0.0.1", 0)
    port = server.server_address[1]
    try:
        big = b"x" * (MIB + MIB // 2)
        assert _put(port, "logs.tgz", big) == 413            # the default: 1 MiB a file
        services.set_joboutputs_bounds(service, _conf(
            make_config, "joboutputs_file_mb = 2\njoboutputs_machine_mb = 2\n"
                         "joboutputs_machine_files = 2\n").settings)
        assert _put(port, "logs.tgz", big) == 201
        assert _put(port, "more.tgz", big) == 403           # 2 MiB a machine in all
        assert _put(port, "small", b"1") == 201
        assert _put(port, "third", b"1") == 403              # 2 files a machine
        assert _put(port, "shutdown_message", b"200 Success") == 201   # always kept
        assert _put(port, "big", b"x" * (2 * MIB + 1)) == 413
        assert sorted(os.listdir(directory.file("joboutputs"))) == \
            ["logs.tgz", "shutdown_message", "small"]
    finally:
        server.shutdown()
        server.server_close()


def _console_line(name: str, body: bytes) -> str:
    return f"VAC-JOBOUTPUT {name} {base64.b64encode(body).decode()}\n"


def test_console_joboutputs_are_stored_within_the_bounds(paths):
    directory = _vm(paths)
    with open(directory.file(console.CONSOLE_LOG), "w") as f:
        f.write("boot\n" + _console_line("a", b"x" * 3000) + _console_line("b", b"y" * 100)
                + _console_line("c", b"z" * 100) + _console_line("d", b"w" * 100)
                + _console_line("shutdown_message", b"300 Nothing to do"))
    bounds = joboutputs.Bounds(file_bytes=2048, total_bytes=4096, files=2)
    assert sorted(console.store_joboutputs(directory, bounds)) == ["b", "c", "shutdown_message"]
    assert directory.read("joboutputs/shutdown_message") == "300 Nothing to do"
