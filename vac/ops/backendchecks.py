# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s checks of the backends the configuration uses: each engine reachable and its
version, each machinetype's image present (or pullable) and docker_network there (with an
address for every slot on macvlan/ipvlan), the VMs' NAT network, and the
Apptainer user with its subordinate id ranges. Never raises: every failure is a Check line.
A failed line's fix is the fix of the cause found (a missing Python module, an engine that
does not answer, a missing binary or user), never one fix for every cause."""
from __future__ import annotations

import os
import pwd
from typing import Dict, List, Optional

from vac import optional
from vac.backends import backend_for_model, get_backend_class
from vac.config.model import Config, MachineType, Settings
from vac.errors import BackendUnavailable, VacError
from vac.ops.checks import FAIL, OK, WARN, Check

ENGINE_FIXES = {    # when the library is there and the engine does not answer
    "docker": "start the engine (systemctl start docker) or set docker_url",
    "libvirt": "start libvirtd (systemctl start libvirtd) or set libvirt_uri",
    "podman": "start Podman's API (systemctl enable --now podman.socket) or set podman_url",
}
ENGINE_URLS = {"docker": "docker_url", "podman": "podman_url"}   # engines of the Docker API
APPTAINER_BINARY_FIX = "install apptainer (dnf install apptainer), or set singularity_path " \
                       "to its binary"
CGROUP_FIX = "run vacd as root on a host whose cgroup controllers are delegated"
PROBE_TIMEOUT = 10.0


def backends_in_use(config: Config) -> Dict[str, List[MachineType]]:
    """Backend name -> the machinetypes it serves (models no backend serves are left out)."""
    found: Dict[str, List[MachineType]] = {}
    for mt in config.machinetypes.values():
        try:
            found.setdefault(backend_for_model(mt.machine_model), []).append(mt)
        except BackendUnavailable:
            continue
    return found


def engine(name: str, settings: Settings) -> Check:
    """The backend's own probe: library importable, engine reachable, its version."""
    missing = optional.backend_missing(name)
    if missing is not None:
        return Check(f"{name}-engine", FAIL, missing.text(), missing.package)
    try:
        probe = get_backend_class(name)(settings).probe()
    except (VacError, OSError) as e:
        return Check(f"{name}-engine", FAIL, str(e), engine_fix(name, settings, None))
    if not probe.available:
        return Check(f"{name}-engine", FAIL, probe.reason,
                     engine_fix(name, settings, probe.version))
    return Check(f"{name}-engine", OK, probe.version or "available")


def engine_fix(name: str, settings: Settings, version: Optional[str]) -> str:
    """The fix for the cause of a failed probe, found by asking each part again."""
    if name != "apptainer":
        return ENGINE_FIXES.get(name, "")
    try:
        binary = get_backend_class(name)(settings).binary()
    except (VacError, OSError):
        return APPTAINER_BINARY_FIX
    user = apptainer_user(settings)[0]
    if user.status != OK:
        return user.fix
    if version:                 # the binary ran and the user is fine: the cgroups failed
        return CGROUP_FIX
    return f"run {binary} version by hand and correct what it says"


def docker_image(mt: MachineType, settings: Settings, engine: str = "docker") -> Check:
    """The image is in the engine (Docker, or Podman's compatible API) already, else the
    registry knows it (no pull)."""
    name = f"image {mt.name}"
    try:
        from vac.backends.docker.spec import image_of

        ref = image_of(mt.root_image)
    except VacError as e:
        return Check(name, FAIL, str(e), f"root_image = docker://<image> in [machinetype "
                     f"{mt.name}]")
    try:
        import docker
    except ImportError:
        missing = optional.MissingLibrary.of(f"machine_model = {engine} (machinetype "
                                             f"{mt.name})", "docker")
        return Check(name, FAIL, missing.text(), missing.package)
    api = None
    try:
        api = docker.APIClient(base_url=getattr(settings, ENGINE_URLS[engine]),
                               timeout=PROBE_TIMEOUT)
        try:
            api.inspect_image(ref)
            return Check(name, OK, f"{ref} present in the engine")
        except docker.errors.ImageNotFound:
            pass
        try:
            api.inspect_distribution(ref)
        except Exception as e:  # noqa: BLE001 (registry errors of every kind are the answer)
            return Check(name, FAIL, f"{ref} is not in the engine and cannot be pulled: "
                         f"{_one_line(e)}", f"{engine} pull {ref}, or correct root_image")
        return Check(name, WARN, f"{ref} not in the engine; the registry has it (pulled at the "
                     "first creation)", f"{engine} pull {ref} to save the first creation's wait")
    except Exception as e:  # noqa: BLE001 (the engine check says why the engine is down)
        return Check(name, FAIL, f"cannot ask the engine about {ref}: {_one_line(e)}",
                     ENGINE_FIXES[engine])
    finally:
        if api is not None:
            api.close()


