# SPDX-License-Identifier: BSD-2-Clause
"""Interpretation and validation of vac.conf sections: raw option values into checked values.

vac.config.load reads the files and makes the frozen objects; this module turns the raw values of
[settings], [vacuum_pipe PREFIX] and [machinetype NAME] sections (with pipe values layered
in) into typed values and origins, checking them on the way. Problems and warnings are
collected in a Builder, not raised one by one, so a site admin sees all of them at once.
"""
from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

from vac.config import limits, spelling
from vac.config import options as O
from vac.config.builder import Builder
from vac.config.model import SECTION

if TYPE_CHECKING:
    from vac.config.model import PipeSection, RawConfig, RawValue, Settings
    from vac.host.facts import HostFacts


NAME_RE = re.compile(r"^[a-z0-9-]+$")
KEY_RE = re.compile(r"^[a-z0-9_]+$")
DEVICE_RE = re.compile(r"^[a-z0-9]+$")
SMBIOS_RE = re.compile(r"[ -~]{1,64}")   # printable ASCII: an SMBIOS string QEMU passes on
HOSTPORT_RE = re.compile(r"^[a-z0-9.-]+:[0-9]+$")
JOBOUTPUTS_CEILINGS = (("joboutputs_file_mb", 256), ("joboutputs_machine_mb", 4096),
                       ("joboutputs_machine_files", 4096))
DEFAULT_VOLUME_GROUP = "vac_volume_group"  # used when volume_group is unset and exists


def _family(section: Mapping[str, RawValue], prefix: str, b: Builder) -> Dict[str, RawValue]:
    """Options of one prefix family, keyed by the part after the prefix, names checked."""
    found = {}
    for option, (value, origin) in section.items():
        if option.startswith(prefix):
            key = option[len(prefix):]
            if not KEY_RE.match(key):
                b.problem("name must use only a-z, 0-9 and _", origin, option)
                continue
            found[key] = (value, origin)
    return found


def check_legacy_sections(raw: RawConfig, b: Builder) -> None:
    spelling.check_section_titles(raw, b)
    if raw.section("factories") and "factories" not in raw.section("settings"):
        origin = raw.origin("factories")
        b.problem("the [factories] section is no longer supported; put factories = ... in "
                  "[settings]", origin)
    if ("targetshares", "") in raw.sections:
        origin = raw.origin("targetshares")
        b.problem("the [targetshares] section is no longer supported; set target_share in "
                  "each [machinetype] section", origin)


def settings_values(raw: RawConfig, host: HostFacts,
                    b: Builder) -> Optional[Tuple[Dict[str, Any], Dict[str, str]]]:
    """The [settings] values and their origins for Settings, or None if there are none."""
    section = raw.section("settings")
    if ("settings", "") not in raw.sections:
        b.problem("no [settings] section in " + (", ".join(raw.files) or "any config file"))
        return None
    spelling.check_options(section, "settings", b)
    values, origins = b.apply_table(O.SETTINGS_OPTIONS, section, "settings")
    if not values["vac_space"]:
        b.problem("vac_space is required", raw.origin("settings"), "vac_space")
        return None
    values["vac_space"] = values["vac_space"].lower()
    values["factories"] = tuple(f.lower() for f in values["factories"])
    values["vacmon_hostport"] = tuple(h.lower() for h in values["vacmon_hostport"])
    _resolve_factory_name(values, origins, host, b)
    _resolve_processors(values, origins, host, b)
    values["version_logger"] = _version_logger(values["version_logger"], origins, b)
    _check_settings(values, origins, host, b)
    families = {
        "machinefeatures_options": _family(section, O.MACHINEFEATURES_OPTION, b),
        "user_data_options": _family(section, O.USER_DATA_OPTION, b),
        "user_data_files": _family(section, O.USER_DATA_FILE, b),
    }
    for attr, fam in families.items():
        values[attr] = {k: v for k, (v, _) in fam.items()}
    origins.update({f"{O.USER_DATA_OPTION}{k}": o for k, (_, o) in
                    families["user_data_options"].items()})
    return values, origins


def _resolve_factory_name(values: Dict[str, Any], origins: Dict[str, str], host: HostFacts,
                          b: Builder) -> None:
    if not values["factory_name"]:
        values["factory_name"] = host.fqdn
        origins["factory_name"] = "host name"
    values["factory_name"] = values["factory_name"].lower()
    if "." not in values["factory_name"]:
        b.problem(f"factory name {values['factory_name']!r} is not a fully qualified domain "
                  "name; give the host an FQDN or set factory_name in [settings]",
                  origins["factory_name"] if origins["factory_name"] != "host name" else "",
                  "factory_name")


