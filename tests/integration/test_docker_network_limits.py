# SPDX-License-Identifier: BSD-2-Clause
"""Container networking and per-machinetype limits on the real engine, each through
a real factory cycle (Factory.run_cycle, the real BackendPool):

- a macvlan docker_network whose parent is the host end of a veth pair, the other end in a
  network namespace the test makes: every container has its slot's IP and MAC (the engine's
  record and inside), its host name resolves to that IP inside, and the other namespace
  reaches it by that IP (ping, TCP to a listener in the payload) and sees the slot's MAC;
- a user-defined bridge docker_network works as the default bridge does (no fixed address);
- a docker_network that does not exist fails that machinetype's creation with an error naming
  machinetype and network, counted for the machine, while another machinetype is created;
- docker_ulimits and docker_pids_limit seen by the payload (ulimit, the cgroup's pids.max);
- per-machinetype mb_per_processor and processors: the engine's limits (Memory, CpuShares,
  NanoCpus), the container's cgroup and the machine's MJF agree.

Every factory has a name of its own (mv<random>), networks, namespaces and veths are named
vac-test-mv*/vtmv*, and all of it is removed in finalizers (containers first).
"""
from __future__ import annotations

import os
import random
import subprocess
import uuid

import pytest
from docker_engine import engine_ready, inspect, sdk
from dockerfactory import MT, DockerFactory
from waiting import wait_until

from vac.backends.docker.network import mac_per_endpoint

pytestmark = [pytest.mark.docker]

NET_PAYLOAD = r"""#!/bin/sh
cd "$JOBOUTPUTS"
cat /sys/class/net/eth0/address > mac
ip addr show eth0 > addr
cat /etc/hosts > hosts
hostname > hostname
hostname -i > resolved
(while :; do echo "hello from $(hostname)" | nc -l -p 7000; done) &
echo ready > ready
exec sleep 300
"""

LIMITS_PAYLOAD = r"""#!/bin/sh
cd "$JOBOUTPUTS"
ulimit -Sn > nofile_soft
ulimit -Hn > nofile_hard
ulimit -Su > nproc_soft
ulimit -Hu > nproc_hard
G=/sys/fs/cgroup
if [ -e $G/pids.max ]; then cat $G/pids.max; else cat $G/pids/pids.max; fi > pids_max
if [ -e $G/memory.max ]; then cat $G/memory.max; else cat $G/memory/memory.limit_in_bytes; fi \
    > memory
if [ -e $G/cpu.max ]; then cat $G/cpu.max
else echo "$(cat $G/cpu/cpu.cfs_quota_us) $(cat $G/cpu/cpu.cfs_period_us)"; fi > cpu
cat "$JOBFEATURES/allocated_cpu" > allocated_cpu
cat "$JOBFEATURES/max_rss_bytes" > max_rss_bytes
echo ready > ready
exec sleep 300
"""


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, timeout=30)