def docker_network(mt: MachineType, settings: Settings, engine: str = "docker") -> Check:
    """The machinetype's docker_network exists; on macvlan/ipvlan, every slot has an address."""
    name = f"network {mt.name}"
    from vac.backends.docker.network import attachment
    from vac.machine.slots import make_slots

    api = None
    try:
        import docker

        api = docker.APIClient(base_url=getattr(settings, ENGINE_URLS[engine]),
                               timeout=PROBE_TIMEOUT)
        try:
            attrs = api.inspect_network(mt.docker_network)
        except docker.errors.NotFound:
            return Check(name, FAIL, f"docker_network {mt.docker_network} does not exist",
                         f"docker network create ... {mt.docker_network}, or correct "
                         "docker_network")
        slots = make_slots(settings.factory_name, settings.host_processors)
        try:
            last = attachment(attrs, slots[-1], mt.name, mt.docker_network) if slots else None
        except VacError as e:
            return Check(name, FAIL, str(e), "give the network an IPv4 subnet and a range "
                                             "with an address for every slot")
        where = f" (slot {slots[-1].ordinal}: {last.ip})" if last and last.ip else ""
        return Check(name, OK, f"{mt.docker_network}: {attrs.get('Driver')}{where}")
    except Exception as e:  # noqa: BLE001 (the engine check says why the engine is down)
        return Check(name, FAIL, f"cannot ask the engine about network {mt.docker_network}: "
                     f"{_one_line(e)}", ENGINE_FIXES[engine])
    finally:
        if api is not None:
            api.close()


def podman_oom(version: Optional[int] = None) -> Check:
    """Can OOM kills of Podman machines be told on this host? Not on cgroup v1: Podman's
    conmon reports none there, and the kernel counts them in the container's own memory
    cgroup, which Podman removes at the exit (on v2 the parent's memory.events keeps them)."""
    if version is None:
        from vac.host.cgroups import Cgroups

        version = Cgroups().hierarchies.version
    if version == 1:
        return Check("podman-oom", WARN, "cgroup v1: an OOM kill in a Podman machine is not "
                     "seen (no 700 shutdown_message; the machine just ends)",
                     "run Podman machines on a cgroup v2 host (EL9's default), or Docker ones")
    return Check("podman-oom", OK, "cgroup v2: OOM kills counted in each machine's parent")


def file_image(mt: MachineType, settings: Settings) -> Check:
    """A VM's or Apptainer machine's root_image: a local file (or directory), or a URL."""
    name = f"image {mt.name}"
    image = mt.root_image
    if not image:
        return Check(name, FAIL, "no root_image", f"set root_image in [machinetype {mt.name}]")
    if image.startswith(("https://", "http://")):
        cache = settings.paths.image_cache(image)
        if os.path.isfile(cache):
            return Check(name, OK, f"{image} cached in {cache}")
        return Check(name, WARN, f"{image} not cached yet (fetched at the first creation)")
    path = mt.files_path(image)
    if not os.path.exists(path):
        return Check(name, FAIL, f"root_image {path} does not exist",
                     f"put the image there, or correct root_image in [machinetype {mt.name}]")
    kind = "directory" if os.path.isdir(path) else "file"
    return Check(name, OK, f"{path} ({kind})")


def local_image_paths(machinetypes: List[MachineType]) -> List[str]:
    """The local image files of VM machinetypes (the QEMU user must reach them too)."""
    return [mt.files_path(mt.root_image) for mt in machinetypes
            if mt.root_image and not mt.root_image.startswith(("https://", "http://"))]


