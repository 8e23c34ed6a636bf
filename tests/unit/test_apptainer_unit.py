# SPDX-License-Identifier: BSD-2-Clause
"""ApptainerBackend without Apptainer: argv, identity by pid + start time, errors, OOM message,
the stray killer, over a fake /proc and a fake cgroup tree (vac.host.procs and the backend)."""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil

import pytest
from apptainerfakes import NAME, USER, fake_process

from vac.backends.apptainer.backend import (
    ApptainerBackend,
    bind_specs,
    build_argv,
    child_setup,
    exit_code_of,
    job_id_for,
    join_files,
    spython_bind_args,
)
from vac.backends.base import MachineSpec
from vac.errors import BackendError, BackendUnavailable, FetchError, ProcessError
from vac.host import procs
from vac.host.cgroupmachine import MachineCgroup
from vac.host.cgroups import CgroupFS, Hierarchy, parse_pids
from vac.machine.directory import MachineDir, MachineState, SlotRecord, write_slot_record
from vac.machine.slots import Slot

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
singularity_user = vacsngly
mb_per_processor = 32

[machinetype app]
machine_model = apptainer
target_share = 1
root_image = {image}
user_data = /dev/null
"""


class Kernel(CgroupFS):
    """Plain directories behaving like cgroupfs where the backend needs it."""

    def __init__(self):
        self.killed = []

    def mkdir(self, path):
        os.mkdir(path)
        for name in ("cgroup.procs", "cpu.shares", "cpuacct.usage", "memory.limit_in_bytes",
                     "memory.oom_control"):
            with open(os.path.join(path, name), "w") as f:
                f.write("")

    def rmdir(self, path):
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "absent", path)
        if parse_pids(self.read(os.path.join(path, "cgroup.procs"))):
            raise OSError(errno.EBUSY, "busy", path)
        shutil.rmtree(path)

    def kill(self, pid):
        self.killed.append(pid)
        for top, _, files in os.walk(self.root):
            if "cgroup.procs" in files:
                path = os.path.join(top, "cgroup.procs")
                left = parse_pids(self.read(path)) - {pid}
                with open(path, "w") as f:
                    f.write("".join(f"{p}\n" for p in left))

    def sleep(self, seconds):
        pass


@pytest.fixture
def world(tmp_path, make_config, paths):
    """A backend over a fake /proc and a fake v1 cgroup tree, with a prepared machine dir."""
    image = tmp_path / "image"
    (image / "bin").mkdir(parents=True)
    cfg = make_config(CONF.format(image=image))
    kernel = Kernel()
    kernel.root = str(tmp_path / "cg")
    mounts = {c: str(tmp_path / "cg" / c) for c in ("cpu", "cpuacct", "memory")}
    for m in mounts.values():
        os.makedirs(m)
    proc = tmp_path / "proc"
    proc.mkdir()
    backend = ApptainerBackend(cfg.settings, proc_root=str(proc), hierarchy=Hierarchy(1, mounts),
                               cgroup_fs=kernel)
    directory = MachineDir.create(paths, 1700000000, "app", NAME)
    directory.write("user_data", "#!/bin/sh\n")
    write_slot_record(paths, NAME, SlotRecord(1700000000, "app", "apptainer"))
    spec = MachineSpec(name=NAME, machinetype=cfg.machinetypes["app"], settings=cfg.settings,
                       slot=Slot(1, NAME), processors=1, memory_mb=32, created=1700000000,
                       shutdown_time=1700003600, uuid="1234-abcd", directory=directory)
    return dataclasses.make_dataclass("World", ["backend", "spec", "dir", "proc", "kernel",
                                                "cfg", "paths"])(
        backend, spec, directory, proc, kernel, cfg, paths)


def record(w, pid=777, start=5000, uid=4242, **extra):
    cg = MachineCgroup(w.backend.hierarchy, "apptainer-" + NAME, fs=w.kernel)
    if not cg.exists():
        cg.create(1, 32 << 20)
    rec = {"backend": "apptainer", "pid": pid, "start_time": start, "uid": uid,
           "job_id": job_id_for(pid, "1234-abcd"), "memory_limit_bytes": 32 << 20,
           "cgroup_inode": os.stat(cg.dir("memory")).st_ino}
    rec.update(extra)
    w.dir.write_backend_record(rec)
    return cg


# vac.host.procs ------------------------------------------------------------------------------

def test_stat_is_parsed_from_the_last_parenthesis():
    text = "123 (a) b (c) S 1 123 123 0 -1 4194560 " + " ".join(["0"] * 12) + " 98765 0 0\n"
    assert procs.parse_stat(text) == ("S", 98765)
    assert procs.parse_status_uid("Name:\tx\nUid:\t995\t995\t995\t995\n") == 995
    assert procs.parse_status_uid("Name:\tx\n") is None


def test_proc_cgroup_lines_map_each_controller():
    text = "4:memory:/vac/apptainer-a\n3:cpu,cpuacct:/vac/apptainer-a\n1:name=systemd:/\n0::/x\n"
    assert procs.parse_cgroup(text) == {"memory": "/vac/apptainer-a", "cpu": "/vac/apptainer-a",
                                        "cpuacct": "/vac/apptainer-a", "name=systemd": "/",
                                        "": "/x"}


def test_identity_needs_pid_start_time_uid_and_life(tmp_path):
    fake_process(tmp_path, 10, start=111, uid=4242)
    fake_process(tmp_path, 11, start=111, uid=4242, state="Z")
    fake_process(tmp_path, 12, start=111, uid=0)
    assert procs.is_same(10, 111, 4242, str(tmp_path))
    assert not procs.is_same(10, 112, 4242, str(tmp_path))   # recycled pid
    assert not procs.is_same(11, 111, 4242, str(tmp_path))   # zombie: has ended
    assert not procs.is_same(12, 111, 4242, str(tmp_path))   # someone else's
    assert not procs.is_same(13, 111, 4242, str(tmp_path))   # gone
    assert procs.pids_of_user(4242, str(tmp_path)) == [10]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_unsearchable_ancestor_is_judged_as_the_user(tmp_path):
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    target = str(locked / "inner" / "file")

    def first_blocked_inside(uid, gids):
        blocked = procs.unsearchable_ancestor(target, uid, gids)
        return blocked if blocked and blocked.startswith(str(tmp_path)) else None

    os.chown(locked, 0, 0)
    os.chmod(locked, 0o700)
    assert first_blocked_inside(4242, [4242]) == str(locked)
    os.chown(locked, 4242, 0)                      # owner bit
    assert first_blocked_inside(4242, [4242]) is None
    os.chown(locked, 0, 4243)
    os.chmod(locked, 0o710)                        # group bit
    assert first_blocked_inside(4242, [4242, 4243]) is None
    assert first_blocked_inside(4242, [4242]) == str(locked)
    os.chmod(locked, 0o711)                        # other bit
    assert first_blocked_inside(4242, [4242]) is None


def test_kill_all_counts_only_processes_that_were_there():
    def kill(pid):
        if pid == 2:
            raise ProcessLookupError
    assert procs.kill_all([1, 2, 3], kill) == 2


# argv -----------------------------------------------------------------------------------

def test_argv_contains_workdir_hostname_binds_env_image_and_command():
    specs = bind_specs("/s/m", cvmfs=True, user_data=True)
    assert specs == ["/cvmfs:/cvmfs:ro", "/s/m/machinefeatures:/tmp/machinefeatures:ro",
                     "/s/m/jobfeatures:/tmp/jobfeatures:ro", "/s/m/joboutputs:/tmp/joboutputs:rw",
                     "/s/m/user_data:/user_data:ro"]
    argv = build_argv("/usr/bin/apptainer", "/img", "/s/m", NAME, ["/user_data", "x"],
                      ["--bind", "A:B"])
    assert argv == ["/usr/bin/apptainer", "exec", "--contain", "--workdir", "/s/m/mnt",
                    "--hostname", NAME, "--bind", "A:B",
                    "--env", "MACHINEFEATURES=/tmp/machinefeatures",
                    "--env", "JOBFEATURES=/tmp/jobfeatures", "--env", "JOBOUTPUTS=/tmp/joboutputs",
                    "/img", "/user_data", "x"]
    assert bind_specs("/s/m", cvmfs=False, user_data=False)[0].startswith("/s/m/machinef")
    assert len(bind_specs("/s/m", cvmfs=False, user_data=False)) == 3


def test_spython_builds_the_bind_arguments_and_its_exit_is_caught(tmp_path):
    assert spython_bind_args([f"{tmp_path}:/x:ro"]) == ["--bind", f"{tmp_path}:/x:ro"]
    with pytest.raises(BackendError, match="vanished"):
        spython_bind_args([f"{tmp_path}/missing:/x"])


def test_job_id_and_exit_codes_follow_the_original():
    assert job_id_for(4321, "u-u") == "004321-u-u"
    assert exit_code_of(-9) == 137 and exit_code_of(3) == 3


# Errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("user, message", [(None, "not set"), ("root", "is root"),
                                           ("no-such-user-xyz", "does not exist")])
def test_bad_singularity_user_is_a_backend_error(world, user, message):
    backend = ApptainerBackend(dataclasses.replace(world.cfg.settings, singularity_user=user))
    with pytest.raises(BackendError, match=message):
        backend.user()
    with pytest.raises(BackendError, match=message):
        backend.create(world.spec)
    probe = backend.probe()
    assert not probe.available and probe.reason


def test_bad_singularity_path_is_unavailable_and_probe_says_why(world, tmp_path):
    settings = dataclasses.replace(world.cfg.settings, singularity_path=str(tmp_path / "nope"))
    backend = ApptainerBackend(settings)
    with pytest.raises(BackendUnavailable, match="not an executable"):
        backend.binary()
    probe = backend.probe()
    assert not probe.available and "singularity_path" in probe.reason


def test_failing_version_command_makes_probe_unavailable(world, tmp_path):
    tool = tmp_path / "apptainer"
    tool.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    tool.chmod(0o755)
    backend = ApptainerBackend(dataclasses.replace(world.cfg.settings,
                                                   singularity_path=str(tool)))
    probe = backend.probe()
    assert not probe.available and "broken" in probe.reason


@pytest.fixture
def creatable(world, monkeypatch):
    monkeypatch.setattr(ApptainerBackend, "user", lambda self: USER)
    monkeypatch.setattr(ApptainerBackend, "binary", lambda self: "/bin/true")
    monkeypatch.setattr(os, "getgrouplist", lambda name, gid: [gid])
    return world


def with_image(w, image):
    mt = dataclasses.replace(w.spec.machinetype, root_image=image)
    return dataclasses.replace(w.spec, machinetype=mt)


@pytest.mark.parametrize("image, message", [
    ("/nonexistent/image.sif", "root_image /nonexistent/image.sif does not exist"),
    ("missing.sif", "files/missing.sif does not exist"),
    ("docker://busybox", "only https URLs"),
    ("", "has no root_image"),
])
def test_missing_or_unsupported_image_is_a_backend_error(creatable, image, message):
    with pytest.raises(BackendError, match=message):
        creatable.backend.create(with_image(creatable, image))
    assert not MachineCgroup(creatable.backend.hierarchy, "apptainer-" + NAME).exists()


def test_missing_mjf_directory_is_a_backend_error(creatable):
    shutil.rmtree(creatable.dir.file("jobfeatures"))
    with pytest.raises(BackendError, match="jobfeatures is missing"):
        creatable.backend.create(creatable.spec)


def test_cvmfs_without_cvmfs_is_a_backend_error(creatable):
    if os.path.exists("/cvmfs"):
        pytest.skip("this host has /cvmfs")
    mt = dataclasses.replace(creatable.spec.machinetype, cvmfs_repositories=("atlas.cern.ch",))
    with pytest.raises(BackendError, match="bind source /cvmfs does not exist"):
        creatable.backend.create(dataclasses.replace(creatable.spec, machinetype=mt))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_state_dir_the_user_cannot_reach_is_refused_before_starting(creatable):
    # pytest's tmp_path lives under a 0700 directory: the user could not see its binds.
    with pytest.raises(BackendError, match="cannot reach"):
        creatable.backend.create(creatable.spec)
    assert os.stat(creatable.dir.file("mnt")).st_uid == USER.pw_uid
    assert os.stat(creatable.dir.file("joboutputs")).st_uid == USER.pw_uid
    assert os.stat(creatable.dir.file("user_data")).st_mode & 0o777 == 0o755
    assert not MachineCgroup(creatable.backend.hierarchy, "apptainer-" + NAME).exists()


def test_a_cgroup_still_holding_processes_blocks_creation(creatable, monkeypatch):
    monkeypatch.setattr(procs, "unsearchable_ancestor", lambda *a: None)
    cg = record(creatable)
    with open(os.path.join(cg.dir("memory"), "cgroup.procs"), "w") as f:
        f.write("99\n")
    with pytest.raises(BackendError, match="still has processes"):
        creatable.backend.create(creatable.spec)


# status / collect / destroy -------------------------------------------------------------

def test_status_is_running_only_for_the_recorded_process(world):
    cg = record(world, pid=777, start=5000)
    with open(os.path.join(cg.dir("cpuacct"), "cpuacct.usage"), "w") as f:
        f.write("7500000000\n")
    fake_process(world.proc, 777, start=5000)
    status = world.backend.status(NAME, world.dir)
    assert status.state == MachineState.RUNNING
    assert status.cpu_seconds == 7.5
    assert status.backend_id == "000777-1234-abcd"
    # A restarted vacd (new instance, not the parent) adopts it by pid + start time.
    fresh = ApptainerBackend(world.cfg.settings, proc_root=str(world.proc),
                             hierarchy=world.backend.hierarchy, cgroup_fs=world.kernel)
    assert fresh.status(NAME, world.dir).state == MachineState.RUNNING
    assert fresh.status(NAME, None).state == MachineState.RUNNING  # found via the slot record
    # The same pid with another start time is a recycled pid: the machine has gone.
    fake_process(world.proc, 777, start=6000)
    assert world.backend.status(NAME, world.dir).state == MachineState.SHUTDOWN
    fake_process(world.proc, 777, start=5000, uid=0)
    assert world.backend.status(NAME, world.dir).state == MachineState.SHUTDOWN


def test_status_without_a_record_is_shutdown(world):
    assert world.backend.status(NAME, world.dir).state == MachineState.SHUTDOWN
    assert world.backend.status("f1-09.example.com", None).state == MachineState.SHUTDOWN


def test_collect_of_an_oom_kill_writes_a_coded_message_once(world):
    cg = record(world)
    with open(os.path.join(cg.dir("memory"), "memory.oom_control"), "w") as f:
        f.write("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    final = world.backend.collect(NAME, world.dir)
    assert final.state == MachineState.SHUTDOWN and final.oom_killed
    assert world.dir.shutdown_message == \
        "700 Vac: container killed by the OOM killer (memory limit 32 MiB)"
    # After the cgroup is gone the verdict is remembered in backend.json.
    world.backend.destroy(NAME, world.dir)
    assert not cg.exists()
    assert world.backend.status(NAME, world.dir).oom_killed
    assert json.loads(open(world.dir.file("backend.json")).read())["oom_killed"] is True


def test_collect_keeps_the_machines_own_message(world):
    cg = record(world)
    with open(os.path.join(cg.dir("memory"), "memory.oom_control"), "w") as f:
        f.write("oom_kill 1\n")
    world.dir.write("joboutputs/shutdown_message", "300 No more work")
    assert world.backend.collect(NAME, world.dir).oom_killed
    assert world.dir.shutdown_message == "300 No more work"


def test_a_recreated_cgroup_is_not_read_as_the_old_machines(world):
    cg = record(world)
    with open(os.path.join(cg.dir("cpuacct"), "cpuacct.usage"), "w") as f:
        f.write("2000000000\n")
    world.backend.collect(NAME, world.dir)
    # A newer machine of the same slot has a cgroup of the same name but another inode.
    rec = world.dir.read_backend_record()
    rec["cgroup_inode"] += 1
    world.dir.write_backend_record(rec)
    with open(os.path.join(cg.dir("cpuacct"), "cpuacct.usage"), "w") as f:
        f.write("9000000000\n")
    assert world.backend.status(NAME, world.dir).cpu_seconds == 2.0


def test_destroy_kills_every_process_in_the_cgroup_and_removes_it(world):
    cg = record(world, pid=777)
    fake_process(world.proc, 777, start=5000)
    with open(os.path.join(cg.dir("memory"), "cgroup.procs"), "w") as f:
        f.write("777\n778\n779\n")
    world.backend.destroy(NAME, world.dir)
    assert {777, 778, 779} <= set(world.kernel.killed)
    assert not cg.exists()
    world.backend.destroy(NAME, None)  # absent is success
    world.backend.destroy("f1-07.example.com", None)


def test_list_machines_names_the_vac_apptainer_cgroups(world):
    record(world)
    other = MachineCgroup(world.backend.hierarchy, "apptainer-f1-02.example.com",
                          fs=world.kernel)
    other.create(1, 1 << 20)
    with open(os.path.join(other.dir("memory"), "cgroup.procs"), "w") as f:
        f.write("55\n")
    MachineCgroup(world.backend.hierarchy, "docker-x", fs=world.kernel).create(1, 1 << 20)
    listed = {s.name: s for s in world.backend.list_machines()}
    assert set(listed) == {NAME, "f1-02.example.com"}
    assert listed[NAME].backend_id == "000777-1234-abcd"
    assert listed["f1-02.example.com"].state == MachineState.RUNNING  # no record: by its procs


# The stray killer -----------------------------------------------------------------------

def test_kill_strays_spares_live_machines_only(world, monkeypatch):
    monkeypatch.setattr(ApptainerBackend, "user", lambda self: USER)
    live = record(world)
    dead = MachineCgroup(world.backend.hierarchy, "apptainer-f1-03.example.com", fs=world.kernel)
    dead.create(1, 1 << 20)
    empty = MachineCgroup(world.backend.hierarchy, "singularity-000001-old", fs=world.kernel)
    empty.create(1, 1 << 20)
    fake_process(world.proc, 100, cgroup=f"/vac/apptainer-{NAME}")
    fake_process(world.proc, 101, cgroup=f"/vac/apptainer-{NAME}/inner")
    fake_process(world.proc, 102, cgroup="/vac/apptainer-f1-03.example.com")
    fake_process(world.proc, 103, cgroup="/user.slice")
    fake_process(world.proc, 104, cgroup="/user.slice", uid=1000)      # another user
    fake_process(world.proc, 105, cgroup="/user.slice", state="Z")     # already ended
    with open(os.path.join(dead.dir("memory"), "cgroup.procs"), "w") as f:
        f.write("102\n")
    assert world.backend.live_machine_names() == [NAME]
    assert world.backend.kill_strays() == 2
    assert sorted(world.kernel.killed) == [102, 103]
    assert live.exists() and not dead.exists() and not empty.exists()


def test_a_head_shown_at_the_root_while_a_thread_execs_is_not_a_stray(world, monkeypatch):
    """While a multi-threaded head (Apptainer's Go binary) execs from a thread other than its
    leader, /proc/<pid>/cgroup is the exiting leader's, already moved to "/"; the exec'ing
    thread, listed under task/, is still in the machine's cgroup."""
    monkeypatch.setattr(ApptainerBackend, "user", lambda self: USER)
    record(world)
    fake_process(world.proc, 200, cgroup="/")
    fake_process(world.proc, 201, cgroup="/")
    for pid, tid, where in ((200, 200, "/"), (200, 207, f"/vac/apptainer-{NAME}"),
                            (201, 201, "/"), (201, 208, "/user.slice")):
        task = world.proc / str(pid) / "task" / str(tid)
        task.mkdir(parents=True)
        (task / "cgroup").write_text(f"4:memory:{where}\n2:cpuacct:{where}\n0::/\n")
    assert world.backend.kill_strays() == 1
    assert world.kernel.killed == [201]


def test_finished_machines_are_not_live(world):
    assert world.backend.live_machine_names() == [NAME]
    world.dir.write("finished", "")
    assert world.backend.live_machine_names() == []
    write_slot_record(world.paths, "f1-02.example.com", SlotRecord(1, "d", "docker"))
    assert world.backend.live_machine_names() == []


def test_kill_strays_without_a_singularity_user_does_nothing(world):
    backend = ApptainerBackend(dataclasses.replace(world.cfg.settings, singularity_user=None),
                               proc_root=str(world.proc), hierarchy=world.backend.hierarchy,
                               cgroup_fs=world.kernel)
    fake_process(world.proc, 103, uid=4242)
    assert backend.kill_strays([]) == 0
    assert world.kernel.killed == []


# Remote images --------------------------------------------------------------------------

def test_https_images_are_fetched_into_the_image_cache(creatable, monkeypatch):
    from vac import fetch
    url = "https://images.example.org/busybox.sif"
    calls = []

    def fake_fetch(u, cache, tmp, **kw):
        calls.append((u, cache, tmp))
        with open(cache, "w") as f:
            f.write("sif")
        return cache

    monkeypatch.setattr(fetch, "fetch_to_cache", fake_fetch)
    spec = with_image(creatable, url)
    path = creatable.backend._image(spec)
    assert path == creatable.paths.image_cache(url)
    assert calls == [(url, creatable.paths.image_cache(url), creatable.paths.tmp)]

    def failing(u, cache, tmp, **kw):
        raise FetchError(u, "HTTP status 503", 503)

    monkeypatch.setattr(fetch, "fetch_to_cache", failing)
    assert creatable.backend._image(spec) == path  # the cached copy stays in use
    os.unlink(path)
    with pytest.raises(BackendError, match="cannot fetch root_image.*503"):
        creatable.backend.create(spec)


# Joining the cgroup and the version cache ------------------------------------------------

def test_a_new_machine_joins_by_tasks_on_v1_and_by_cgroup_procs_on_v2(tmp_path, monkeypatch):
    v1 = MachineCgroup(Hierarchy(1, {c: f"/cg/{c}" for c in ("cpu", "cpuacct", "memory")}),
                       "apptainer-m")
    assert join_files(v1) == [f"/cg/{c}/vac/apptainer-m/tasks"
                              for c in ("cpu", "cpuacct", "memory")]
    v2 = MachineCgroup(Hierarchy(2, {"": "/sys/fs/cgroup"}), "apptainer-m")
    assert join_files(v2) == ["/sys/fs/cgroup/vac/apptainer-m/cgroup.procs"]
    files = [tmp_path / "a", tmp_path / "b"]
    for f in files:
        f.write_text("")
    calls = []
    for name in ("umask", "setgroups", "setgid", "setuid"):
        monkeypatch.setattr(os, name, lambda value, name=name: calls.append((name, value)))
    child_setup([str(f) for f in files], 4242, 4243, [4243, 7])()
    assert [f.read_text() for f in files] == ["0", "0"]  # "0": the writer itself
    assert calls == [("umask", 0o022), ("setgroups", [4243, 7]), ("setgid", 4243),
                     ("setuid", 4242)]


def test_probe_runs_the_version_command_again_only_when_the_binary_changes(world, tmp_path):
    tool = tmp_path / "apptainer"
    count = tmp_path / "count"
    tool.write_text(f"#!/bin/sh\necho x >> {count}\necho 1.4.5\n")
    tool.chmod(0o755)
    backend = ApptainerBackend(dataclasses.replace(world.cfg.settings,
                                                   singularity_path=str(tool)),
                               proc_root=str(world.proc), hierarchy=world.backend.hierarchy,
                               cgroup_fs=world.kernel)
    first = backend._version(str(tool))
    assert first == backend._version(str(tool)) == "1.4.5"
    assert count.read_text().count("x") == 1
    tool.write_text(f"#!/bin/sh\necho x >> {count}\necho broken >&2\nexit 3\n")
    with pytest.raises(ProcessError, match="broken"):
        backend._version(str(tool))  # a changed binary is asked again
    with pytest.raises(ProcessError, match="broken"):
        backend._version(str(tool))  # and a failure is never reused
    assert count.read_text().count("x") == 3
