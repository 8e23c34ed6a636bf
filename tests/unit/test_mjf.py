# SPDX-License-Identifier: BSD-2-Clause
"""MJF: every key and value, formatting, options and lowering the shutdown time."""
from __future__ import annotations

import os

import pytest

from vac.machine.directory import MachineDir
from vac.machine.mjf import (
    MJF_TABLE,
    MjfContext,
    float_text,
    lower_shutdown_time,
    mjf_values,
    write_mjf,
)

NOW = 1_700_000_000
SHUTDOWN = NOW + 86400

BASE = """
[settings]
vac_space = vac01.example.com
mb_per_processor = 3000
{extra}

[machinetype lhcb]
target_share = 1
"""


@pytest.fixture
def ctx_for(make_config):
    def make(extra="", processors=2, shutdown=SHUTDOWN, now=NOW, job_id="1b4e28ba-2fa1"):
        conf = make_config(BASE.format(extra=extra))
        return MjfContext(settings=conf.settings, machinetype=conf.machinetypes["lhcb"],
                          processors=processors, shutdown_time=shutdown, now=now,
                          job_id=job_id)
    return make


EXPECTED_MF = {
    "total_cpu": "2",
    "phys_cores": "2",
    "log_cores": "2",
    "jobslots": "1",
    "shutdowntime": str(SHUTDOWN),
}