def nat_network(settings: Settings) -> Check:
    """The VMs' libvirt NAT network: defined, active and as Vac defines it (with the DHCP
    broadcast option of issue 28), or vacd will define or complete it."""
    from vac.backends.libvirt.network import NETWORK_NAME, check_network

    try:
        import libvirt

        conn = libvirt.open(settings.libvirt_uri)
    except Exception as e:  # noqa: BLE001 (the engine check gives the fix)
        return Check("nat-network", WARN, f"cannot ask libvirt: {_one_line(e)}")
    try:
        try:
            net = conn.networkLookupByName(NETWORK_NAME)
        except libvirt.libvirtError:
            net = None
        if net is not None and net.isActive():
            problems = check_network(net.XMLDesc(0), settings.factory_name,
                                     settings.forward_dev)[0]
            if problems:
                return Check("nat-network", WARN, f"{NETWORK_NAME} active on "
                             f"{net.bridgeName()} but {'; '.join(problems)}",
                             "vacd completes or redefines it before it creates VMs (a network "
                             "that running VMs use is completed live or left alone)")
            return Check("nat-network", OK, f"{NETWORK_NAME} active on {net.bridgeName()}")
        found = f"{NETWORK_NAME} {'inactive' if net is not None else 'not defined'}"
        if settings.fix_networking:
            return Check("nat-network", WARN, f"{found}; vacd defines and starts it each cycle")
        return Check("nat-network", FAIL, f"{found} and fix_networking = false",
                     f"virsh net-start {NETWORK_NAME}, or remove fix_networking = false")
    finally:
        conn.close()


def apptainer_user(settings: Settings, subuid: str = "/etc/subuid",
                   subgid: str = "/etc/subgid") -> List[Check]:
    """singularity_user exists, is not root; its subordinate id ranges (for --fakeroot)."""
    name = settings.singularity_user
    if not name:
        return [Check("apptainer-user", FAIL, "singularity_user is not set",
                      "useradd -r vacsngly; singularity_user = vacsngly in [settings]")]
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return [Check("apptainer-user", FAIL, f"singularity_user {name} does not exist",
                      f"useradd -r -m {name}")]
    if user.pw_uid == 0:
        return [Check("apptainer-user", FAIL, f"singularity_user {name} is root",
                      "a non-root user: vacd kills its processes outside machines")]
    lines = [Check("apptainer-user", OK, f"{name} (uid {user.pw_uid})")]
    for path in (subuid, subgid):
        count = _sub_ids(path, name, user.pw_uid)
        if count:
            lines.append(Check(f"apptainer-{os.path.basename(path)}", OK,
                               f"{name} has {count} ids in {path}"))
        else:
            lines.append(Check(f"apptainer-{os.path.basename(path)}", WARN,
                               f"{name} has no range in {path} (only --fakeroot needs one)",
                               f"usermod --add-subuids 100000-165535 --add-subgids "
                               f"100000-165535 {name}"))
    return lines


def _sub_ids(path: str, name: str, uid: int) -> int:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            rows = [line.strip().split(":") for line in f]
    except OSError:
        return 0
    return sum(int(r[2]) for r in rows if len(r) == 3 and r[0] in (name, str(uid)) and
               r[2].isdigit())


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text[:300] if text else type(e).__name__


def for_backend(name: str, machinetypes: List[MachineType], settings: Settings,
                extra: Optional[List[Check]] = None) -> List[Check]:
    """Every check of one backend: engine, images, and what only it needs."""
    lines = [engine(name, settings)]
    usable = lines[0].status != FAIL
    if name in ENGINE_URLS and usable:
        lines += [docker_image(mt, settings, name) for mt in machinetypes]
        lines += [docker_network(mt, settings, name) for mt in machinetypes
                  if mt.docker_network]
    elif name in ENGINE_URLS:
        lines += [Check(f"image {mt.name}", WARN, "not checked: the engine is not usable")
                  for mt in machinetypes]
    elif name in ("libvirt", "apptainer"):      # a file or a URL: no engine needed
        lines += [file_image(mt, settings) for mt in machinetypes]
    if name == "libvirt" and usable:
        lines.append(nat_network(settings))
    if name == "apptainer":
        lines += apptainer_user(settings)
    if name == "podman":
        lines.append(podman_oom())
    return lines + (extra or [])