def _resolve_processors(values: Dict[str, Any], origins: Dict[str, str], host: HostFacts,
                        b: Builder) -> None:
    counted = host.processors
    if values["host_processors"] is not None:
        if values["host_processors"] < 1:
            b.problem("must be at least 1", origins["host_processors"], "host_processors")
        else:
            counted = values["host_processors"]
    values["host_processors"] = counted
    total = values["total_processors"]
    if total is None:
        values["total_processors"] = counted
        origins["total_processors"] = "processors counted on this host"
    elif total > counted:
        b.problem(f"{total} is more than the {counted} processors of this host",
                  origins["total_processors"], "total_processors")
    elif total < 0:
        b.problem("must not be negative", origins["total_processors"], "total_processors")


def _version_logger(value: str, origins: Dict[str, str], b: Builder) -> int:
    word = str(value).strip().lower()
    if word in ("true", "false"):
        b.warn(f"version_logger = {value} is deprecated; use a number of messages per day",
               origins["version_logger"], "version_logger")
        return 1 if word == "true" else 0
    try:
        return max(0, int(word))
    except ValueError:
        return 0


def _check_settings(values: Dict[str, Any], origins: Dict[str, str], host: HostFacts,
                    b: Builder) -> None:
    for name in ("factories", "vacmon_hostport"):
        if any("," in word for word in values[name]):
            b.problem("names are separated by spaces, not commas: "
                      f"{' '.join(values[name])!r}", origins[name], name)
    for hp in values["vacmon_hostport"]:
        if not HOSTPORT_RE.match(hp):
            b.problem(f"{hp!r} is not host:port", origins["vacmon_hostport"], "vacmon_hostport")
    user = values["singularity_user"]
    if user:
        uid = host.uid_of(user)
        if uid is None:
            b.problem(f"user {user!r} does not exist", origins["singularity_user"],
                      "singularity_user")
        elif uid == 0:
            b.problem(f"user {user!r} is root; Apptainer containers must run as a non-root "
                      "user", origins["singularity_user"], "singularity_user")
    _check_podman_user(values, origins, host, b)
    vg = values["volume_group"]
    if vg and not host.vg_exists(vg):
        b.problem(f"volume group {vg!r} does not exist ({_vgs_said()})",
                  origins["volume_group"], "volume_group")
    elif not vg and host.vg_exists(DEFAULT_VOLUME_GROUP):   # as the original: if it exists
        values["volume_group"] = DEFAULT_VOLUME_GROUP
        origins["volume_group"] = f"{DEFAULT_VOLUME_GROUP} exists"
    _check_ranges(values, origins, b)
    if values["libvirt_virt_type"] not in ("auto", "kvm", "qemu"):
        b.problem("must be auto, kvm or qemu", origins["libvirt_virt_type"], "libvirt_virt_type")
    if values["libvirt_shutdown_wait_seconds"] < 0:
        b.problem("must not be negative", origins["libvirt_shutdown_wait_seconds"],
                  "libvirt_shutdown_wait_seconds")
    _check_yield(values, origins, b)
    _check_pressure(values, origins, b)


def _vgs_said() -> str:
    """What the volume group check rests on: LVM's vgs, which sees nothing unless root."""
    if os.geteuid() != 0:
        return "LVM's vgs does not report it to a non-root user: check as root, as vacd runs"
    return "LVM's vgs does not report it"


def _check_podman_user(values: Dict[str, Any], origins: Dict[str, str], host: HostFacts,
                       b: Builder) -> None:
    """Rootless Podman: podman_user exists and is not root; podman_url not given is that
    user's own socket (its subordinate ranges and service are vac doctor's to check)."""
    user = values["podman_user"]
    if not user:
        return
    uid = host.uid_of(user)
    if uid is None:
        b.problem(f"user {user!r} does not exist", origins["podman_user"], "podman_user")
    elif uid == 0:
        b.problem(f"user {user!r} is root; leave podman_user unset for the rootful Podman",
                  origins["podman_user"], "podman_user")
    elif origins["podman_url"] == "default":
        values["podman_url"] = f"unix:///run/user/{uid}/podman/podman.sock"
        origins["podman_url"] = f"podman_user {user}'s socket"