class Macvlan:
    """A namespace with one end of a veth pair (the 'other host' at .254) and a Docker macvlan
    network on the host end: subnet 10.231.N.0/24, range 10.231.N.32/27, gateway .254. (Not
    ipvlan: this host's kernel has no ipvlan links; its addresses are unit-tested.)"""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.ns, self.host_end, self.peer_end = f"vac-test-mv{tag}", f"vtmv{tag}h", f"vtmv{tag}p"
        self.network = f"vac-test-mv{tag}"
        self.octet = random.randint(1, 250)
        self.subnet = f"10.231.{self.octet}.0/24"
        self.peer_ip = f"10.231.{self.octet}.254"
        self.made = []

    def up(self) -> None:
        run("ip", "netns", "add", self.ns)
        self.made.append("netns")
        run("ip", "link", "add", self.host_end, "type", "veth", "peer", "name", self.peer_end)
        self.made.append("veth")
        run("ip", "link", "set", self.peer_end, "netns", self.ns)
        run("ip", "link", "set", self.host_end, "up")
        run("ip", "-n", self.ns, "addr", "add", f"{self.peer_ip}/24", "dev", self.peer_end)
        run("ip", "-n", self.ns, "link", "set", self.peer_end, "up")
        run("ip", "-n", self.ns, "link", "set", "lo", "up")
        import docker
        pool = docker.types.IPAMPool(subnet=self.subnet, gateway=self.peer_ip,
                                     iprange=f"10.231.{self.octet}.32/27")
        sdk().create_network(self.network, driver="macvlan", options={"parent": self.host_end},
                             ipam=docker.types.IPAMConfig(pool_configs=[pool]))
        self.made.append("network")

    def slot_ip(self, ordinal: int) -> str:
        """Computed here, not by Vac: the ordinal-th address of the range .32/27."""
        return f"10.231.{self.octet}.{32 + ordinal}"

    def slot_mac(self, ordinal: int) -> str:
        return f"56:4D:0A:E7:{self.octet:02X}:{32 + ordinal:02X}"

    def down(self) -> None:
        if "network" in self.made:
            run("docker", "network", "rm", self.network, check=False)
        if "veth" in self.made:
            run("ip", "link", "del", self.host_end, check=False)
        if "netns" in self.made:
            run("ip", "netns", "del", self.ns, check=False)

    def in_ns(self, *argv: str) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.ns, *argv, check=False)


def require_netns() -> None:
    from testbed import require_engine
    if os.geteuid() != 0:
        require_engine("network namespaces", False, "needs root")
    probe = f"vac-test-mvprobe{os.getpid()}"
    made = run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        require_engine("network namespaces", False, made.stderr.strip() or "ip netns add")
    run("ip", "netns", "del", probe, check=False)
    if not os.path.exists("/bin/busybox"):
        pytest.fail("/bin/busybox missing (the peer's ping and nc): scripts/ci/setup-docker.sh")


@pytest.fixture
def mvdock(tmp_path, make_config):
    engine_ready()
    world = DockerFactory(tmp_path, make_config)
    world.name = f"mv{uuid.uuid4().hex[:8]}.example.com"
    yield world
    world.remove_all()


@pytest.fixture
def macvlan(mvdock):
    require_netns()
    net = Macvlan()
    try:
        net.up()
        yield net
    finally:
        mvdock.remove_all()         # a network with containers cannot be removed
        net.down()


def out(world: DockerFactory, name: str, key: str) -> str:
    return (world.dir(name).read(f"joboutputs/{key}") or "").strip()


def ready(world: DockerFactory, names) -> bool:
    return all(out(world, n, "ready") == "ready" for n in names)


# Networking ---------------------------------------------------------------------------------

def test_macvlan_containers_have_their_slots_ip_and_mac_and_are_reached_from_another_host(
        mvdock, macvlan):
    mvdock.write(NET_PAYLOAD, slots=2, extra_mt=f"docker_network = {macvlan.network}")
    report = mvdock.cycle()
    names = mvdock.slots(2)
    assert sorted(report.created) == names and report.errors == [], report
    assert wait_until(lambda: ready(mvdock, names)), [mvdock.dir(n).path for n in names]
    for n, name in enumerate(names):
        ip, mac = macvlan.slot_ip(n), macvlan.slot_mac(n)
        record = mvdock.dir(name).read_backend_record()
        assert (record["network"], record["ip"], record["mac"]) == (macvlan.network, ip, mac)
        attrs = inspect(record["container_id"])
        assert attrs["HostConfig"]["NetworkMode"] == macvlan.network
        endpoint = attrs["NetworkSettings"]["Networks"][macvlan.network]
        assert endpoint["IPAddress"] == ip and endpoint["MacAddress"].upper() == mac
        assert endpoint["IPAMConfig"]["IPv4Address"] == ip      # asked for, not allocated
        if not mac_per_endpoint(sdk().api_version):       # below API 1.44: in the Config
            assert attrs["Config"]["MacAddress"].upper() == mac
        assert list(attrs["NetworkSettings"]["Networks"]) == [macvlan.network]
        # Inside: the interface, /etc/hosts and the resolver.
        assert out(mvdock, name, "mac").upper() == mac
        assert f"inet {ip}/24" in out(mvdock, name, "addr")
        assert out(mvdock, name, "hostname") == name
        hosts = [line.split() for line in out(mvdock, name, "hosts").splitlines()]
        assert [ip, name, name.split(".")[0]] in hosts
        assert out(mvdock, name, "resolved") == ip
        # From the other namespace, by IP: ping, TCP, and the neighbour table has the MAC.
        ping = macvlan.in_ns("/bin/busybox", "ping", "-c", "1", "-W", "3", ip)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        tcp = macvlan.in_ns("/bin/busybox", "nc", "-w", "5", ip, "7000")
        assert tcp.stdout.strip() == f"hello from {name}", tcp
        neigh = macvlan.in_ns("ip", "neigh", "show", ip).stdout
        assert mac.lower() in neigh, neigh
    again = mvdock.cycle()      # running machines on the network are left alone
    assert again.created == again.destroyed == again.zombies == again.errors == []


