# SPDX-License-Identifier: BSD-2-Clause
"""Rootless Podman's own parts: podman_user in the configuration (checked, and podman_url then
that user's socket), the subordinate ranges, the host config a rootless container gets
(user namespace nomap, no cgroup parent, read-write binds handed to the container's root,
unreachable sources refused), the limits `podman info` says apply (none on cgroup v1, never
claimed), CPU seconds of a process tree from /proc, and vac doctor's rootless lines."""
from __future__ import annotations

import os
import pwd
import shutil
import tempfile

import pytest

from vac.backends.checks import FAIL, OK, WARN
from vac.backends.podman import rootless, rootlesschecks
from vac.backends.podman.backend import PodmanBackend
from vac.errors import BackendError, ConfigError
from vac.host.facts import HostFacts

CONF = """
[settings]
vac_space = s.example.com
{extra}
[machinetype p]
machine_model = podman
root_image = docker://registry.example.com/payload:1
target_share = 1
"""
V1_ROOTLESS = {"cgroupVersion": "v1", "cgroupManager": "cgroupfs", "cgroupControllers": []}
V2_DELEGATED = {"cgroupVersion": "v2", "cgroupManager": "systemd",
                "cgroupControllers": ["cpu", "io", "memory", "pids"]}


def facts(**users):
    return HostFacts(fqdn="f1.example.com", processors=4, uid_of=users.get,
                     vg_exists=lambda name: False)


def test_podman_user_makes_podman_url_that_users_socket(make_config):
    conf = make_config(CONF.format(extra="podman_user = vacpodman"),
                       host_facts=facts(vacpodman=994))
    assert conf.settings.podman_user == "vacpodman"
    assert conf.settings.podman_url == "unix:///run/user/994/podman/podman.sock"
    assert conf.settings.origins["podman_url"] == "podman_user vacpodman's socket"


def test_a_podman_url_given_is_kept_with_podman_user(make_config):
    conf = make_config(CONF.format(extra="podman_user = vacpodman\n"
                                         "podman_url = unix:///srv/p.sock"),
                       host_facts=facts(vacpodman=994))
    assert conf.settings.podman_url == "unix:///srv/p.sock"


def test_without_podman_user_podman_is_rootful(make_config):
    conf = make_config(CONF.format(extra=""))
    assert conf.settings.podman_user is None
    assert conf.settings.podman_url == "unix:///run/podman/podman.sock"


@pytest.mark.parametrize("users, message", [
    ({}, "user 'vacpodman' does not exist"),
    ({"vacpodman": 0}, "user 'vacpodman' is root; leave podman_user unset"),
])
def test_a_missing_or_root_podman_user_is_refused(make_config, users, message):
    with pytest.raises(ConfigError, match=message) as e:
        make_config(CONF.format(extra="podman_user = vacpodman"), host_facts=facts(**users))
    assert "podman_user" in str(e.value)


def test_sub_range_finds_the_users_first_range_by_name_or_uid(tmp_path):
    f = tmp_path / "subuid"
    f.write_text("other:100000:65536\nbad line\nvacpodman:x:1\n994:200000:65536\n"
                 "vacpodman:300000:10\n")
    assert rootless.sub_range(str(f), "vacpodman", 994) == (200000, 65536)
    assert rootless.sub_range(str(f), "nobody", 12345) is None
    assert rootless.sub_range(str(tmp_path / "none"), "vacpodman", 994) is None


def test_resolve_names_what_is_missing(tmp_path):
    me = pwd.getpwuid(os.getuid())
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(BackendError, match="does not exist"):
        rootless.resolve("no-such-user-q7")
    if me.pw_uid == 0:
        with pytest.raises(BackendError, match="is root"):
            rootless.resolve(me.pw_name)
        return
    with pytest.raises(BackendError, match=f"no range in {empty}"):
        rootless.resolve(me.pw_name, str(empty), str(empty))


def _rootless(tmp_path) -> rootless.Rootless:
    return rootless.Rootless("vacpodman", os.getuid(), os.getgid(),
                             (os.getuid(), 65536), (os.getgid(), 65536))


def test_prepare_gives_nomap_no_parent_and_hands_rw_binds(tmp_path):
    rw, ro = tmp_path / "joboutputs", tmp_path / "machinefeatures"
    rw.mkdir()
    ro.mkdir()
    os.chmod(tmp_path, 0o755)
    host_config = {"CgroupParent": "/vac/docker-x", "Memory": 1,
                   "Mounts": [{"Source": str(rw), "Target": "/j", "ReadOnly": False},
                              {"Source": str(ro), "Target": "/m", "ReadOnly": True}]}
    found = rootless.prepare(_rootless(tmp_path), host_config, "m1")
    assert found["UsernsMode"] == "nomap" and "CgroupParent" not in found
    assert found["LogConfig"] == {"Type": "k8s-file", "Config": {}}   # readable by the user
    assert found["Memory"] == 1 and host_config["CgroupParent"] == "/vac/docker-x"


def test_prepare_refuses_a_source_the_user_cannot_reach(tmp_path):
    closed = tmp_path / "closed"
    (closed / "jo").mkdir(parents=True)
    os.chmod(closed, 0o700)
    other = rootless.Rootless("vacpodman", 54321, 54321, (66000000, 65536), (66000000, 65536))
    with pytest.raises(BackendError, match=f"podman_user vacpodman cannot reach .*{closed} "
                                           f"is not searchable"):
        rootless.prepare(other, {"Mounts": [{"Source": str(closed / "jo"),
                                             "ReadOnly": True}]}, "m1")