def _check_pressure(values: Dict[str, Any], origins: Dict[str, str], b: Builder) -> None:
    """Pressure thresholds are per cent of the time stalled: more than 0, at most 100."""
    for name in [o for o, _, _ in O.PRESSURE_OPTIONS] + ["shed_memory_full"]:
        if values[name] is not None and not 0 < values[name] <= 100:
            b.problem("must be more than 0 and at most 100 (per cent of the time stalled; "
                      "leave it empty to turn this off)", origins[name], name)
    if values["shed_grace_seconds"] < 0:
        b.problem("must not be negative", origins["shed_grace_seconds"], "shed_grace_seconds")
    _check_disk(values, origins, b)


def _check_disk(values: Dict[str, Any], origins: Dict[str, str], b: Builder) -> None:
    """Admission by free disk space: a floor not negative, a fraction below 1, an
    overcommit of at least 1; admission by memory's overcommit, when set, at least 1."""
    if values["disk_floor_gb"] < 0:
        b.problem("must not be negative (0: no absolute floor)", origins["disk_floor_gb"],
                  "disk_floor_gb")
    if not 0 <= values["disk_floor_fraction"] < 1:
        b.problem("must be at least 0 and less than 1 (0: no floor by size)",
                  origins["disk_floor_fraction"], "disk_floor_fraction")
    if values["disk_overcommit"] < 1:
        b.problem("must be at least 1 (1: every byte the machines' scratch may still grow "
                  "into must be free)", origins["disk_overcommit"], "disk_overcommit")
    if values["memory_overcommit"] is not None and values["memory_overcommit"] < 1:
        b.problem("must be at least 1 (1: no overcommit, every machine's limit must fit in "
                  "MemAvailable; leave it empty to turn admission by memory off)",
                  origins["memory_overcommit"], "memory_overcommit")


def _check_yield(values: Dict[str, Any], origins: Dict[str, str], b: Builder) -> None:
    """Opportunistic mode: a positive threshold, a grace and a pause that are not negative."""
    threshold = values["yield_load_per_processor"]
    if threshold is not None and threshold <= 0:
        b.problem("must be greater than 0 (leave it unset to turn opportunistic mode off)",
                  origins["yield_load_per_processor"], "yield_load_per_processor")
    for name in ("yield_grace_seconds", "yield_pause_seconds"):
        if values[name] < 0:
            b.problem("must not be negative", origins[name], name)
    _check_joboutputs(values, origins, b)


def _check_joboutputs(values: Dict[str, Any], origins: Dict[str, str], b: Builder) -> None:
    """A VM's joboutputs bounds: each from 1 to its ceiling (a PUT is held in memory while it
    arrives), and a machine's MiB not below one file's."""
    for name, ceiling in JOBOUTPUTS_CEILINGS:
        if not 1 <= values[name] <= ceiling:
            b.problem(f"must be 1 to {ceiling}", origins[name], name)
    machine, file = values["joboutputs_machine_mb"], values["joboutputs_file_mb"]
    if not 1 <= machine < file:
        return
    if origins["joboutputs_machine_mb"] == "default":     # the file's value was set: name it
        b.problem(f"must not be more than joboutputs_machine_mb ({machine}, its default)",
                  origins["joboutputs_file_mb"], "joboutputs_file_mb")
    else:
        b.problem(f"must not be less than joboutputs_file_mb ({file})",
                  origins["joboutputs_machine_mb"], "joboutputs_machine_mb")


def _check_ranges(values: Dict[str, Any], origins: Dict[str, str], b: Builder) -> None:
    for name in ("processors_per_superslot", "mb_per_processor", "cycle_seconds"):
        if values[name] is not None and values[name] <= 0:
            b.problem("must be greater than 0", origins[name], name)
    for name in ("max_creations_per_cycle", "docker_parallel_creations",
                 "apptainer_parallel_creations", "libvirt_parallel_creations",
                 "podman_parallel_creations"):
        if values[name] < 1:
            b.problem("must be at least 1", origins[name], name)


def pipe_section_values(raw: RawConfig, prefix: str, b: Builder) -> Optional[Dict[str, Any]]:
    """The fields of one [vacuum_pipe PREFIX] section for PipeSection, or None if unusable."""
    section = raw.section("vacuum_pipe", prefix)
    origin = raw.origin("vacuum_pipe", prefix)
    if not NAME_RE.match(prefix):
        b.problem(f"pipe prefix {prefix!r} must use only a-z, 0-9 and -", origin)
        return None
    spelling.check_options(section, "vacuum_pipe", b)
    if "vacuum_pipe_url" not in section:
        b.problem("vacuum_pipe_url is required", origin, "vacuum_pipe_url")
        return None
    share_value, share_origin = section.get("target_share", ("0.0", origin))
    try:
        share = float(share_value)
        if not math.isfinite(share) or share < 0:
            raise ValueError(share_value)
    except ValueError:
        b.problem(f"{share_value!r} is not a finite non-negative number", share_origin,
                  "target_share")
        share = 0.0
    inherited = {k: v for k, v in section.items()
                 if k not in ("vacuum_pipe_url", "target_share")}
    return dict(prefix=prefix, url=section["vacuum_pipe_url"][0], target_share=share,
                options=inherited, origin=origin)