def test_a_bridge_docker_network_works_as_the_default_bridge(mvdock):
    network = f"vac-test-mvbr{uuid.uuid4().hex[:6]}"
    sdk().create_network(network, driver="bridge")
    try:
        mvdock.write(NET_PAYLOAD, slots=2, extra_mt=f"docker_network = {network}")
        report = mvdock.cycle()
        names = mvdock.slots(2)
        assert sorted(report.created) == names and report.errors == [], report
        assert wait_until(lambda: ready(mvdock, names))
        for name in names:
            attrs = inspect(mvdock.dir(name).read_backend_record()["container_id"])
            assert attrs["HostConfig"]["NetworkMode"] == network
            assert not attrs["Config"].get("MacAddress")
            ip = attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
            assert ip and out(mvdock, name, "resolved") == ip
    finally:
        mvdock.remove_all()
        run("docker", "network", "rm", network, check=False)


def test_a_missing_network_fails_its_machines_creation_and_the_others_go_on(mvdock):
    absent = f"vac-test-mv-absent-{uuid.uuid4().hex[:6]}"
    other = (f"\n[machinetype plain]\nmachine_model = docker\n"
             f"root_image = docker://vac-test/busybox:1\nuser_data = {mvdock.user_data}\n"
             f"target_share = 1\ndocker_pids_limit = 200\n")
    mvdock.write(NET_PAYLOAD, slots=2, extra_mt=f"docker_network = {absent}\n{other}")
    report = mvdock.cycle()
    failed = [n for n in mvdock.slots(2) if mvdock.dir(n).machinetype == MT]
    assert failed, "the planner chose no machine of the networked machinetype"
    says = f"machinetype {MT}: docker_network {absent} does not exist"
    for name in failed:
        assert says in report.machine_errors[name], report
        assert mvdock.dir(name).shutdown_message.startswith("700 Vac: creation failed:")
        assert says in mvdock.dir(name).shutdown_message
    assert any(says in e for e in report.errors)
    made = mvdock.containers()
    assert set(made) == {n for n in report.created}
    assert all(mvdock.dir(n).machinetype == "plain" for n in made)
    assert made, "the other machinetype was not created"


# Limits -------------------------------------------------------------------------------------

def test_ulimits_and_pids_limit_are_what_the_payload_sees(mvdock):
    mvdock.write(LIMITS_PAYLOAD, slots=1,
                 extra_mt="docker_ulimits = nofile=4242:8484 nproc=777:888\n"
                          "docker_pids_limit = 123")
    report = mvdock.cycle()
    [name] = mvdock.slots(1)
    assert report.created == [name] and report.errors == [], report
    assert wait_until(lambda: ready(mvdock, [name]))
    assert (out(mvdock, name, "nofile_soft"), out(mvdock, name, "nofile_hard")) == \
        ("4242", "8484")
    assert (out(mvdock, name, "nproc_soft"), out(mvdock, name, "nproc_hard")) == ("777", "888")
    assert out(mvdock, name, "pids_max") == "123"
    hc = inspect(mvdock.dir(name).read_backend_record()["container_id"])["HostConfig"]
    assert sorted((u["Name"], u["Soft"], u["Hard"]) for u in hc["Ulimits"]) == \
        [("nofile", 4242, 8484), ("nproc", 777, 888)]
    assert hc["PidsLimit"] == 123