EXPECTED_JF = {
    "shutdowntime_job": str(SHUTDOWN),
    "cpufactor_lrms": "1.0",
    "cpu_limit_secs_lrms": str(86400 * 2),
    "cpu_limit_secs": str(86400 * 2),
    "wall_limit_secs_lrms": "86400",
    "wall_limit_secs": "86400",
    "jobstart_secs": str(NOW),
    "max_rss_bytes": str(3000 * 2 * 1048576),
    "mem_limit_MB": str(3000 * 2 * 1048576 // 1000000),
    "allocated_cpu": "2\n",
    "allocated_CPU": "2\n",
    "job_id": "1b4e28ba-2fa1",
}


def test_every_key_without_hs06(ctx_for):
    values = mjf_values(ctx_for())
    assert values == {"machinefeatures": EXPECTED_MF, "jobfeatures": EXPECTED_JF}
    assert values["jobfeatures"]["mem_limit_MB"] == "6291"


def test_every_key_with_hs06(ctx_for):
    values = mjf_values(ctx_for("hs06_per_processor = 10.5"))
    assert values["machinefeatures"] == {**EXPECTED_MF, "hs06": "21.0"}
    assert values["jobfeatures"] == {**EXPECTED_JF, "hs06_job": "21.0"}


@pytest.mark.parametrize("per, processors, text", [
    (10.0, 2, "20.0"), (10.1, 3, "30.3"), (12, 1, "12.0"), (9.87, 8, "78.96")])
def test_hs06_is_a_float_written_as_python2_did(ctx_for, per, processors, text):
    values = mjf_values(ctx_for(f"hs06_per_processor = {per}", processors=processors))
    assert values["machinefeatures"]["hs06"] == text
    assert values["jobfeatures"]["hs06_job"] == text
    assert float_text(10.1 * 3) == "30.3"


def test_integer_keys_parse_with_int(ctx_for):
    """DIRAC does int(urlopen(...).read()): every count, _secs and _bytes key must allow it."""
    values = mjf_values(ctx_for("hs06_per_processor = 10", now=NOW + 0.75))
    for d, keys in values.items():
        for key, value in keys.items():
            if key.endswith(("_secs", "_bytes", "_lrms", "_cpu", "_CPU", "_MB", "cores",
                             "jobslots", "shutdowntime", "shutdowntime_job")) \
                    and key != "cpufactor_lrms":
                assert str(int(value)) == value.strip(), (d, key, value)
    assert values["jobfeatures"]["jobstart_secs"] == str(NOW)


def test_remaining_time_never_negative(ctx_for):
    values = mjf_values(ctx_for(shutdown=NOW - 100))
    for key in ("wall_limit_secs", "wall_limit_secs_lrms", "cpu_limit_secs",
                "cpu_limit_secs_lrms"):
        assert values["jobfeatures"][key] == "0"


def test_fractional_now_counts_whole_seconds(ctx_for):
    values = mjf_values(ctx_for(now=NOW + 0.9, shutdown=NOW + 3600))
    assert values["jobfeatures"]["wall_limit_secs"] == "3600"
    assert values["jobfeatures"]["cpu_limit_secs"] == "7200"


def test_job_id_absent_until_known(ctx_for):
    assert "job_id" not in mjf_values(ctx_for(job_id=None))["jobfeatures"]


def test_machinefeatures_option(ctx_for):
    values = mjf_values(ctx_for("machinefeatures_option_foo = bar\n"
                                "machinefeatures_option_grace_secs = 3600"))
    assert values["machinefeatures"]["foo"] == "bar"
    assert values["machinefeatures"]["grace_secs"] == "3600"
    assert "foo" not in values["jobfeatures"]


def test_machinefeatures_option_cannot_replace_a_standard_key(ctx_for):
    values = mjf_values(ctx_for("machinefeatures_option_total_cpu = 64"))
    assert values["machinefeatures"]["total_cpu"] == "2"


def test_deprecated_keys_are_flagged(ctx_for):
    deprecated = {row.key for row in MJF_TABLE if row.deprecated}
    assert deprecated == {"phys_cores", "log_cores", "jobslots", "cpufactor_lrms",
                          "cpu_limit_secs_lrms", "wall_limit_secs_lrms", "mem_limit_MB",
                          "allocated_CPU"}
    current = mjf_values(ctx_for(), include_deprecated=False)
    assert not deprecated & (set(current["machinefeatures"]) | set(current["jobfeatures"]))
    assert current["jobfeatures"]["allocated_cpu"] == "2\n"


def test_no_unwritten_keys(ctx_for):
    values = mjf_values(ctx_for("hs06_per_processor = 10"))
    for absent in ("max_swap_bytes", "scratch_limit_bytes", "grace_secs_job"):
        assert absent not in values["jobfeatures"]
    assert "grace_secs" not in values["machinefeatures"]


def _machine_dir(paths):
    return MachineDir.create(paths, NOW, "lhcb", "f1-00.example.com")


def _files(directory):
    found = {}
    for sub in ("machinefeatures", "jobfeatures"):
        for key in sorted(os.listdir(directory.file(sub))):
            with open(directory.file(f"{sub}/{key}"), "rb") as f:
                found[f"{sub}/{key}"] = f.read()
    return found


def test_write_mjf_writes_every_file_byte_exact(paths, ctx_for):
    directory = _machine_dir(paths)
    ctx = ctx_for("hs06_per_processor = 10\nmachinefeatures_option_foo = bar")
    write_mjf(directory, ctx)
    files = _files(directory)
    expected = {f"{d}/{k}": v.encode() for d, kv in mjf_values(ctx).items()
                for k, v in kv.items()}
    assert files == expected
    assert files["jobfeatures/allocated_cpu"] == b"2\n"
    assert files["machinefeatures/total_cpu"] == b"2"
    assert files["machinefeatures/foo"] == b"bar"
    mode = os.stat(directory.file("jobfeatures/job_id")).st_mode & 0o777
    assert mode == 0o644
    # What Vac reads back agrees.
    assert directory.processors == 2
    assert directory.shutdown_time == SHUTDOWN
    assert directory.hs06 == 20.0
    assert directory.job_id == "1b4e28ba-2fa1"


def test_write_mjf_creates_missing_directories(tmp_path, ctx_for):
    path = tmp_path / f"{NOW}_lhcb_f1-00.example.com"
    path.mkdir()
    directory = MachineDir(str(path))
    write_mjf(directory, ctx_for())
    assert (path / "jobfeatures" / "shutdowntime_job").read_text() == str(SHUTDOWN)


def test_lower_shutdown_time_touches_only_the_two_keys(paths, ctx_for):
    directory = _machine_dir(paths)
    write_mjf(directory, ctx_for("hs06_per_processor = 10"))
    before = _files(directory)
    assert lower_shutdown_time(directory, SHUTDOWN - 3600) is True
    after = _files(directory)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"machinefeatures/shutdowntime", "jobfeatures/shutdowntime_job"}
    assert after["machinefeatures/shutdowntime"] == str(SHUTDOWN - 3600).encode()
    assert after["jobfeatures/shutdowntime_job"] == str(SHUTDOWN - 3600).encode()
    assert after["jobfeatures/wall_limit_secs"] == before["jobfeatures/wall_limit_secs"]
    assert directory.shutdown_time == SHUTDOWN - 3600


def test_lower_shutdown_time_never_raises_it(paths, ctx_for):
    directory = _machine_dir(paths)
    write_mjf(directory, ctx_for())
    before = _files(directory)
    assert lower_shutdown_time(directory, SHUTDOWN + 3600) is False
    assert lower_shutdown_time(directory, SHUTDOWN) is False
    assert _files(directory) == before


def test_lower_shutdown_time_repairs_a_missing_key(paths, ctx_for):
    directory = _machine_dir(paths)
    write_mjf(directory, ctx_for())
    directory.remove("machinefeatures/shutdowntime")
    assert lower_shutdown_time(directory, SHUTDOWN - 10) is True
    assert directory.read("machinefeatures/shutdowntime") == str(SHUTDOWN - 10)
    assert directory.read("jobfeatures/shutdowntime_job") == str(SHUTDOWN - 10)
