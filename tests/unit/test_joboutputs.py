# SPDX-License-Identifier: BSD-2-Clause
"""Guest-written joboutputs: names, bounds, symlink safety and the console framing."""
from __future__ import annotations

import base64
import os

import pytest

from vac.machine import joboutputs as jo


@pytest.mark.parametrize("name", ["shutdown_message", "heartbeat", "log.tar.gz", "A-1_b.c"])
def test_valid_names(name):
    assert jo.valid_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "a..b", "a b", "x\n",
                                  "é", "a" * 129, "%2e%2e"])
def test_invalid_names(name):
    assert not jo.valid_name(name)


def test_write_is_bounded_per_file_total_and_count(tmp_path):
    d = str(tmp_path)
    assert jo.write_joboutput(d, "a", b"x" * 10, max_bytes=10)
    with pytest.raises(jo.JoboutputRefused):
        jo.write_joboutput(d, "b", b"x" * 11, max_bytes=10)
    with pytest.raises(jo.JoboutputRefused):
        jo.write_joboutput(d, "c", b"x" * 10, max_total=15)
    assert jo.write_joboutput(d, "a", b"y" * 10, max_total=15)      # replacing does not add
    with pytest.raises(jo.JoboutputRefused):
        jo.write_joboutput(d, "d", b"", max_files=1)
    assert sorted(os.listdir(d)) == ["a"]


def test_write_without_replace_keeps_existing(tmp_path):
    d = str(tmp_path)
    jo.write_joboutput(d, "shutdown_message", b"100 first")
    assert not jo.write_joboutput(d, "shutdown_message", b"300 second", replace=False)
    assert (tmp_path / "shutdown_message").read_bytes() == b"100 first"


def test_write_refuses_a_directory_name(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(jo.JoboutputRefused):
        jo.write_joboutput(str(tmp_path), "sub", b"x")
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith(".tmp-")] == []


def test_parse_console_framing():
    body = base64.b64encode(b"300 Nothing to do\n").decode()
    lines = ["noise VAC-JOBOUTPUT x aGk=", f"VAC-JOBOUTPUT shutdown_message {body}\r",
             "VAC-JOBOUTPUT heartbeat", "VAC-JOBOUTPUT two fields too many",
             "VAC-JOBOUTPUT big " + "A" * 200, "VAC-JOBOUTPUT pad aGk"]
    found, rejected = jo.parse_console(lines, max_bytes=100)
    assert found == {"shutdown_message": b"300 Nothing to do\n", "heartbeat": b""}
    assert len(rejected) == 3


def test_parse_console_limits_file_count():
    lines = [f"VAC-JOBOUTPUT f{i} aGk=" for i in range(5)]
    found, rejected = jo.parse_console(lines, max_files=3)
    assert sorted(found) == ["f0", "f1", "f2"] and len(rejected) == 2