def test_limits_are_applied_only_where_podman_info_lists_the_controllers():
    assert rootless.limits_applied(V1_ROOTLESS) == []
    assert "memory, cpu, pids limits NOT applied (cgroup v1" in \
        rootless.limits_text(V1_ROOTLESS)
    assert rootless.limits_applied(V2_DELEGATED) == ["memory", "cpu", "pids"]
    assert rootless.limits_text(V2_DELEGATED).startswith("memory, cpu and pids limits applied")
    assert rootless.limits_applied({"cgroupControllers": "memory"}) == []
    assert rootless.limits_applied({}) == []


class FakeApi:
    base_url = "http+docker://localhost"
    timeout = 5

    def __init__(self, host):
        self.host = host

    def get(self, url, timeout=None):
        assert url.endswith("/libpod/info")
        host = self.host

        class Reply:
            def raise_for_status(self):
                if host is None:
                    raise OSError("404")

            def json(self):
                return {"host": host}
        return Reply()


def test_doctor_never_says_ok_for_limits_rootless_v1_does_not_apply():
    line = rootlesschecks.limits_line("unix:///x", FakeApi(V1_ROOTLESS))
    assert line.status == WARN and "NOT applied" in line.detail
    assert rootlesschecks.limits_line("unix:///x", FakeApi(V2_DELEGATED)).status == OK
    assert rootlesschecks.limits_line("unix:///x", FakeApi(None)).status == WARN


def test_doctor_names_a_missing_user_range_and_socket(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("")
    assert rootlesschecks.user_lines("no-such-user-q7")[0].status == FAIL
    me = pwd.getpwuid(os.getuid()).pw_name
    lines = rootlesschecks.user_lines(me, str(empty), str(empty))
    if os.getuid() == 0:
        assert lines[0].status == FAIL and "is root" in lines[0].detail
    else:
        assert [c.status for c in lines] == [OK, FAIL, FAIL]
        assert "no range in" in lines[1].detail and "usermod --add-subuids" in lines[1].fix
    gone = f"unix://{tmp_path}/podman.sock"
    line = rootlesschecks.service_line(me, gone)
    assert line.status == FAIL and "no Podman API socket" in line.detail
    assert "podman system service --time=0 " + gone in line.fix


def test_tree_cpu_seconds_sums_a_process_and_its_descendants(tmp_path):
    def stat(pid, ppid, utime, stime, cutime, cstime):
        d = tmp_path / str(pid)
        d.mkdir()
        fields = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime), str(cutime),
                                                 str(cstime)] + ["0"] * 10
        (d / "stat").write_text(f"{pid} (a (b) c) " + " ".join(fields) + "\n")
    hz = os.sysconf("SC_CLK_TCK")
    stat(10, 1, hz, hz, 0, 0)          # the container's first process
    stat(11, 10, hz, 0, hz, 0)         # its child, which reaped one of its own
    stat(12, 11, 0, hz, 0, 0)
    stat(20, 1, 100 * hz, 0, 0, 0)     # not in the tree
    (tmp_path / "self").mkdir()
    assert rootless.tree_cpu_seconds(10, str(tmp_path)) == pytest.approx(5.0)
    assert rootless.tree_cpu_seconds(99, str(tmp_path)) is None


def test_a_rootless_backend_has_no_cgroup_parent(make_config):
    conf = make_config(CONF.format(extra="podman_user = vacpodman"),
                       host_facts=facts(vacpodman=994))
    backend = PodmanBackend(conf.settings)
    assert backend.user == "vacpodman" and backend._cgroup_driver() == ""
    assert backend.url == "unix:///run/user/994/podman/podman.sock"


@pytest.fixture
def open_dir():
    """A directory every user can search (pytest's own tmp is closed to others)."""
    top = tempfile.mkdtemp(prefix="vac-rootless-unit-", dir="/var/tmp")
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def test_doctor_says_when_the_machine_directories_are_out_of_reach(open_dir):
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody here")
    ranges = os.path.join(open_dir, "subids")
    with open(ranges, "w") as f:
        f.write("nobody:66000000:65536\n")
    closed = os.path.join(open_dir, "closed")
    os.makedirs(os.path.join(closed, "machines"))
    os.chmod(closed, 0o700)
    line = rootlesschecks.reach_line("nobody", os.path.join(closed, "machines"), ranges, ranges)
    assert line.status == FAIL and line.fix == f"chmod o+x {closed}", line
    assert "nobody cannot reach" in line.detail
    later = os.path.join(open_dir, "state", "machines")      # not made yet: vacd makes it 0755
    line = rootlesschecks.reach_line("nobody", later, ranges, ranges)
    assert line.status == OK and "uid 66000000" in line.detail, line


def test_rootless_containers_are_created_one_at_a_time(tmp_path, monkeypatch):
    """libsubid in the user's Podman service is not safe for two creations at once (it has
    crashed the service): concurrent create_container calls reach it one after the other,
    and a rootful engine's are not held back."""
    import threading
    import time as clock

    from vac.backends.podman import backend as pb

    monkeypatch.setattr(rootless, "prepare", lambda found, host_config, name: host_config)

    class Api:
        def __init__(self):
            self.inside, self.most = 0, 0
            self.lock = threading.Lock()

        def create_container(self, *args, **kwargs):
            with self.lock:
                self.inside += 1
                self.most = max(self.most, self.inside)
            clock.sleep(0.5)     # long beside starting six threads, however busy the host
            with self.lock:
                self.inside -= 1
            return {"Id": kwargs["name"]}

    def most_at_once(found) -> int:
        api = Api()
        client = pb.CompatClient(api, found)
        threads = [threading.Thread(target=client.create_container,
                                    kwargs={"name": f"c{i}", "host_config": {}})
                   for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return api.most

    assert most_at_once(_rootless(tmp_path)) == 1
    assert most_at_once(None) > 1