def machinetype_sections(raw: RawConfig, pipes: Mapping[str, PipeSection],
                         pipe_values: Mapping[str, Mapping[str, RawValue]],
                         b: Builder) -> Dict[str, Dict[str, RawValue]]:
    """Each machinetype's raw options: pipe document < [vacuum_pipe] section < local."""
    merged: Dict[str, Dict[str, RawValue]] = {}
    for name, values in pipe_values.items():
        prefix = prefix_of(name, pipes)
        section = dict(values)
        if prefix in pipes:
            section.update(pipes[prefix].options)
        merged[name] = section
    for kind in ("vmtype", "machinetype"):
        for name in raw.of_kind(kind):
            local = raw.section(kind, name)
            if kind == "vmtype":
                b.warn(f"[vmtype {name}] is deprecated; use [machinetype {name}]",
                       raw.origin(kind, name))
            merged.setdefault(name, {}).update(local)
    return merged


def prefix_of(name: str, pipes: Mapping[str, PipeSection]) -> Optional[str]:
    """The longest pipe prefix P with name == P-suffix (prefixes may contain hyphens)."""
    best = None
    for prefix in pipes:
        if name.startswith(prefix + "-") and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def machinetype_values(name: str, section: Mapping[str, RawValue], settings: Settings,
                       prefix: Optional[str], origin: str,
                       b: Builder) -> Optional[Tuple[Dict[str, Any], Dict[str, str]]]:
    """One machinetype's values and origins for MachineType, or None if it is skipped."""
    if not NAME_RE.match(name):
        b.problem(f"machinetype name {name!r} must use only a-z, 0-9 and -", origin)
        return None
    spelling.check_options(section, "machinetype", b)
    values, origins = b.apply_table(O.MACHINETYPE_OPTIONS, section, f"machinetype {name}")
    origins[SECTION] = origin
    values["pipe"] = prefix
    values["machinetype_path"] = settings.paths.machinetype_dir(prefix or name)
    _defaults_from_others(values, origins, name)
    if values["mb_per_processor"] is None:
        values["mb_per_processor"] = settings.mb_per_processor
        origins["mb_per_processor"] = settings.origins.get("mb_per_processor", "default")
    _cap_disk(name, values, origins, settings, b)
    values["user_data_options"], values["user_data_files"] = _user_data_families(
        section, settings, origins, b)
    if not _check_machinetype(name, values, origins, settings, b):
        return None
    return values, origins


def _defaults_from_others(values: Dict[str, Any], origins: Dict[str, str], name: str) -> None:
    if values["min_wallclock_seconds"] is None:
        values["min_wallclock_seconds"] = values["max_wallclock_seconds"]
        origins["min_wallclock_seconds"] = "max_wallclock_seconds"
    if not values["machinegroup"]:
        values["machinegroup"] = values["accounting_fqan"] or name
        origins["machinegroup"] = "accounting_fqan" if values["accounting_fqan"] else "name"


def _cap_disk(name: str, values: Dict[str, Any], origins: Dict[str, str], settings: Settings,
              b: Builder) -> None:
    """[settings] disk_gb_per_processor, when set, is the site's ceiling: a machinetype's or a
    pipe's larger value is cut to it, said once where it was given."""
    ceiling, asked = settings.disk_gb_per_processor, values["disk_gb_per_processor"]
    if ceiling is None or asked is None or asked <= ceiling:
        return
    b.warn(f"{asked} is more than the site's ceiling, [settings] disk_gb_per_processor = "
           f"{ceiling}: VMs of {name} get {ceiling} GB per processor",
           origins["disk_gb_per_processor"], "disk_gb_per_processor")
    values["disk_gb_per_processor"] = ceiling
    origins["disk_gb_per_processor"] = settings.origins.get("disk_gb_per_processor",
                                                            "[settings]")


