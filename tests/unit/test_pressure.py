# SPDX-License-Identifier: BSD-2-Clause
"""vac.host.pressure: the kernel's PSI files parsed, a host or cgroup without PSI told apart
from a broken file, the stall time since the last reading; and this machine's /proc/pressure."""
from __future__ import annotations

import errno
import os

import pytest

from vac.host import cgroups, pressure
from vac.host.pressure import Gauge, Line, NoPressure, Stall

# Exactly as Linux 6.x writes them (host-wide cpu has a full line since 5.13).
CPU = "some avg10=74.42 avg60=50.84 avg300=22.02 total=376253824\n" \
      "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
MEMORY = "some avg10=0.00 avg60=0.00 avg300=0.00 total=51896\n" \
         "full avg10=0.00 avg60=0.00 avg300=0.00 total=25444\n"
IO = "some avg10=2.43 avg60=2.45 avg300=1.97 total=52086521\n" \
     "full avg10=0.01 avg60=0.24 avg300=0.73 total=32558337\n"
CPU_BEFORE_5_13 = "some avg10=0.10 avg60=0.05 avg300=0.01 total=1200\n"


def _write_host(root, cpu=CPU, memory=MEMORY, io=IO):
    os.makedirs(root / "pressure", exist_ok=True)
    for name, text in (("cpu", cpu), ("memory", memory), ("io", io)):
        (root / "pressure" / name).write_text(text)
    return str(root)


def test_parses_the_kernels_lines():
    stall = pressure.parse(IO)
    assert stall.some == Line(2.43, 2.45, 1.97, 52.086521)
    assert stall.full == Line(0.01, 0.24, 0.73, 32.558337)
    assert stall.line("full").avg10 == 0.01


def test_host_cpu_without_a_full_line():
    stall = pressure.parse(CPU_BEFORE_5_13)
    assert stall.full is None
    assert stall.some.total == pytest.approx(0.0012)


@pytest.mark.parametrize("text, words", [
    ("", "no 'some' line"),
    ("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", "no 'some' line"),
    ("some avg10=1.00 avg60=0.00 avg300=0.00\n", "no total"),
    ("some avg10=x avg60=0.00 avg300=0.00 total=0\n", "avg10 is not a number"),
    ("some avg10=-1 avg60=0.00 avg300=0.00 total=0\n", "avg10 out of range"),
    ("some avg10=nan avg60=0.00 avg300=0.00 total=0\n", "avg10 out of range"),
    ("some avg10=1 avg60=0.00 avg300=0.00 total=1.5\n", "total is not a number"),
    ("some avg10=1 avg10=2 avg60=0.00 avg300=0.00 total=1\n", "unexpected field"),
    ("some avg10=1 avg60=0.00 avg300=0.00 total=1 x=2\n", "unexpected field"),
    ("some avg10=1 avg60=0 avg300=0 total=1\nsome avg10=1 avg60=0 avg300=0 total=1\n",
     "line 2: unexpected"),
    ("partial avg10=1 avg60=0 avg300=0 total=1\n", "line 1: unexpected"),
])
def test_a_file_not_in_the_kernels_format_is_refused_naming_it(text, words):
    with pytest.raises(ValueError) as caught:
        pressure.parse(text, "/proc/pressure/io")
    assert "/proc/pressure/io" in str(caught.value) and words in str(caught.value)


def test_reads_a_hosts_three_files(tmp_path):
    root = _write_host(tmp_path)
    stalls = pressure.read(pressure.host_files(root))
    assert sorted(stalls) == ["cpu", "io", "memory"]
    assert stalls["cpu"].some.avg10 == 74.42
    assert stalls["memory"].full.total == pytest.approx(0.025444)


def test_a_host_without_psi_is_named(tmp_path):
    with pytest.raises(NoPressure) as caught:
        pressure.read(pressure.host_files(str(tmp_path)))
    assert str(tmp_path / "pressure" / "cpu") in str(caught.value)
    assert "psi=0" in str(caught.value)


def test_eopnotsupp_is_no_pressure_other_errors_are_not(tmp_path, monkeypatch):
    path = str(tmp_path / "cpu.pressure")
    (tmp_path / "cpu.pressure").write_text(CPU)

    def failing(code):
        def read(p, limit):
            raise OSError(code, os.strerror(code))
        return read

    monkeypatch.setattr(pressure.fsutil, "read_text_nofollow", failing(errno.EOPNOTSUPP))
    with pytest.raises(NoPressure, match="not supported"):
        pressure.read_file(path)
    monkeypatch.setattr(pressure.fsutil, "read_text_nofollow", failing(errno.EIO))
    with pytest.raises(ValueError, match="cpu.pressure"):
        pressure.read_file(path)


