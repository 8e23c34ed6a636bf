# SPDX-License-Identifier: BSD-2-Clause
"""The declarative table of every vac.conf option: name, type, default, aliases, pipe rules."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from vac.config import models

# Kinds of value. A "bool" accepts yes/no, true/false, on/off, 1/0 in any case (booleans.py);
# its `legacy` names how the original Vac (or an earlier release of ours) read it, so a value
# that read the other way there can be pointed out:
#   "true"     only the word true (any case) was true      (user_data_proxy, legacy_proxy)
#   "yes"      only the word yes (any case) was true       (draining)
#   "notfalse" anything but the word false was true        (fix_networking)
# "words" values are white-space separated lists (they may run over several lines); every
# other kind is single-valued: one line, no inline comment.
KINDS = ("str", "int", "float", "bool", "words", "optint", "optfloat")


@dataclass(frozen=True)
class Option:
    """One vac.conf option as the parser applies it."""

    name: str
    kind: str
    default: Any = None
    aliases: Tuple[str, ...] = ()
    from_pipe: bool = False
    backend: Optional[str] = None
    help: str = ""
    legacy: Optional[str] = None
    legacy_by: str = "the original Vac"


EARLIER = "earlier releases of this Vac"

SETTINGS_OPTIONS: Tuple[Option, ...] = (
    Option("vac_space", "str", None, help="space name (required)"),
    Option("factory_name", "str", None, help="this factory's FQDN (default: host FQDN)"),
    Option("factories", "words", (), help="all factories of the space"),
    Option("udp_timeout_seconds", "float", 10.0),
    Option("mb_per_processor", "int", 2048, aliases=("mb_per_cpu",)),
    Option("hs06_per_processor", "optfloat", None, aliases=("hs06_per_cpu",)),
    Option("processors_per_superslot", "int", 1,
           aliases=("vcpu_per_machine", "cpu_per_machine")),
    Option("total_processors", "optint", None, aliases=("cpu_total",)),
    Option("host_processors", "optint", None,
           help="override the processor count read from /proc/cpuinfo (tests, benchmarks)"),
    Option("overload_per_processor", "float", 1.5, aliases=("overload_per_cpu",)),
    Option("shutdown_time", "optint", None),
    Option("draining", "bool", False, legacy="yes"),
    Option("gocdb_sitename", "str", None),
    Option("gocdb_cert_file", "str", None),
    Option("gocdb_key_file", "str", None),
    Option("description", "str", None),
    Option("version_logger", "str", "0", help="off unless set (the original: 1)"),
    Option("vacmon_hostport", "words", ()),
    Option("volume_group", "str", None),
    Option("disk_gb_per_processor", "optint", None,
           aliases=("scratch_gb", "disk_gb_per_cpu")),
    Option("root_public_key", "str", "/root/.ssh/id_rsa.pub"),
    Option("singularity_user", "str", None),
    Option("fix_networking", "bool", True, legacy="notfalse"),
    Option("forward_dev", "str", None),
    # Ours (no counterpart in the original).
    Option("state_dir", "str", "/var/lib/vac"),
    Option("cycle_seconds", "float", 60.0),
    Option("vacquery_port", "int", 995),
    Option("vacquery_address", "str", ""),
    Option("metrics_address", "str", "127.0.0.1",
           help="address of the Prometheus metrics endpoint"),
    Option("metrics_port", "optint", None,
           help="port of the Prometheus metrics endpoint (off unless set)"),
    Option("status_address", "str", "127.0.0.1",
           help="address of the status page (and its JSON API)"),
    Option("status_port", "optint", None,
           help="port of the status page (off unless set; equal to metrics_port: one "
                "listener serves both)"),
    Option("gocdb_url", "str", "https://goc.egi.eu/gocdbpi",
           help="the GOCDB programmatic interface that capacity is published to"),
    Option("max_creations_per_cycle", "int", 100),
    Option("docker_parallel_creations", "int", 16, backend="docker",
           help="containers created at once within a cycle"),
    Option("apptainer_parallel_creations", "int", 4, backend="apptainer",
           help="Apptainer machines started at once within a cycle"),
    Option("libvirt_parallel_creations", "int", 4, backend="libvirt",
           help="VMs created at once within a cycle"),
    Option("enable_fake_backend", "bool", False, backend="fake", legacy="true",
           legacy_by=EARLIER),
    Option("singularity_path", "str", "", backend="apptainer"),
    Option("docker_url", "str", "unix:///var/run/docker.sock", backend="docker"),
    Option("podman_url", "str", "unix:///run/podman/podman.sock", backend="podman",
           help="the Podman API socket (rootful: podman.socket's)"),
    Option("podman_user", "str", None, backend="podman",
           help="the non-root user whose rootless Podman runs podman machines (unset: the "
                "rootful Podman); podman_url then defaults to that user's socket"),
    Option("podman_parallel_creations", "int", 4, backend="podman",
           help="Podman containers created at once within a cycle"),
    Option("backend_timeout_seconds", "float", 30.0),
    Option("libvirt_uri", "str", "qemu:///system", backend="libvirt"),
    Option("libvirt_virt_type", "str", "auto", backend="libvirt"),
    Option("libvirt_shutdown_wait_seconds", "float", 30.0, backend="libvirt",
           help="seconds a VM being destroyed has to power off after the ACPI shutdown "
                "request before it is forced off"),
    Option("yield_load_per_processor", "optfloat", None,
           help="opportunistic mode (off unless set): yield to the host's owner when the load "
                "from outside Vac's machines stays above this per processor"),
    Option("yield_grace_seconds", "float", 300.0,
           help="how long the owner's load must stay above yield_load_per_processor"),
    Option("yield_pause_seconds", "float", 600.0,
           help="how long creation pauses after a machine yielded"),
    # A VM's joboutputs (PUT to the metadata service or framed on its console).
    Option("joboutputs_file_mb", "int", 1, backend="libvirt",
           help="MiB of one joboutput a VM may store (more: 413, or refused from the console)"),
    Option("joboutputs_machine_mb", "int", 16, backend="libvirt",
           help="MiB of all the joboutputs of one VM"),
    Option("joboutputs_machine_files", "int", 64, backend="libvirt",
           help="joboutputs one VM may store"),
    # Admission by pressure (PSI): per cent of the last 10 s; empty turns one off.
    Option("pressure_cpu_some", "optfloat", None,
           help="no creation while the host's cpu some avg10 (per cent) is above this"),
    Option("pressure_memory_some", "optfloat", 20.0,
           help="no creation while the host's memory some avg10 (per cent) is above this"),
    Option("pressure_io_full", "optfloat", 40.0,
           help="no creation while the host's io full avg10 (per cent) is above this"),
    Option("shed_memory_full", "optfloat", None,
           help="shedding (off unless set): destroy the youngest machine while the host's "
                "memory full avg10 (per cent) stays above this"),
    Option("shed_grace_seconds", "float", 60.0,
           help="how long memory full avg10 must stay above shed_memory_full"),
    # Admission by free disk space (the state directory, scratch pool, engines' data roots).
    Option("disk_floor_gb", "float", 0.5,
           help="no creation while a watched filesystem has less free than this many GB "
                "(or disk_floor_fraction of it, whichever is more) plus the machines' growth"),
    Option("disk_floor_fraction", "float", 0.02,
           help="the floor as a fraction of each watched filesystem's size"),
    Option("disk_overcommit", "float", 1.0,
           help="the running machines' scratch still to grow into counts divided by this"),
    # Admission by memory (off unless set): MemAvailable against the machines' limits.
    Option("memory_overcommit", "optfloat", None,
           help="admission by memory (off unless set, at least 1): a machine is created only "
                "if MemAvailable times this covers its memory limit plus what the running "
                "machines may still take up to theirs"),
)

# The pressure thresholds: (option, resource, line of its pressure file).
PRESSURE_OPTIONS = (("pressure_cpu_some", "cpu", "some"),
                    ("pressure_memory_some", "memory", "some"),
                    ("pressure_io_full", "io", "full"))

# Options that the original accepted only to warn about; they have no effect.
SETTINGS_OBSOLETE = ("domain_type", "total_machines", "delete_old_files")

MACHINETYPE_OPTIONS: Tuple[Option, ...] = (
    Option("target_share", "float", 0.0, from_pipe=True),
    Option("machine_model", "str", "cernvm3", aliases=("vm_model",), from_pipe=True),
    Option("root_image", "str", None, from_pipe=True),
    Option("user_data", "str", None, from_pipe=True),
    Option("user_data_proxy", "bool", False, from_pipe=True, legacy="true"),
    Option("legacy_proxy", "bool", False, from_pipe=True, legacy="true"),
    Option("backoff_seconds", "int", 10, from_pipe=True),
    Option("fizzle_seconds", "int", 600, from_pipe=True),
    Option("max_wallclock_seconds", "int", 86400, from_pipe=True),
    Option("min_wallclock_seconds", "optint", None, from_pipe=True,
           help="default: max_wallclock_seconds"),
    Option("min_processors", "int", 1, from_pipe=True),
    Option("max_processors", "int", 1, from_pipe=True),
    Option("machines_dir_days", "float", 3.0, aliases=("machineoutputs_days",)),
    Option("heartbeat_file", "str", None, from_pipe=True),
    Option("heartbeat_seconds", "int", 0, from_pipe=True),
    Option("accounting_fqan", "str", None, from_pipe=True),
    Option("machinegroup", "str", None, help="default: accounting_fqan, else the name"),
    Option("cvmfs_repositories", "words", (), from_pipe=True),
    Option("tmp_binds", "words", (), from_pipe=True),
    Option("container_command", "str", "/user_data", from_pipe=True),
    Option("disk_gb_per_processor", "optint", None, from_pipe=True),
    Option("image_signing_dn", "str", None, aliases=("cernvm_signing_dn",), from_pipe=True),
    Option("root_device", "str", "vda", from_pipe=True),
    Option("scratch_device", "str", "vdb", from_pipe=True),
    # Ours.
    Option("shutdown_message_grace_seconds", "optint", None,
           help="a machine still running this long after writing its shutdown_message is "
                "destroyed and its slot refilled (unset: never, as the original)"),
    Option("mb_per_processor", "optint", None,
           help="memory per processor of this machinetype's machines (default: [settings])"),
    Option("cgroup_delegate", "bool", True,
           help="on cgroup v2, delegate each container machine's cgroup to what runs in it "
                "(VMs need nothing; cgroup v1: accepted but not supported)"),
    # Ours: backend-specific, most named with their backend's prefix (docker_, fake_).
    Option("docker_network_mode", "str", "bridge", backend="docker"),
    Option("docker_network", "str", None, backend="docker",
           help="an existing Docker network; macvlan/ipvlan: the slot's own IP (and MAC)"),
    Option("docker_ulimits", "words", (), backend="docker",
           help="container ulimits NAME=SOFT[:HARD], e.g. nofile=65536:65536"),
    Option("docker_hard_cpu", "bool", False, backend="docker", legacy="true",
           legacy_by=EARLIER),
    Option("docker_hard_memory", "bool", True, backend="docker", legacy="notfalse",
           legacy_by=EARLIER),
    Option("docker_pids_limit", "int", 4096, backend="docker"),
    Option("docker_pull_timeout_seconds", "int", 600, backend="docker"),
    Option("docker_pull_seconds", "optint", None, backend="docker",
           help="re-resolve the image's tag from its registry at most this often, in the "
                "background (unset: pull only when missing, as the original)"),
    Option("kernel", "str", None, backend="libvirt"),
    Option("initrd", "str", None, backend="libvirt"),
    Option("cmdline", "str", None, backend="libvirt"),
    Option("smbios_product", "str", None, backend="libvirt", from_pipe=True,
           help="the VMs' SMBIOS system product name, e.g. OpenStack Nova for cloud-init"),
    Option("config_drive", "bool", True, backend="libvirt",
           help="attach the OpenStack config drive (label config-2); off: the VMs read "
                "everything from the metadata service"),
    Option("fake_run_seconds", "float", 3600.0, backend="fake"),
    Option("fake_create_error", "str", None, backend="fake"),
    Option("fake_cpu_per_second", "float", 0.5, backend="fake"),
    Option("fake_shutdown_message", "str", None, backend="fake"),
)

# Per-machinetype options that the original accepted only to warn about.
MACHINETYPE_OBSOLETE = ("rootpublickey", "root_public_key", "log_machineoutputs",
                        "user_data_proxy_cert", "user_data_proxy_key")

# Prefixes of option families; the part after the prefix must match [a-z0-9_]+.
USER_DATA_OPTION = "user_data_option_"
USER_DATA_FILE = "user_data_file_"
MACHINEFEATURES_OPTION = "machinefeatures_option_"

# Options whose value is free text: an inline " #" may be meant.
FREE_TEXT = ("description",)

# The kinds of section vac.conf may have (factories and targetshares: the original's, refused
# with the way to say it now).
SECTION_KINDS = ("settings", "machinetype", "vmtype", "vacuum_pipe", "factories",
                 "targetshares")
# Options of a [vacuum_pipe] section of its own; every machinetype option may be given there
# too (inherited by the pipe's machinetypes).
PIPE_SECTION_OPTIONS = ("vacuum_pipe_url", "target_share")

MODELS = models.names()


def by_name(table: Tuple[Option, ...]) -> dict:
    """Map every name and alias of a table to its Option."""
    found = {}
    for opt in table:
        found[opt.name] = opt
        for alias in opt.aliases:
            found[alias] = opt
    return found


def pipe_accepted(name: str) -> bool:
    """True if a Vacuum Pipe may set this machinetype option (the original's list)."""
    if name.startswith((USER_DATA_OPTION, USER_DATA_FILE)):
        return True
    return name in PIPE_OPTIONS


# Exactly the names a pipe entry may carry (aliases are not accepted from pipes).
PIPE_OPTIONS = frozenset(o.name for o in MACHINETYPE_OPTIONS if o.from_pipe) | {"suffix"}
