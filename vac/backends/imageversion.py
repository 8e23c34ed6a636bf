# SPDX-License-Identifier: BSD-2-Clause
"""The version of a root image downloaded from http(s): what each Apptainer or VM machine got.

A machine records in its backend.json the image's URL, `image_version` = "sha256:<hex of the
cached file>" and `image_modified` = the server's Last-Modified (the cached file's mtime, as
vac.fetch.fetch_to_cache sets it). The hash is kept beside the cache (`<cache>+sha256`, keyed
by the file's inode, size and mtime), so a multi-GB image is read once per download, not once
per machine; creations running at once wait for one hash instead of each reading the file.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Optional

from vac import fsutil

if TYPE_CHECKING:
    from vac.paths import Paths

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
HEX = re.compile(r"[0-9a-f]{64}")
_hashing = threading.Lock()


def url_image_record(root_image: Optional[str], paths: Paths) -> Dict[str, str]:
    """backend.json keys for a root_image fetched from http(s) (image_url, image_version,
    image_modified); {} for any other root_image, or if the cached copy cannot be read."""
    if not root_image or not root_image.startswith(("https://", "http://")):
        return {}
    cache = paths.image_cache(root_image)
    return {"image_url": root_image, **cached_image_version(cache, paths.image_version(cache))}


def cached_image_version(cache_path: str, record_path: str) -> Dict[str, str]:
    """{"image_version": "sha256:<hex>", "image_modified": "<UTC ISO 8601>"} of the cached
    file ({} with a warning if it cannot be read)."""
    try:
        fd = os.open(cache_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        log.warning("cannot read %s for its version: %s", cache_path, e)
        return {}
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        key = {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        try:
            digest = _digest(f, key, record_path)
        except OSError as e:
            log.warning("cannot hash %s: %s", cache_path, e)
            return {}
    return {"image_version": f"sha256:{digest}", "image_modified": iso_utc(st.st_mtime)}


def iso_utc(seconds: float) -> str:
    """A Unix time as 2026-12-01T10:00:00Z."""
    moment = datetime.datetime.fromtimestamp(int(seconds), tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(f: BinaryIO, key: Dict[str, int], record_path: str) -> str:
    """The file's sha256: from the record if it names this very file, else computed (and
    recorded)."""
    with _hashing:
        known = _read_record(record_path)
        if known is not None and known.get("key") == key and \
                HEX.fullmatch(str(known.get("sha256", ""))):
            return str(known["sha256"])
        digest = hash_file(f)
        try:
            fsutil.atomic_write(record_path, json.dumps({"key": key, "sha256": digest},
                                                        sort_keys=True))
        except OSError as e:
            log.warning("cannot record the sha256 of an image in %s: %s", record_path, e)
        return digest


def hash_file(f: BinaryIO) -> str:
    """sha256 hex of an open file, read from its start."""
    f.seek(0)
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def _read_record(path: str) -> Optional[Dict[str, Any]]:
    try:
        text = fsutil.read_optional(path, 4096)
    except OSError:
        return None
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