def test_a_symlink_is_refused(tmp_path):
    (tmp_path / "real").write_text(CPU)
    os.symlink(str(tmp_path / "real"), str(tmp_path / "cpu.pressure"))
    with pytest.raises(ValueError, match="symlink"):
        pressure.read_file(str(tmp_path / "cpu.pressure"))


def test_cgroup_files_are_the_v2_names(tmp_path):
    files = pressure.cgroup_files("/sys/fs/cgroup/vac/x")
    assert files == {"cpu": "/sys/fs/cgroup/vac/x/cpu.pressure",
                     "memory": "/sys/fs/cgroup/vac/x/memory.pressure",
                     "io": "/sys/fs/cgroup/vac/x/io.pressure"}
    for name in files:
        (tmp_path / f"{name}.pressure").write_text(MEMORY)
    gauge = pressure.cgroup_gauge(str(tmp_path))
    assert gauge.read(10.0).stalls["io"].some.total == pytest.approx(0.051896)


def test_the_stall_since_the_last_reading(tmp_path):
    root = _write_host(tmp_path)
    gauge = pressure.host_gauge(root)
    first = gauge.read(100.0)
    assert first.since_last == {} and first.interval is None
    _write_host(tmp_path, io=IO.replace("total=52086521", "total=54086521")
                .replace("total=32558337", "total=33058337"),
                cpu=CPU_BEFORE_5_13.replace("1200", "376253824"))
    second = gauge.read(160.0)
    assert second.interval == 60.0
    assert second.since_last[("io", "some")] == pytest.approx(2.0)
    assert second.since_last[("io", "full")] == pytest.approx(0.5)
    assert second.since_last[("cpu", "some")] == pytest.approx(0.0)
    assert ("cpu", "full") not in second.since_last      # the line went away
    assert second.avg10("cpu", "full") is None and second.avg10("io", "full") == 0.01


def test_a_counter_that_went_back_or_a_clock_that_did_gives_no_stall(tmp_path):
    root = _write_host(tmp_path)
    gauge = pressure.host_gauge(root)
    gauge.read(100.0)
    _write_host(tmp_path, memory=MEMORY.replace("51896", "10"))
    reading = gauge.read(110.0)
    assert ("memory", "some") not in reading.since_last
    assert ("memory", "full") in reading.since_last
    assert gauge.read(105.0).since_last == {}


def test_a_failed_reading_keeps_the_last_one(tmp_path):
    calls = []

    def reader(files):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("broken")
        return {"io": Stall(Line(1, 1, 1, float(len(calls))))}

    gauge = Gauge({"io": "x"}, reader=reader)
    gauge.read(1.0)
    with pytest.raises(ValueError):
        gauge.read(2.0)
    assert gauge.read(3.0).since_last == {("io", "some"): 2.0}


def test_this_machines_proc_pressure():
    if not os.path.exists("/proc/pressure/cpu"):
        pytest.skip("this kernel keeps no pressure stall information (/proc/pressure absent)")
    gauge = pressure.host_gauge()
    first = gauge.read(1.0)
    second = gauge.read(2.0)
    assert set(first.stalls) == {"cpu", "memory", "io"}
    for resource in pressure.RESOURCES:
        some = second.stalls[resource].some
        assert 0.0 <= some.avg10 <= 100.0 and some.total >= first.stalls[resource].some.total
        assert second.since_last[(resource, "some")] >= 0.0


def test_a_reading_as_plain_data(tmp_path):
    gauge = pressure.host_gauge(_write_host(tmp_path, cpu=CPU_BEFORE_5_13))
    assert pressure.as_dict(None) is None
    gauge.read(100.0)
    data = pressure.as_dict(gauge.read(130.0))
    assert data["time"] == 130.0 and data["interval"] == 30.0
    assert set(data["cpu"]) == {"some"}
    assert data["io"]["full"] == {"avg10": 0.01, "avg60": 0.24, "avg300": 0.73,
                                  "total_seconds": pytest.approx(32.558337),
                                  "stall_seconds": 0.0}


HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
NAMESPACED = "30 23 0:26 /vac.slice /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
V1_ONLY = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"


@pytest.mark.parametrize("mountinfo, path, expected", [
    (UNIFIED, "/vac/apptainer-m1", "/sys/fs/cgroup/vac/apptainer-m1"),
    (HYBRID, "/vac/apptainer-m1", "/sys/fs/cgroup/unified/vac/apptainer-m1"),
    (NAMESPACED, "/vac.slice/docker-1.scope", "/sys/fs/cgroup/docker-1.scope"),
    (NAMESPACED, "/system.slice/x", None),
    (UNIFIED, "/vac/../etc", None),
    (V1_ONLY, "/vac/apptainer-m1", None),
])
def test_a_machines_cgroup_directory(mountinfo, path, expected):
    assert pressure.cgroup_dir(path, cgroups.parse_mountinfo(mountinfo)) == expected
