# SPDX-License-Identifier: BSD-2-Clause
"""Docker backend without an engine: arguments, machine directory preparation, cgroup reading
from recorded files, the SDK imported lazily, an unreachable engine."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest
from dockerspecs import CONF, make_spec

from vac.backends.docker import backend as dk
from vac.backends.docker import engine
from vac.backends.docker import spec as ds
from vac.errors import BackendError, BackendUnavailable
from vac.host import cgroups, procs
from vac.machine.directory import MachineState

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "tests", "data", "docker")
CONTAINER_ID = "586ab0988ce1d4a4d7f7bc6e3dd2096d805bababd8763eaa976fb9de0fb20004"



def recorded(name: str) -> str:
    with open(os.path.join(DATA, name)) as f:
        return f.read()


@pytest.fixture
def conf(make_config):
    def build(extra: str = "", url: str = "unix:///var/run/docker.sock"):
        return make_config(CONF.format(extra=extra, url=url))
    return build


# What we ask the engine for -------------------------------------------------------------

def test_image_of_strips_docker_prefix_and_refuses_others():
    assert dk.image_of("docker://vac-test/busybox:1") == "vac-test/busybox:1"
    assert dk.image_of("docker://registry.example.com:5000/a/b@sha256:00ff") == \
        "registry.example.com:5000/a/b@sha256:00ff"
    for bad in (None, "", "docker://", "vac-test/busybox:1", "https://x/y.img",
                "docker://a b"):
        with pytest.raises(BackendError):
            dk.image_of(bad)


def test_container_args_name_labels_environment_single_command(paths, conf):
    spec = make_spec(paths, conf())
    args = dk.container_args(spec)
    assert args["name"] == args["hostname"] == "factory1-03.example.com"
    assert args["command"] == ["/user_data"]
    assert args["detach"] is True
    assert args["labels"] == {"vac.space": "space.example.com",
                              "vac.factory": "factory1.example.com",
                              "vac.machine": "factory1-03.example.com",
                              "vac.machinetype": "dock", "vac.created": "1700000000"}
    assert args["environment"] == {"MACHINEFEATURES": "/etc/machinefeatures",
                                   "JOBFEATURES": "/etc/jobfeatures",
                                   "JOBOUTPUTS": "/var/spool/joboutputs"}


def test_container_command_is_one_argv_word_never_a_shell(paths, conf):
    spec = make_spec(paths, conf("container_command = /bin/run payload; rm -rf /"))
    assert dk.container_args(spec)["command"] == ["/bin/run payload; rm -rf /"]


def test_host_config_defaults_hard_memory_shares_pids_no_privileges(paths, conf):
    spec = make_spec(paths, conf("docker_pids_limit = 321"), processors=2)
    args = dk.host_config_args(spec, [], "/vac/docker-x")
    assert args["cpu_shares"] == 2048
    assert args["mem_limit"] == args["memswap_limit"] == 2000 * 1024 * 1024
    assert "mem_reservation" not in args and "nano_cpus" not in args
    assert args["pids_limit"] == 321
    assert args["security_opt"] == ["no-new-privileges"]
    assert args["privileged"] is False
    assert args["network_mode"] == "bridge"
    assert args["cgroup_parent"] == "/vac/docker-x"


def test_host_config_hard_cpu_soft_memory_no_pids_limit(paths, conf):
    spec = make_spec(paths, conf("docker_hard_cpu = true\ndocker_hard_memory = false\n"
                                 "docker_pids_limit = 0\ndocker_network_mode = none"),
                     processors=3)
    args = dk.host_config_args(spec, [], None)
    assert args["nano_cpus"] == 3 * 10**9
    assert args["mem_reservation"] == 3000 * 1024 * 1024
    assert "mem_limit" not in args and "memswap_limit" not in args
    assert "pids_limit" not in args and "cgroup_parent" not in args
    assert args["network_mode"] == "none"


def test_host_config_is_what_the_engine_receives(paths, conf):
    docker = pytest.importorskip("docker")
    spec = make_spec(paths, conf("docker_hard_cpu = true"), processors=2)
    mounts = dk.prepare_mounts(spec)
    hc = docker.types.HostConfig(version="1.41",
                                 **dk.host_config_args(spec, mounts, "/vac/docker-x"))
    assert hc["CpuShares"] == 2048 and hc["NanoCpus"] == 2 * 10**9
    assert hc["Memory"] == hc["MemorySwap"] == 2000 * 1024 * 1024
    assert hc["SecurityOpt"] == ["no-new-privileges"] and not hc.get("Privileged")
    assert hc["PidsLimit"] == 4096 and hc["CgroupParent"] == "/vac/docker-x"
    assert {m["Target"]: m["ReadOnly"] for m in hc["Mounts"]} == {
        "/var/spool/joboutputs": False, "/etc/machinefeatures": True,
        "/etc/jobfeatures": True, "/user_data": True}


def test_states_and_ownership():
    assert engine.state_of("running") is MachineState.RUNNING
    assert engine.state_of("paused") is MachineState.PAUSED
    assert engine.state_of("created") is MachineState.STARTING
    for gone in ("exited", "dead", "removing", ""):
        assert engine.state_of(gone) is MachineState.SHUTDOWN
    labels = {"vac.space": "s", "vac.factory": "f"}
    assert engine.owned(labels, "s", "f")
    assert not engine.owned(labels, "s", "g") and not dk.owned(None, "s", "f")
    assert not engine.owned({"vac.factory": "f"}, "s", "f")


def test_cgroup_parent_is_per_machine_directory(paths, conf):
    spec = make_spec(paths, conf())
    assert ds.cgroup_parent_for(spec.directory) == \
        "/vac/docker-1700000000_dock_factory1-03.example.com"


# Preparing the machine directory ------------------------------------------------------------

def test_prepare_mounts_binds_chmods_user_data_and_makes_tmp_binds(paths, conf):
    spec = make_spec(paths, conf("tmp_binds = /scratch /tmp/work"))
    mounts = dk.prepare_mounts(spec)
    d = spec.directory
    by_target = {m["Target"]: m for m in mounts}
    assert by_target["/var/spool/joboutputs"] == ds.bind(d.file("joboutputs"),
                                                         "/var/spool/joboutputs", False)
    assert by_target["/etc/machinefeatures"]["Source"] == d.file("machinefeatures")
    assert by_target["/etc/jobfeatures"]["ReadOnly"] is True
    assert by_target["/user_data"] == ds.bind(d.file("user_data"), "/user_data", True)
    assert stat.S_IMODE(os.stat(d.file("user_data")).st_mode) == 0o755
    for target, prefix in (("/scratch", "_scratch"), ("/tmp/work", "_tmp_work")):
        source = by_target[target]["Source"]
        assert by_target[target]["ReadOnly"] is False
        assert os.path.dirname(source) == d.file("mnt")
        assert os.path.basename(source).startswith(prefix)
        assert stat.S_IMODE(os.stat(source).st_mode) == 0o755
    assert "/cvmfs" not in by_target


def test_prepare_mounts_refuses_missing_or_linked_user_data(paths, conf, tmp_path):
    spec = make_spec(paths, conf(), user_data=None)
    with pytest.raises(BackendError, match="no user_data"):
        dk.prepare_mounts(spec)
    os.symlink("/etc/passwd", spec.directory.file("user_data"))
    with pytest.raises(BackendError, match="not a regular file"):
        dk.prepare_mounts(spec)


def test_prepare_mounts_without_user_data_for_another_command(paths, conf):
    spec = make_spec(paths, conf("container_command = /bin/payload"), user_data=None)
    assert "/user_data" not in {m["Target"] for m in dk.prepare_mounts(spec)}


def test_prepare_mounts_refuses_symlinked_joboutputs(paths, conf, tmp_path):
    spec = make_spec(paths, conf())
    os.rmdir(spec.directory.file("joboutputs"))
    os.symlink(str(tmp_path), spec.directory.file("joboutputs"))
    with pytest.raises(BackendError, match="not a directory"):
        dk.prepare_mounts(spec)


@pytest.mark.parametrize("target", ["scratch", "/a/../etc", "/a/", "/", "/x:/y", "/a b",
                                    "/var/spool/joboutputs", "/user_data", "/a//b"])
def test_prepare_mounts_refuses_bad_tmp_binds(paths, conf, target):
    spec = make_spec(paths, conf(f"tmp_binds = /ok {target}"))
    with pytest.raises(BackendError, match="tmp_binds"):
        dk.prepare_mounts(spec)


def test_prepare_mounts_lists_cvmfs_repositories_first(paths, conf, tmp_path):
    root = tmp_path / "cvmfs"
    (root / "atlas.cern.ch").mkdir(parents=True)
    spec = make_spec(paths, conf("cvmfs_repositories = atlas.cern.ch"))
    mounts = dk.prepare_mounts(spec, str(root))
    assert ds.bind(str(root), "/cvmfs", True) in mounts
    spec = make_spec(paths, conf("cvmfs_repositories = atlas.cern.ch lhcb.cern.ch"),
                     created=1700000001)
    with pytest.raises(BackendError, match="lhcb.cern.ch not available"):
        dk.prepare_mounts(spec, str(root))
    spec = make_spec(paths, conf("cvmfs_repositories = .."), created=1700000002)
    with pytest.raises(BackendError, match="refused"):
        dk.prepare_mounts(spec, str(root))


# cgroups, from recorded files ---------------------------------------------------------------

def test_recorded_mountinfo_gives_every_hierarchy():
    hybrid = cgroups.parse_mountinfo(recorded("mountinfo_v1_hybrid.txt"))
    assert hybrid.version == 1
    assert hybrid.v1["cpuacct"] == cgroups.Mount("/", "/sys/fs/cgroup/cpuacct")
    assert hybrid.v1["name=systemd"].point == "/sys/fs/cgroup/systemd"
    assert hybrid.v2 == cgroups.Mount("/", "/sys/fs/cgroup/unified")
    assert len(hybrid.mounts()) == 10
    el9 = cgroups.parse_mountinfo(recorded("mountinfo_v2_el9.txt"))
    assert el9.version == 2 and el9.v1 == {}
    assert el9.mounts() == [cgroups.Mount("/", "/sys/fs/cgroup")]
    el7 = cgroups.parse_mountinfo(recorded("mountinfo_v1_el7.txt"))
    assert el7.v1["cpu"] is el7.v1["cpuacct"]
    assert el7.v1["cpuacct"].point == "/sys/fs/cgroup/cpu,cpuacct"
    assert "seclabel" not in el7.v1 and "xattr" not in el7.v1
    assert len(el7.mounts()) == 4


def test_recorded_proc_cgroup_names_the_container_cgroup():
    v1 = procs.parse_cgroup(recorded("proc_pid_cgroup_v1_cgroupfs.txt"))
    assert v1["cpuacct"] == v1["cpu"] == v1[cgroups.V2] == f"/docker/{CONTAINER_ID}"
    assert v1["name=systemd"] == f"/docker/{CONTAINER_ID}"
    v2 = procs.parse_cgroup(recorded("proc_pid_cgroup_v2_systemd.txt"))
    assert v2 == {"": f"/system.slice/docker-{CONTAINER_ID}.scope"}
    el7 = procs.parse_cgroup(recorded("proc_pid_cgroup_v1_el7.txt"))
    assert el7["cpuacct"] == el7["cpu"] == f"/system.slice/docker-{CONTAINER_ID}.scope"


def test_recorded_cpu_files_parse_to_seconds():
    assert cgroups.parse_cpuacct_usage(recorded("cpuacct.usage_v1.txt")) == \
        pytest.approx(0.220107192)
    assert cgroups.parse_cpu_stat(recorded("cpu.stat_v2.txt")) == pytest.approx(0.220107)
    assert cgroups.parse_cpu_stat(recorded("cpu.stat_v2_el9.txt")) == \
        pytest.approx(1534.200125)
    for bad in ("", "12x"):
        with pytest.raises(ValueError):
            cgroups.parse_cpuacct_usage(bad)
    with pytest.raises(ValueError):
        cgroups.parse_cpu_stat("user_usec 5\n")


def test_host_path_honours_the_mount_root():
    nested = cgroups.parse_mountinfo(recorded("mountinfo_v2_nested.txt")).v2
    assert cgroups.host_path(nested, "/system.slice/vacd.service/x") == "/sys/fs/cgroup/x"
    assert cgroups.host_path(nested, "/system.slice/vacd.service") == "/sys/fs/cgroup"
    assert cgroups.host_path(nested, "/system.slice/other") is None
    top = cgroups.Mount("/", "/sys/fs/cgroup/cpuacct")
    assert cgroups.host_path(top, "/docker/abc") == "/sys/fs/cgroup/cpuacct/docker/abc"
    for bad in ("docker/abc", "/docker/../../etc", ""):
        assert cgroups.host_path(top, bad) is None


def fake_host(tmp_path, mountinfo: str, proc: dict, sys_files: dict) -> cgroups.Cgroups:
    """A proc root and a cgroup tree under tmp_path, from recorded files."""
    text = recorded(mountinfo).replace(" /sys/fs/cgroup", f" {tmp_path}/sys")
    files = {"proc/self/mountinfo": text, **{f"proc/{k}": v for k, v in proc.items()},
             **{f"sys/{k}": v for k, v in sys_files.items()}}
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return cgroups.Cgroups(proc_root=str(tmp_path / "proc"))


def test_cpu_seconds_v1_of_a_pid_and_a_path(tmp_path):
    cg = fake_host(tmp_path, "mountinfo_v1_hybrid.txt",
                   {"4242/cgroup": recorded("proc_pid_cgroup_v1_cgroupfs.txt")},
                   {f"cpuacct/docker/{CONTAINER_ID}/cpuacct.usage":
                    recorded("cpuacct.usage_v1.txt")})
    assert cg.hierarchies.version == 1
    assert cg.cpu_seconds_of_pid(4242) == pytest.approx(0.220107192)
    assert cg.cpu_seconds(f"/docker/{CONTAINER_ID}") == pytest.approx(0.220107192)
    assert cg.cpu_seconds_of_pid(4343) is None and cg.cpu_seconds_of_pid(0) is None
    assert cg.cpu_seconds("/docker/gone") is None


def test_cpu_seconds_v2_when_v1_cpuacct_is_absent(tmp_path):
    cg = fake_host(tmp_path, "mountinfo_v2_el9.txt",
                   {"77/cgroup": recorded("proc_pid_cgroup_v2_systemd.txt")},
                   {f"system.slice/docker-{CONTAINER_ID}.scope/cpu.stat":
                    recorded("cpu.stat_v2_el9.txt")})
    assert cg.hierarchies.version == 2
    assert cg.cpu_seconds_of_pid(77) == pytest.approx(1534.200125)
    for bad in ("", "docker", "/docker/../../etc", "/nothing"):
        assert cg.cpu_seconds(bad) is None


def test_cpu_seconds_v2_on_a_hybrid_host_when_cpuacct_is_unreadable(tmp_path):
    cg = fake_host(tmp_path, "mountinfo_v1_hybrid.txt", {},
                   {f"unified/docker/{CONTAINER_ID}/cpu.stat": recorded("cpu.stat_v2.txt")})
    assert cg.cpu_seconds(f"/docker/{CONTAINER_ID}") == pytest.approx(0.220107)


def test_remove_from_every_hierarchy(tmp_path):
    cg = fake_host(tmp_path, "mountinfo_v1_hybrid.txt", {}, {})
    for sub in ("cpu", "cpuacct", "pids", "systemd", "unified"):
        (tmp_path / "sys" / sub / "vac" / "docker-m1").mkdir(parents=True)
    assert cg.remove("/vac/docker-m1") == []
    assert not list(tmp_path.glob("sys/*/vac/docker-m1"))
    assert len(list(tmp_path.glob("sys/*/vac"))) == 5
    busy = tmp_path / "sys" / "memory" / "vac" / "docker-m2" / "child"
    busy.mkdir(parents=True)
    assert cg.remove("/vac/docker-m2") == [str(busy.parent)]
    for bad in ("/vac", "/", "vac/x", "/vac/../etc"):
        with pytest.raises(ValueError):
            cg.remove(bad)


# The SDK and the engine missing -------------------------------------------------------------

def test_module_imports_and_probe_explains_without_the_sdk(tmp_path):
    script = (
        "import sys\n"
        "sys.modules['docker'] = None\n"
        "from types import SimpleNamespace\n"
        "from vac.backends.docker.backend import DockerBackend\n"
        "from vac.errors import BackendUnavailable\n"
        "b = DockerBackend(SimpleNamespace(docker_url='unix:///x.sock', "
        "backend_timeout_seconds=3, factory_name='f', vac_space='s'))\n"
        "p = b.probe()\n"
        "assert not p.available, p\n"
        "print(p.reason)\n"
        "try:\n"
        "    b.list_machines()\n"
        "except BackendUnavailable as e:\n"
        "    print(e)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    reason, error = done.stdout.strip().splitlines()
    assert "pip install docker" in reason and "python3-docker" in reason
    # the setting that needs it and both packages, in one line
    assert error == ("docker: machine_model = docker is set but the Python module docker is not "
                     "installed: install python3-docker (EL9) or pip install docker")


def test_unreachable_engine_probe_and_calls(tmp_path, conf):
    pytest.importorskip("docker")
    url = f"unix://{tmp_path}/no-engine.sock"
    backend = dk.DockerBackend(conf(url=url).settings)
    start = time.monotonic()
    probe = backend.probe()
    assert time.monotonic() - start < 3
    assert not probe.available
    assert probe.reason.startswith(f"Docker engine not reachable at {url}: ")
    with pytest.raises(BackendUnavailable, match="not reachable"):
        backend.list_machines()
    with pytest.raises(BackendUnavailable):
        backend.status("factory1-03.example.com", None)


def test_capabilities_and_registry():
    from vac.backends import get_backend_class
    assert get_backend_class("docker") is dk.DockerBackend
    assert dk.DockerBackend.MODELS == frozenset({"docker"})
    caps = dk.DockerBackend.CAPABILITIES
    assert (caps.machinefeatures_url, caps.jobfeatures_url, caps.joboutputs_url) == \
        ("/etc/machinefeatures", "/etc/jobfeatures", "/var/spool/joboutputs")
    assert not caps.needs_metadata_server
