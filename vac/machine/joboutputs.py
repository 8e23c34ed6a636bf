# SPDX-License-Identifier: BSD-2-Clause
"""Guest-written joboutputs: name rules, size bounds, symlink-safe writes, console framing.

A VM returns files (shutdown_message, heartbeat file, logs) either by HTTP PUT to the metadata
service (vac.backends.libvirt.metadata) or, with no network, as serial-console lines

    VAC-JOBOUTPUT <name> <base64 of the content on one line>

which the libvirt backend parses from console.log when the machine has ended. Both paths end
in write_joboutput(), which never follows a symlink: the joboutputs/ directory is opened with
O_NOFOLLOW and the file is written through that directory descriptor and renamed into place.
Everything here treats its input as hostile: names are one component of [A-Za-z0-9._-]
not starting with a dot, each file and the directory as a whole are bounded in size and
number, except that a shutdown_message of at most RESERVED_BYTES is always kept (a payload
that wrote many or large files still says how it ended).
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import stat
from dataclasses import dataclass
from typing import Dict, Iterable, List, Tuple

MIB = 1024 * 1024
MAX_FILE_BYTES = MIB          # the defaults of vac.conf's joboutputs_* bounds
MAX_TOTAL_BYTES = 16 * MIB
MAX_FILES = 64
SHUTDOWN_MESSAGE = "shutdown_message"
RESERVED_BYTES = 4096     # a shutdown_message this short is kept beyond the bounds
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
CONSOLE_PREFIX = "VAC-JOBOUTPUT "
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


@dataclass(frozen=True)
class Bounds:
    """What one VM may store: bytes of a file, bytes and number of files in all."""

    file_bytes: int = MAX_FILE_BYTES
    total_bytes: int = MAX_TOTAL_BYTES
    files: int = MAX_FILES

    @classmethod
    def of(cls, settings) -> "Bounds":
        """vac.conf's joboutputs_file_mb, joboutputs_machine_mb, joboutputs_machine_files."""
        return cls(settings.joboutputs_file_mb * MIB, settings.joboutputs_machine_mb * MIB,
                   settings.joboutputs_machine_files)


class JoboutputRefused(Exception):
    """A guest's joboutput cannot be stored (bad name, too large, unsafe directory)."""


def valid_name(name: str) -> bool:
    """One path component, no leading dot (so never '.' or '..'), portable characters."""
    return bool(NAME_RE.fullmatch(name)) and ".." not in name


def write_joboutput(joboutputs_dir: str, name: str, data: bytes, *,
                    max_bytes: int = MAX_FILE_BYTES, max_total: int = MAX_TOTAL_BYTES,
                    max_files: int = MAX_FILES, replace: bool = True) -> bool:
    """Atomically store data as joboutputs_dir/name without following any symlink.

    Returns False (writes nothing) if replace is False and the name already exists.

    Raises:
        JoboutputRefused: bad name, too large, too many files, or the directory is missing,
            a symlink or not a directory, or the name is a directory.
    """
    if not valid_name(name):
        raise JoboutputRefused(f"bad joboutput name {name!r}")
    if len(data) > max_bytes:
        raise JoboutputRefused(f"{name}: {len(data)} bytes is more than {max_bytes}")
    try:
        dfd = os.open(joboutputs_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise JoboutputRefused(f"{joboutputs_dir}: {e.strerror or e}") from e
    try:
        existing = _regular_sizes(dfd)
        if name in existing and not replace:
            return False
        if not _reserved(name, len(data)):
            others = {k: v for k, v in existing.items() if k != name and not _reserved(k, v)}
            if len(others) + 1 > max_files:
                raise JoboutputRefused(f"{name}: more than {max_files} joboutputs")
            if sum(others.values()) + len(data) > max_total:
                raise JoboutputRefused(f"{name}: joboutputs would exceed {max_total} bytes")
        _replace_at(dfd, name, data)
        return True
    finally:
        os.close(dfd)


def _reserved(name: str, size: int) -> bool:
    """A short shutdown_message neither counts towards the bounds nor is refused by them:
    a payload that wrote many or large files still returns how it ended."""
    return name == SHUTDOWN_MESSAGE and size <= RESERVED_BYTES


def _regular_sizes(dfd: int) -> Dict[str, int]:
    sizes = {}
    for entry in os.listdir(dfd):
        try:
            st = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        sizes[entry] = st.st_size if stat.S_ISREG(st.st_mode) else 0
    return sizes


def _replace_at(dfd: int, name: str, data: bytes) -> None:
    tmp = f".tmp-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=dfd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException as e:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except FileNotFoundError:
            pass
        if isinstance(e, IsADirectoryError):
            raise JoboutputRefused(f"{name}: is a directory") from e
        if isinstance(e, OSError):
            raise JoboutputRefused(f"{name}: {e.strerror or e}") from e
        raise


def parse_console(lines: Iterable[str], *, max_bytes: int = MAX_FILE_BYTES,
                  max_files: int = MAX_FILES) -> Tuple[Dict[str, bytes], List[str]]:
    """The joboutputs framed on a serial console, and a list of what was rejected and why.

    A line is `VAC-JOBOUTPUT <name> <base64>` (the third field may be empty; a trailing "\\r"
    from the tty is ignored). Later lines for the same name win. Lines with a bad name,
    invalid base64 or an oversized body are rejected, as are names beyond max_files.
    """
    found: Dict[str, bytes] = {}
    rejected: List[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n").rstrip("\r")
        if not line.startswith(CONSOLE_PREFIX):
            continue
        fields = line[len(CONSOLE_PREFIX):].split(" ")
        name, b64 = fields[0], (fields[1] if len(fields) > 1 else "")
        if len(fields) > 2 or not valid_name(name):
            rejected.append(f"{name[:40]!r}: bad name or framing")
            continue
        if len(b64) > (max_bytes + 2) // 3 * 4 or not _B64_RE.fullmatch(b64):
            rejected.append(f"{name}: oversized or not base64")
            continue
        try:
            body = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            rejected.append(f"{name}: not base64")
            continue
        counted = len(found) - (SHUTDOWN_MESSAGE in found)
        if name not in found and counted >= max_files and not _reserved(name, len(body)):
            rejected.append(f"{name}: more than {max_files} joboutputs")
            continue
        found[name] = body
    return found, rejected
