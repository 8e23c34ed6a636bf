# SPDX-License-Identifier: BSD-2-Clause
"""OpenStack config drives: an ISO 9660 image, label config-2, attached to every VM.

Layout (Rock Ridge names; the ISO 9660 names underneath are generated):

    openstack/latest/meta_data.json      the same JSON the metadata service serves
    openstack/latest/network_data.json   the VM's interface, DHCP for IPv4 (cloudmeta.py)
    openstack/latest/user_data           the machine's user_data (when it has one)
    openstack/latest/machinefeatures/    snapshot of the machine's MJF directories at
    openstack/latest/jobfeatures/        creation (the live values stay on the MJF service)

cloud-init's ConfigDrive datasource and Vac's test guest both read it. pycdlib is imported
only here and only when an image is built, so a host without VMs does not need it.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Dict, Mapping

from vac import optional
from vac.backends.libvirt import cloudmeta, metadata
from vac.errors import StateError
from vac.machine.directory import MachineDir
from vac.machine.slots import ordinal_of

LABEL = "config-2"
BASE = "openstack/latest"
MAX_MJF_KEYS = 256


def config_drive_files(directory: MachineDir, factory_name: str) -> Dict[str, bytes]:
    """Relative path -> content of every file the machine's config drive holds."""
    ordinal = ordinal_of(factory_name, directory.name)
    network = cloudmeta.openstack_network_data(ordinal if ordinal >= 0 else None)
    files = {f"{BASE}/meta_data.json":
             json.dumps(metadata.meta_data(directory, factory_name), sort_keys=True).encode(),
             f"{BASE}/network_data.json": json.dumps(network, sort_keys=True).encode()}
    user_data = directory.read("user_data", metadata.USER_DATA_LIMIT)
    if user_data is not None:
        files[f"{BASE}/user_data"] = user_data.encode()
    for which in metadata.MJF_DIRS:
        for key in metadata.mjf_keys(directory, which)[:MAX_MJF_KEYS]:
            value = metadata.mjf_value(directory, which, key)
            if value is not None:
                files[f"{BASE}/{which}/{key}"] = value
    return files


def write_iso(files: Mapping[str, bytes], out_path: str, label: str = LABEL) -> None:
    """Write an ISO 9660 image (Rock Ridge names) holding files, atomically, mode 0600.

    Raises:
        StateError: the image cannot be built or written.
    """
    try:
        import pycdlib
        from pycdlib.pycdlibexception import PyCdlibException
    except ImportError as e:
        raise StateError(out_path, "cannot build a config drive: "
                         + optional.for_backend("libvirt", "pycdlib").text()) from e
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=4, rock_ridge="1.09", vol_ident=label)
    iso_dirs: Dict[str, str] = {"": ""}
    counter = 0
    try:
        for rel in sorted(files):
            parent = _ensure_dirs(iso, iso_dirs, os.path.dirname(rel))
            counter += 1
            data = files[rel]
            iso.add_fp(io.BytesIO(data), len(data), f"{parent}/F{counter}",
                       rr_name=os.path.basename(rel))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(out_path) or ".")
        try:
            with os.fdopen(fd, "wb") as out:
                iso.write_fp(out)
            os.replace(tmp, out_path)
        except BaseException:
            os.unlink(tmp)
            raise
    except (PyCdlibException, OSError) as e:
        raise StateError(out_path, f"cannot write config drive: {e}") from e
    finally:
        iso.close()


def _ensure_dirs(iso, iso_dirs: Dict[str, str], rel_dir: str) -> str:
    """The ISO path of rel_dir, creating it (and its parents) with Rock Ridge names."""
    if rel_dir in iso_dirs:
        return iso_dirs[rel_dir]
    parent = _ensure_dirs(iso, iso_dirs, os.path.dirname(rel_dir))
    path = f"{parent}/D{len(iso_dirs)}"
    iso.add_directory(path, rr_name=os.path.basename(rel_dir))
    iso_dirs[rel_dir] = path
    return path


def build_config_drive(directory: MachineDir, factory_name: str, out_path: str) -> str:
    """Write the machine's config drive to out_path and return out_path."""
    write_iso(config_drive_files(directory, factory_name), out_path)
    return out_path