def test_per_machinetype_processors_and_memory_are_what_the_machine_gets_and_mjf_says(mvdock):
    big = (f"\n[machinetype big]\nmachine_model = docker\n"
           f"root_image = docker://vac-test/busybox:1\nuser_data = {mvdock.user_data}\n"
           f"target_share = 1\nmin_processors = 2\nmax_processors = 2\n"
           f"mb_per_processor = 96\ndocker_hard_cpu = true\n")
    mvdock.write(LIMITS_PAYLOAD, slots=4, mb=64,
                 extra_settings="processors_per_superslot = 2", extra_mt=big)
    report = mvdock.cycle()
    assert report.created and report.errors == [], report
    names = report.created
    assert wait_until(lambda: ready(mvdock, names))
    sizes = {"big": (2, 96, True), MT: (1, 64, False)}
    seen = set()
    for name in names:
        d = mvdock.dir(name)
        processors, mb, hard_cpu = sizes[d.machinetype]
        seen.add(d.machinetype)
        memory = processors * mb * 1024 * 1024
        hc = inspect(d.read_backend_record()["container_id"])["HostConfig"]
        assert hc["Memory"] == memory and hc["CpuShares"] == 1024 * processors
        assert hc["NanoCpus"] == (processors * 10**9 if hard_cpu else 0)
        assert d.read("jobfeatures/allocated_cpu") == f"{processors}\n"
        assert d.read("machinefeatures/total_cpu") == str(processors)
        assert d.read("jobfeatures/max_rss_bytes") == str(memory)
        assert out(mvdock, name, "allocated_cpu") == str(processors)
        assert out(mvdock, name, "max_rss_bytes") == str(memory)
        assert out(mvdock, name, "memory") == str(memory)
        if hard_cpu:
            quota, period = out(mvdock, name, "cpu").split()
            assert int(quota) == processors * int(period)
        assert d.read_backend_record()["memory_mb"] == processors * mb
    assert seen == {"big", MT}, seen     # shares 1:1 over 4 processors: one big, two small
    # The next cycle counts each machine's processors as MJF gave them: 4 of 4, none created.
    again = mvdock.cycle()
    assert again.created == [] and again.errors == [], again
    counts = open(mvdock.load().settings.paths.counts).read().split()
    assert int(counts[2]) == sum(sizes[mvdock.dir(n).machinetype][0] for n in names) == 4


# vac doctor ---------------------------------------------------------------------------------

def test_doctor_checks_that_the_network_exists_and_has_an_address_for_every_slot(mvdock,
                                                                               macvlan):
    from vac.backends.docker.checks import docker_network
    from vac.ops.checks import FAIL, OK

    mvdock.write(NET_PAYLOAD, slots=2, extra_mt=f"docker_network = {macvlan.network}")
    config = mvdock.load()
    found = docker_network(config.machinetypes[MT], config.settings)
    assert (found.status, found.detail) == \
        (OK, f"{macvlan.network}: macvlan (slot 1: {macvlan.slot_ip(1)})")
    mvdock.write(NET_PAYLOAD, slots=33, extra_mt=f"docker_network = {macvlan.network}")
    config = mvdock.load()
    found = docker_network(config.machinetypes[MT], config.settings)     # the range has 32
    assert found.status == FAIL and "slot 32 has no address in 10.231." in found.detail
    mvdock.write(NET_PAYLOAD, slots=1, extra_mt="docker_network = vac-test-mv-absent")
    config = mvdock.load()
    found = docker_network(config.machinetypes[MT], config.settings)
    assert (found.status, found.detail) == \
        (FAIL, "docker_network vac-test-mv-absent does not exist")
