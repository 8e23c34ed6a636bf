# SPDX-License-Identifier: BSD-2-Clause
"""Container networking and per-machinetype limits without an engine: a slot's
address and MAC on a network, docker_ulimits parsing, the checks of `vac config check` with
located errors, the per-machinetype memory in the spec and the MJF, and what is asked of the
engine (network, ulimits, MAC per API version)."""
from __future__ import annotations

import pytest

from vac.backends.base import MachineSpec
from vac.backends.docker import network as dn
from vac.backends.docker import spec as ds
from vac.backends.docker.backend import DockerBackend
from vac.config import limits
from vac.errors import BackendError, ConfigError
from vac.machine.directory import MachineDir
from vac.machine.mjf import MjfContext, mjf_values
from vac.machine.slots import Slot, address_on, mac_of, machine_name

CONF = """
[settings]
vac_space = space.example.com
factory_name = factory1.example.com
mb_per_processor = 1000

[machinetype dock]
machine_model = docker
root_image = docker://vac-test/busybox:1
target_share = 1
{extra}

[machinetype other]
machine_model = docker
root_image = docker://vac-test/busybox:1
target_share = 1
"""

MACVLAN = {"Name": "vac-mv", "Driver": "macvlan",
           "IPAM": {"Config": [{"Subnet": "fd00:1::/64"},
                               {"Subnet": "10.231.0.0/24", "Gateway": "10.231.0.1"}]}}


def problems(excinfo) -> list:
    return [str(p) for p in excinfo.value.problems]


@pytest.fixture
def conf(make_config):
    def build(extra: str = ""):
        return make_config(CONF.format(extra=extra))
    return build


def make_spec(paths, config, ordinal: int = 3, processors: int = 2,
              mt: str = "dock") -> MachineSpec:
    settings, machinetype = config.settings, config.machinetypes[mt]
    name = machine_name(settings.factory_name, ordinal)
    directory = MachineDir.create(paths, 1700000000, machinetype.name, name)
    return MachineSpec(name=name, machinetype=machinetype, settings=settings,
                       slot=Slot(ordinal, name), processors=processors,
                       memory_mb=machinetype.mb_per_processor * processors,
                       created=1700000000, shutdown_time=1700003600, uuid="uuid-1",
                       directory=directory)


# A slot's address and MAC on a network ------------------------------------------------------

def test_a_network_like_the_vms_gives_every_slot_the_vm_address_and_mac():
    for n in range(253):
        ip = address_on(n, "169.254.0.0/16", "169.254.169.0/24", "169.254.169.253")
        assert ip == Slot(n, "").ip
        assert mac_of(ip) == Slot(n, "").mac
    assert Slot(5, "").mac == "56:4D:A9:FE:A9:05"


def test_slot_addresses_skip_network_broadcast_and_gateway():
    subnet = "10.231.0.0/24"
    assert address_on(0, subnet, gateway="10.231.0.1") == "10.231.0.2"
    assert address_on(1, subnet, gateway="10.231.0.1") == "10.231.0.3"
    assert address_on(0, subnet, gateway="10.231.0.254") == "10.231.0.1"
    assert address_on(252, subnet, gateway="10.231.0.1") == "10.231.0.254"
    assert address_on(253, subnet, gateway="10.231.0.1") is None    # .255 is the broadcast
    assert address_on(0, subnet, "10.231.0.64/27", "10.231.0.1") == "10.231.0.64"
    assert address_on(31, subnet, "10.231.0.64/27", "10.231.0.1") == "10.231.0.95"
    assert address_on(32, subnet, "10.231.0.64/27", "10.231.0.1") is None
    with pytest.raises(ValueError):
        address_on(0, subnet, "10.232.0.0/27")
    assert mac_of("10.231.0.2") == "56:4D:0A:E7:00:02"


# docker_ulimits -----------------------------------------------------------------------------

def test_ulimit_words_parse_with_hard_defaulting_to_soft():
    assert limits.parse_word("nofile=1024:65536") == ("nofile", 1024, 65536)
    assert limits.parse_word("nproc=4096") == ("nproc", 4096, 4096)
    assert limits.parse_word("core=0:0") == ("core", 0, 0)
    assert limits.engine_ulimits(["nofile=65536:65536", "nproc=4096"]) == [
        {"Name": "nofile", "Soft": 65536, "Hard": 65536},
        {"Name": "nproc", "Soft": 4096, "Hard": 4096}]


