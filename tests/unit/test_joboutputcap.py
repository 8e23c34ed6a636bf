# SPDX-License-Identifier: BSD-2-Clause
"""A container's capped joboutputs (vac.machine.joboutputcap) without mounting: the copy back
keeps files, directories and links (as links, never followed) and leaves out FIFOs and what is
too deep; an interrupted copy is completed; the capped joboutputs of a state directory are found
among the host's mount points, and nothing else is."""
from __future__ import annotations

import os

from vac.machine import joboutputcap, scratch
from vac.machine.directory import MachineDir


def test_the_copy_keeps_files_dirs_and_links_and_leaves_out_the_rest(tmp_path):
    src = tmp_path / "src"
    (src / "logs" / "deeper").mkdir(parents=True)
    (src / "shutdown_message").write_text("200 done\n")
    (src / "logs" / "deeper" / "x.log").write_bytes(b"x" * 5000)
    os.chmod(src / "shutdown_message", 0o4755)           # no set-id bit comes back
    os.symlink("/etc/shadow", src / "link")
    os.mkfifo(src / "fifo")
    skipped = joboutputcap._copy(str(src), str(tmp_path / "dest"), 0, [0])
    dest = tmp_path / "dest"
    assert skipped == 1 and sorted(os.listdir(dest)) == ["link", "logs", "shutdown_message"]
    assert (dest / "shutdown_message").read_text() == "200 done\n"
    assert os.stat(dest / "shutdown_message").st_mode & 0o7777 == 0o755
    assert os.readlink(dest / "link") == "/etc/shadow" and os.path.islink(dest / "link")
    assert (dest / "logs" / "deeper" / "x.log").stat().st_size == 5000


def test_the_copy_stops_at_its_depth_and_count(tmp_path, monkeypatch):
    path = tmp_path / "src"
    deep = path
    for i in range(joboutputcap.MAX_DEPTH + 3):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    assert joboutputcap._copy(str(path), str(tmp_path / "dest"), 0, [0]) == 1
    monkeypatch.setattr(joboutputcap, "MAX_ENTRIES", 2)
    for n in range(4):
        (tmp_path / "many" / str(n)).parent.mkdir(exist_ok=True)
        (tmp_path / "many" / str(n)).write_text("x")
    assert joboutputcap._copy(str(tmp_path / "many"), str(tmp_path / "out"), 0, [0]) == 2


def test_an_interrupted_copy_is_completed_without_a_mount(paths, monkeypatch):
    d = MachineDir.create(paths, 1000, "dock", "f1-00.example.com")
    saved = d.file(joboutputcap.SAVED)
    os.makedirs(saved)
    with open(os.path.join(saved, "shutdown_message"), "w") as f:
        f.write("200 done\n")
    monkeypatch.setattr(scratch, "is_mounted", lambda path: False)
    assert joboutputcap.release(d)
    assert d.shutdown_message == "200 done" and not os.path.exists(saved)
    assert not joboutputcap.release(d)          # nothing left to do


def test_capped_joboutputs_are_found_among_the_mounts(tmp_path):
    state = str(tmp_path)
    machines = os.path.join(state, "machines")
    mounts = ["/", os.path.join(machines, "1_dock_f1-00.example.com", "joboutputs"),
              os.path.join(machines, "1_dock_f1-01.example.com", "joboutputs", "deeper"),
              os.path.join(machines, "a", "b", "joboutputs"), "/elsewhere/m/joboutputs",
              os.path.join(state, "scratch", "1_dock_f1-00.example.com")]
    assert joboutputcap.mounted_in(state, mounts) == [
        ("1_dock_f1-00.example.com", os.path.join(machines, "1_dock_f1-00.example.com"))]
