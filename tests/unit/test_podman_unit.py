# SPDX-License-Identifier: BSD-2-Clause
"""The Podman backend's own parts: registration of machine_model podman, its configuration
(podman_url, podman_parallel_creations, docker:// images), errors named podman, and the
probe's reading of Podman's /version (conmon's cgroups: test_podman_conmon.py)."""
from __future__ import annotations

import pytest

from vac.backends import backend_for_model, get_backend_class
from vac.backends.podman import backend as pb
from vac.errors import BackendError, BackendUnavailable, ConfigError


def test_machine_model_podman_is_served_by_the_podman_backend():
    assert backend_for_model("podman") == "podman"
    cls = get_backend_class("podman")
    assert cls is pb.PodmanBackend and cls.MODELS == frozenset({"podman"})
    assert cls.NAME == "podman"


def test_configuration_of_a_podman_machinetype(make_config):
    conf = make_config("""
        [settings]
        vac_space = s.example.com
        podman_parallel_creations = 2
        [machinetype p]
        machine_model = podman
        root_image = docker://registry.example.com/payload:1
        target_share = 1
        """)
    assert conf.settings.podman_url == "unix:///run/podman/podman.sock"
    assert conf.settings.podman_parallel_creations == 2
    backend = pb.PodmanBackend(conf.settings)
    assert backend.url == "unix:///run/podman/podman.sock"
    assert backend.parallel_creations() == 2
    assert backend.images.status_path().endswith("/podman-images.json")


@pytest.mark.parametrize("image, message", [
    ("", "machine_model podman needs a root_image (docker://IMAGE:TAG)"),
    ("/images/x.sif", "machine_model podman needs a root_image starting docker://"),
])
def test_a_podman_machinetype_needs_a_docker_image(make_config, image, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config(f"""
            [settings]
            vac_space = s.example.com
            [machinetype p]
            machine_model = podman
            root_image = {image}
            target_share = 1
            """)


def test_podman_parallel_creations_must_be_positive(make_config):
    with pytest.raises(ConfigError, match="podman_parallel_creations: must be at least 1"):
        make_config("[settings]\nvac_space = s.example.com\npodman_parallel_creations = 0\n")


def test_errors_of_the_docker_code_are_named_podman():
    with pytest.raises(BackendUnavailable) as e:
        with pb.renamed():
            raise BackendUnavailable("docker", "engine gone", "m-01.example.com")
    assert e.value.backend == "podman" and e.value.machine == "m-01.example.com"
    assert str(e.value) == "podman m-01.example.com: engine gone"
    with pytest.raises(BackendError) as e:
        with pb.renamed():
            raise BackendError("docker", "cannot start container: x")
    assert type(e.value) is BackendError and str(e.value) == "podman: cannot start container: x"
    with pytest.raises(BackendError) as e:
        with pb.renamed():
            raise BackendError("libvirt", "not ours")
    assert e.value.backend == "libvirt"


def test_the_probe_knows_podman_by_its_version_components():
    podman = {"Components": [{"Name": "Conmon", "Version": "2.1.6"},
                             {"Name": "Podman Engine", "Version": "4.3.1"}],
              "ApiVersion": "1.41"}
    assert pb.engine_of(podman) == "Podman 4.3.1"
    docker = {"Components": [{"Name": "Engine", "Version": "24.0.5"}], "Version": "24.0.5"}
    assert pb.engine_of(docker) == ""
    for garbled in (None, {}, {"Components": "x"}, {"Components": [1, "a", None]}):
        assert pb.engine_of(garbled) == ""


def test_the_watcher_picks_the_die_events_of_containers():
    from vac.backends.podman.watch import ended_machine

    die = {"Type": "container", "Action": "die",
           "Actor": {"Attributes": {"vac.machine": "m-01.example.com", "name": "x"}}}
    assert ended_machine(die) == "m-01.example.com"
    assert ended_machine({**die, "Action": None, "status": "die"}) == "m-01.example.com"
    for other in ({**die, "Action": "start"}, {**die, "Type": "image"}, {**die, "Actor": None},
                  {**die, "Actor": {"Attributes": "x"}}, None, "die", {}):
        assert ended_machine(other) == "", other


def test_doctor_says_podman_oom_kills_are_not_seen_on_cgroup_v1():
    from vac.backends.podman.checks import podman_oom
    from vac.ops.checks import OK, WARN

    v1 = podman_oom(1)
    assert v1.name == "podman-oom" and v1.status == WARN and "not seen" in v1.detail
    assert podman_oom(2).status == OK


def test_doctor_asks_podman_for_images_at_podman_url(make_config):
    from vac.backends.podman import checks as podmanchecks
    from vac.ops import backendchecks
    from vac.ops.checks import FAIL

    conf = make_config("""
        [settings]
        vac_space = s.example.com
        podman_url = unix:///nonexistent/vac-doctor/podman.sock
        [machinetype p]
        machine_model = podman
        root_image = docker://registry.example.com/payload:1
        target_share = 1
        """)
    lines = backendchecks.for_backend("podman", list(conf.machinetypes.values()),
                                      conf.settings)
    assert lines[0].name == "podman-engine" and lines[0].status == FAIL
    assert "Podman API not reachable at unix:///nonexistent/vac-doctor/podman.sock" in \
        lines[0].detail
    assert lines[0].fix == podmanchecks.ENGINE_FIX
    assert [c.name for c in lines[1:]] == ["image p", "podman-oom"]


class _Api:
    """An APIClient stand-in answering with Podman 4.3's 500s, as many times as told."""

    def __init__(self, explanation: str, failures: int):
        self.explanation, self.failures, self.calls = explanation, failures, 0

    def _answer(self):
        import docker
        import requests

        self.calls += 1
        if self.calls <= self.failures:
            response = requests.Response()
            response.status_code = 500
            raise docker.errors.APIError("500 Server Error", response, self.explanation)
        return "done"

    def create_container(self, *args, **kwargs):
        return self._answer()

    def remove_container(self, *args, **kwargs):
        return self._answer()


def test_podmans_500_for_a_name_in_use_is_dockers_409():
    import docker

    api = _Api("the container name \"x\" is already in use by abc", failures=1)
    with pytest.raises(docker.errors.APIError) as e:
        pb.CompatClient(api).create_container("image", name="x")
    assert e.value.status_code == 409


def test_a_forced_removal_meeting_a_stopping_container_is_asked_once_more():
    import docker

    improper = "cannot remove container abc as it could not be stopped: sending SIGKILL to " \
               "container abc: container state improper: stopped"
    api = _Api(improper, failures=1)
    assert pb.CompatClient(api).remove_container("abc", force=True) == "done"
    assert api.calls == 2
    other = _Api("no such container", failures=1)
    with pytest.raises(docker.errors.APIError):
        pb.CompatClient(other).remove_container("abc", force=True)
    assert other.calls == 1