@pytest.mark.parametrize("word, says", [
    ("nfile=10", "unknown ulimit 'nfile'"),
    ("NOFILE=10", "is not NAME=SOFT[:HARD]"),
    ("nofile=20:10", "soft limit 20 is more than the hard limit 10"),
    ("nofile=-1", "soft limit '-1' is not a non-negative integer"),
    ("nofile=10:-1", "hard limit '-1' is not a non-negative integer"),
    ("nofile=lots", "soft limit 'lots' is not a non-negative integer"),
    ("nofile=1.5:2", "soft limit '1.5' is not a non-negative integer"),
    ("nofile=10:20:30", "hard limit '20:30' is not a non-negative integer"),
    ("nofile", "is not NAME=SOFT[:HARD]"),
    ("nofile=", "soft limit '' is not a non-negative integer"),
])
def test_bad_ulimit_words_say_what_is_wrong(word, says):
    with pytest.raises(ValueError) as e:
        limits.parse_word(word)
    assert says in str(e.value)


def test_a_ulimit_given_twice_is_a_problem():
    good, wrong = limits.parse(["nofile=1", "nproc=2", "nofile=3"])
    assert good == (("nofile", 1, 1), ("nproc", 2, 2))
    assert wrong == ["'nofile=3': ulimit nofile is given more than once"]


# vac config check ---------------------------------------------------------------------------

def test_limits_are_checked_with_file_section_and_option(conf, tmp_path):
    with pytest.raises(ConfigError) as e:
        conf("docker_ulimits = nofile=100:10 bogus=1 nproc=x\ndocker_pids_limit = -1\n"
             "mb_per_processor = 0\ndocker_network = bad/name")
    where = f"{tmp_path / 'vac.conf'}:[machinetype dock]"
    assert sorted(problems(e)) == sorted([
        f"{where}:docker_ulimits: 'nofile=100:10': the soft limit 100 is more than the hard "
        f"limit 10",
        f"{where}:docker_ulimits: 'bogus=1': unknown ulimit 'bogus' (Docker knows: "
        f"{', '.join(limits.NAMES)})",
        f"{where}:docker_ulimits: 'nproc=x': the soft limit 'x' is not a non-negative integer",
        f"{where}:docker_pids_limit: must not be negative (0: no limit)",
        f"{where}:mb_per_processor: must be greater than 0",
        f"{where}:docker_network: 'bad/name' is not a Docker network name"])


def test_non_integer_pids_limit_and_memory_are_located(conf, tmp_path):
    with pytest.raises(ConfigError) as e:
        conf("docker_pids_limit = many\nmb_per_processor = 1.5")
    where = f"{tmp_path / 'vac.conf'}:[machinetype dock]"
    assert sorted(problems(e)) == [
        f"{where}:docker_pids_limit: 'many' is not a valid integer",
        f"{where}:mb_per_processor: '1.5' is not a valid integer"]


def test_good_limits_are_kept_canonical_and_memory_defaults_to_settings(conf, tmp_path):
    config = conf("docker_ulimits = nofile=65536 nproc=100:200\nmb_per_processor = 3000\n"
                  "docker_network = vac-test_mv.1\ndocker_pids_limit = 0")
    mt, other = config.machinetypes["dock"], config.machinetypes["other"]
    assert mt.docker_ulimits == ("nofile=65536:65536", "nproc=100:200")
    assert mt.mb_per_processor == 3000 and mt.docker_network == "vac-test_mv.1"
    assert mt.origins["mb_per_processor"] == f"{tmp_path / 'vac.conf'} [machinetype dock]"
    assert other.mb_per_processor == 1000 and other.docker_ulimits == ()
    assert other.docker_network is None
    assert other.origins["mb_per_processor"] == f"{tmp_path / 'vac.conf'} [settings]"


def test_pipes_cannot_set_limits():
    from vac.config.options import pipe_accepted
    for option in ("mb_per_processor", "docker_ulimits", "docker_network",
                   "docker_pids_limit"):
        assert not pipe_accepted(option)


# Memory and processors per machinetype: what the machine gets and what MJF says -------------