def _user_data_families(section: Mapping[str, RawValue], settings: Settings,
                        origins: Dict[str, str], b: Builder) -> Tuple[dict, dict]:
    opts = dict(settings.user_data_options)
    files = dict(settings.user_data_files)
    for key in opts:
        origins[O.USER_DATA_OPTION + key] = settings.origins.get(O.USER_DATA_OPTION + key,
                                                                 "[settings]")
    for key, (value, origin) in _family(section, O.USER_DATA_OPTION, b).items():
        opts[key] = value
        origins[O.USER_DATA_OPTION + key] = origin
    for key, (value, origin) in _family(section, O.USER_DATA_FILE, b).items():
        files[key] = value
        origins[O.USER_DATA_FILE + key] = origin
    return opts, files


def _check_machinetype(name: str, v: Dict[str, Any], origins: Dict[str, str],
                       settings: Settings, b: Builder) -> bool:
    """Record problems (config errors) and return False for a skipped machinetype."""
    model = v["machine_model"]
    if model not in O.MODELS or (model == "fake" and not settings.enable_fake_backend):
        b.problem(f"unknown machine_model {model!r} (known: "
                  f"{', '.join(m for m in O.MODELS if m != 'fake')})",
                  origins["machine_model"], "machine_model")
    image = v["root_image"] or ""
    if image.startswith("docker://") and model not in ("docker", "podman"):
        b.problem("a docker:// root_image needs machine_model = docker (or podman)",
                  origins["root_image"], "root_image")
    if model in ("docker", "podman") and v["root_image"] and \
            not image.startswith("docker://"):
        b.problem(f"machine_model {model} needs a root_image starting docker://",
                  origins["root_image"], "root_image")
    if model in ("docker", "podman") and not v["root_image"]:
        b.problem(f"machine_model {model} needs a root_image (docker://IMAGE:TAG)",
                  origins["machine_model"], "machine_model")
    _check_consistency(v, origins, b)
    if model in ("singularity", "apptainer") and not settings.singularity_user:
        b.problem(f"machine_model {model} needs singularity_user in [settings]",
                  origins["machine_model"], "machine_model")
    if v["max_processors"] < v["min_processors"]:
        # Located where a value was given: max_processors may be the default.
        where = "max_processors" if origins["max_processors"] != "default" else "min_processors"
        b.problem(f"max_processors ({v['max_processors']}) is less than min_processors "
                  f"({v['min_processors']})", origins[where], where)
    if v["min_processors"] < 1:
        b.problem("must be at least 1", origins["min_processors"], "min_processors")
    for option, message in limits.machinetype_problems(v):
        b.problem(message, origins[option], option)
    pull = v["docker_pull_seconds"]
    if pull is not None and pull < 1:
        b.problem("must be at least 1", origins["docker_pull_seconds"], "docker_pull_seconds")
    grace = v["shutdown_message_grace_seconds"]
    if grace is not None and grace < 0:
        b.problem("must not be negative", origins["shutdown_message_grace_seconds"],
                  "shutdown_message_grace_seconds")
    product = v.get("smbios_product")
    if product is not None and not SMBIOS_RE.fullmatch(product):
        b.warn(f"smbios_product {product[:80]!r} must be 1 to 64 printable ASCII characters; "
               f"machinetype {name} skipped", origins["smbios_product"], "smbios_product")
        return False
    for opt in ("root_device", "scratch_device"):
        if not DEVICE_RE.match(v[opt]):
            b.warn(f"{opt} {v[opt]!r} must use only a-z and 0-9; machinetype {name} skipped",
                   origins[opt], opt)
            return False
    return True


def _check_consistency(v: Dict[str, Any], origins: Dict[str, str], b: Builder) -> None:
    """Values that are each valid but cannot mean what was meant together."""
    if v["target_share"] < 0:
        b.problem("must not be negative (0: this machinetype gets no slots)",
                  origins["target_share"], "target_share")
    if v["heartbeat_seconds"] > 0 and not v["heartbeat_file"]:
        b.warn("has no effect without heartbeat_file: no machine is checked for a heartbeat",
               origins["heartbeat_seconds"], "heartbeat_seconds")
    if v["fizzle_seconds"] > v["max_wallclock_seconds"]:
        where = "fizzle_seconds" if origins["fizzle_seconds"] != "default" else \
            "max_wallclock_seconds"
        b.warn(f"fizzle_seconds ({v['fizzle_seconds']}) is longer than max_wallclock_seconds "
               f"({v['max_wallclock_seconds']}): every machine ends within fizzle_seconds, so "
               "none is accounted and one that ends without a shutdown message counts as an "
               "abort that backs the machinetype off", origins[where], where)