def test_mjf_memory_is_the_machinetypes(conf):
    config = conf("mb_per_processor = 3000\nmin_processors = 2\nmax_processors = 2")
    for name, mb in (("dock", 3000), ("other", 1000)):
        ctx = MjfContext(settings=config.settings, machinetype=config.machinetypes[name],
                         processors=2, shutdown_time=1700003600, now=1700000000)
        values = mjf_values(ctx)
        assert values["jobfeatures"]["max_rss_bytes"] == str(mb * 2 * 1048576)
        assert values["jobfeatures"]["mem_limit_MB"] == str(mb * 2 * 1048576 // 1000000)
        assert values["jobfeatures"]["allocated_cpu"] == "2\n"
        assert values["machinefeatures"]["total_cpu"] == "2"


def test_created_machine_gets_the_machinetypes_memory(conf, paths):
    from vac.backends.fake import FakeBackend
    from vac.cycle.creation import create_machine

    seen = []

    class Recording(FakeBackend):
        def create(self, spec):
            seen.append(spec)
            return "id-1"

    config = conf("mb_per_processor = 3000")
    backend = Recording(config.settings)
    create_machine(config.settings, config.machinetypes["dock"], Slot(0, "factory1-00"), 2,
                   1700003600, backend, 1700000000.0)
    assert seen[0].memory_mb == 6000
    d = MachineDir.for_slot(config.settings.paths, "factory1-00")
    assert d.read("jobfeatures/max_rss_bytes") == str(6000 * 1048576)


def test_host_config_has_the_ulimits_network_and_machinetype_memory(paths, conf):
    docker = pytest.importorskip("docker")
    config = conf("docker_ulimits = nofile=65536:65536 nproc=4096\ndocker_pids_limit = 77\n"
                  "mb_per_processor = 300\ndocker_network = vac-mv\ndocker_hard_cpu = true")
    spec = make_spec(paths, config, processors=2)
    args = ds.host_config_args(spec, [], None)
    assert args["network_mode"] == "vac-mv"
    hc = docker.types.HostConfig(version="1.41", **args)
    assert hc["Ulimits"] == [{"Name": "nofile", "Soft": 65536, "Hard": 65536},
                             {"Name": "nproc", "Soft": 4096, "Hard": 4096}]
    assert hc["PidsLimit"] == 77 and hc["NetworkMode"] == "vac-mv"
    assert hc["Memory"] == 600 * 1024 * 1024 and hc["NanoCpus"] == 2 * 10**9
    assert hc["CpuShares"] == 2048
    plain = ds.host_config_args(make_spec(paths, config, ordinal=4, mt="other"), [], None)
    assert "ulimits" not in plain and plain["network_mode"] == "bridge"
    assert plain["mem_limit"] == 2000 * 1024 * 1024


# The network a container joins --------------------------------------------------------------

def test_macvlan_gives_the_slots_ip_and_mac_ipvlan_its_ip_bridge_nothing():
    att = dn.attachment(MACVLAN, Slot(3, "f-03"), "dock")
    assert att == dn.Attachment("vac-mv", "macvlan", "10.231.0.5", "56:4D:0A:E7:00:05")
    ipvlan = dict(MACVLAN, Driver="ipvlan")
    assert dn.attachment(ipvlan, Slot(3, "f-03"), "dock") == \
        dn.Attachment("vac-mv", "ipvlan", "10.231.0.5", None)
    bridge = {"Name": "br", "Driver": "bridge", "IPAM": MACVLAN["IPAM"]}
    assert dn.attachment(bridge, Slot(3, "f-03"), "dock") == dn.Attachment("br", "bridge")


def test_macvlan_without_ipv4_subnet_or_room_is_a_creation_error():
    v6 = {"Name": "vac-mv", "Driver": "macvlan", "IPAM": {"Config": [{"Subnet": "fd00::/64"}]}}
    with pytest.raises(BackendError, match="machinetype dock: docker_network vac-mv "
                                           r"\(macvlan\) has no IPv4 subnet"):
        dn.attachment(v6, Slot(0, "f-00"), "dock")
    small = {"Name": "vac-mv", "Driver": "macvlan",
             "IPAM": {"Config": [{"Subnet": "10.231.0.0/24", "IPRange": "10.231.0.8/30"}]}}
    assert dn.attachment(small, Slot(3, "f-03"), "dock").ip == "10.231.0.11"
    with pytest.raises(BackendError, match="slot 4 has no address in 10.231.0.8/30"):
        dn.attachment(small, Slot(4, "f-04"), "dock")


@pytest.mark.parametrize("version, per_endpoint", [("1.41", False), ("1.43", False),
                                                   ("1.44", True), ("1.47", True),
                                                   ("2.0", True)])
def test_mac_goes_where_the_api_version_wants_it(version, per_endpoint):
    docker = pytest.importorskip("docker")
    api = docker.APIClient(base_url="unix:///nonexistent.sock", version=version)
    att = dn.attachment(MACVLAN, Slot(3, "f-03"), "dock")
    args = dn.create_args(api, att)
    config = api.create_container_config("img", ["/user_data"], **args)
    endpoint = config["NetworkingConfig"]["EndpointsConfig"]["vac-mv"]
    assert endpoint["IPAMConfig"] == {"IPv4Address": "10.231.0.5"}
    if per_endpoint:
        assert endpoint["MacAddress"] == "56:4D:0A:E7:00:05"
        assert not config.get("MacAddress")
    else:
        assert "MacAddress" not in endpoint
        assert config["MacAddress"] == "56:4D:0A:E7:00:05"
    assert dn.create_args(api, dn.Attachment("br", "bridge")) == {}
    by_id = dn.create_args(api, dn.attachment(MACVLAN, Slot(3, "f-03"), "dock", "0123abcd"))
    assert list(by_id["networking_config"]["EndpointsConfig"]) == ["0123abcd"]


class FakeApi:
    """The two calls the backend's network step makes."""

    api_version = "1.41"

    def __init__(self, networks):
        self.networks = networks

    def inspect_network(self, name):
        import docker
        if name not in self.networks:
            raise docker.errors.NotFound(f"network {name} not found")
        return self.networks[name]

    def create_endpoint_config(self, **kw):
        import docker
        return docker.types.EndpointConfig(self.api_version, **kw)

    def create_networking_config(self, endpoints):
        import docker
        return docker.types.NetworkingConfig(endpoints)


def test_a_missing_network_is_a_creation_error_naming_machinetype_and_network(paths, conf):
    pytest.importorskip("docker")
    config = conf("docker_network = vac-absent")
    spec = make_spec(paths, config)
    backend = DockerBackend(config.settings)
    with pytest.raises(BackendError) as e:
        backend._attachment(FakeApi({}), spec)
    assert "machinetype dock: docker_network vac-absent does not exist" in str(e.value)
    assert e.value.machine == spec.name
    assert backend._attachment(FakeApi({}), make_spec(paths, config, 5, mt="other")) is None
    api = FakeApi({"vac-absent": dict(MACVLAN, Name="vac-absent")})
    place = backend._attachment(api, spec)
    assert dn.create_args(api, place)["mac_address"] == "56:4D:0A:E7:00:05"
    assert dn.record(place) == {"network": "vac-absent", "ip": "10.231.0.5",
                                     "mac": "56:4D:0A:E7:00:05"}
    assert dn.record(None) == {}


def test_vac_config_check_shows_the_limits_and_rejects_bad_ones_located(tmp_path, capsys):
    import json

    from vac import cli

    conf = tmp_path / "vac.conf"
    text = CONF.format(extra="docker_ulimits = nofile=65536 nproc=10:20\nmb_per_processor = 500\n"
                             "docker_network = vac-mv")
    conf.write_text(text.replace("[settings]", f"[settings]\nstate_dir = {tmp_path}/state"))
    assert cli.main(["--config", str(conf), "config", "check", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["machinetypes"]["dock"]
    assert shown["docker_ulimits"] == {"value": ["nofile=65536:65536", "nproc=10:20"],
                                       "from": f"{conf} [machinetype dock]"}
    assert shown["mb_per_processor"] == {"value": 500, "from": f"{conf} [machinetype dock]"}
    assert shown["docker_network"]["value"] == "vac-mv"
    assert cli.main(["--config", str(conf), "config", "check"]) == 0
    out = capsys.readouterr().out
    assert "docker_ulimits           = nofile=65536:65536 nproc=10:20" in out
    conf.write_text(conf.read_text().replace("nproc=10:20", "nproc=20:10"))
    assert cli.main(["--config", str(conf), "config", "check"]) == 1
    assert (f"{conf}:12 [machinetype dock] docker_ulimits: 'nproc=20:10': the soft limit 20 is "
            f"more than the hard limit 10") in capsys.readouterr().err
