# SPDX-License-Identifier: BSD-2-Clause
"""user_data: fetch a machinetype's template and do the ##user_data_...## substitutions.

Never Jinja: templates (often from pipes, so hostile) get only the plain pattern substitution
of the original's createUserData. The template is opaque bytes: MIME headers, boundaries and
any non-UTF-8 bytes pass through untouched; only `##user_data_[a-z0-9_]*##` patterns change.

Substitution is one pass over the template with an ordered table. The table follows the
original's order of replacements, and the first entry for a pattern wins, exactly as the
original's sequence of str.replace() calls made the first replacement consume a pattern. Two
deliberate differences: inserted values (file contents, proxies, option values) are never
scanned again, so a ##user_data_...## inside a host certificate file stays as it is; and for
the same XXX, user_data_option_XXX beats the contents of user_data_file_XXX in
##user_data_option_XXX## (the original left this to dict order). Every pattern left over,
including the literal ##user_data___## real templates carry in their comments, is removed.
"""
from __future__ import annotations

import logging
import os
import re
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import vac
from vac.errors import FetchError, UserDataError, VacError

if TYPE_CHECKING:
    from vac.config.model import MachineType, Settings

log = logging.getLogger(__name__)

TEMPLATE_LIMIT = 1024 * 1024        # bytes of a template, remote or local
FILE_LIMIT = 1024 * 1024            # bytes of one user_data_file_XXX
OUTPUT_LIMIT = 16 * 1024 * 1024     # bytes of the finished user_data
FETCH_TIMEOUT = 30
PATTERN_RE = re.compile(rb"##user_data_[a-z0-9_]*##")
MJF_URL_NAMES = ("machinefeatures_url", "jobfeatures_url", "joboutputs_url")

Fetcher = Callable[..., bytes]
ProxyMaker = Callable[..., str]


@dataclass(frozen=True)
class Template:
    """A template as read: its source (URL or resolved path), bytes, and whether remote."""

    source: str
    data: bytes
    remote: bool


def is_remote(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def manager_version(version: Optional[str] = None) -> str:
    """'Vac <version>': ##user_data_manager_version## and the User-Agent of template fetches."""
    return f"Vac {version or vac.__version__}"


def build_user_data(settings: Settings, machinetype: MachineType, *, machine_name: str,
                    uuid: str, mjf_urls: Sequence[Optional[str]], shutdown_time: int,
                    version: Optional[str] = None, fetcher: Optional[Fetcher] = None,
                    proxy_maker: Optional[ProxyMaker] = None,
                    heartbeat_machines_url: Optional[str] = None,
                    now: Optional[float] = None) -> bytes:
    """The machine's user_data: its machinetype's template with every substitution done.

    Args:
        machine_name: the machine's FQDN.
        uuid: the machine's UUID, decided before user_data is built (the original's bug was
            building user_data first, so ##user_data_uuid## was always empty).
        mjf_urls: (machinefeatures, jobfeatures, joboutputs) as the machine sees them
            (the backend's Capabilities).
        shutdown_time: the machine's shutdown time (expiry of an X.509 proxy).
        version: Vac's version without "Vac " (default: vac.__version__).
        fetcher: fetch_bytes(url, *, timeout, max_bytes, user_agent) -> bytes; default
            vac.fetch.fetch_bytes.
        proxy_maker: make_proxy(cert_path, key_path, expires, *, cn, legacy, now) -> str;
            default vac.machine.x509proxy.make_proxy.
        heartbeat_machines_url: only Vcycle ever supplied one.
        now: the clock, for the proxy.

    Raises:
        UserDataError: naming the machinetype and the template, file or proxy at fault.
    """
    if not uuid:
        raise UserDataError(f"machinetype {machinetype.name}: the machine UUID must be known "
                            "before user_data is built")
    template = load_template(machinetype, fetcher=fetcher, version=version)
    table = substitutions(settings, machinetype, machine_name=machine_name, uuid=uuid,
                          mjf_urls=mjf_urls, version=version,
                          template_url=template.source if template.remote else None,
                          heartbeat_machines_url=heartbeat_machines_url)
    head: List[Tuple[str, bytes]] = []
    if machinetype.user_data_proxy:
        head.append(("option_x509_proxy",
                     _proxy(machinetype, shutdown_time, proxy_maker, now).encode()))
    table = table + head + _option_values(machinetype) + _file_values(machinetype)
    data = substitute(template.data, table)
    if len(data) > OUTPUT_LIMIT:
        raise UserDataError(f"machinetype {machinetype.name}: user_data from {template.source}"
                            f" is larger than {OUTPUT_LIMIT} bytes after substitution")
    log.debug("%s: user_data from %s, %d bytes", machine_name, template.source, len(data))
    return data


def load_template(machinetype: MachineType, *, fetcher: Optional[Fetcher] = None,
                  version: Optional[str] = None) -> Template:
    """The raw template: http(s) URLs fetched every time, else an absolute path or a name
    under <machinetype_path>/files/.

    Raises:
        UserDataError: none configured, fetch failed, unreadable or larger than TEMPLATE_LIMIT.
    """
    source = machinetype.user_data
    if not source:
        raise UserDataError(f"machinetype {machinetype.name}: no user_data template configured")
    if is_remote(source):
        return Template(source, _fetch(machinetype, source, fetcher, version), remote=True)
    path = machinetype.files_path(source)
    try:
        data = read_bounded(path, TEMPLATE_LIMIT)
    except (OSError, ValueError) as e:
        raise UserDataError(f"machinetype {machinetype.name}: cannot read user_data template "
                            f"{path}: {_reason(e)}") from e
    return Template(path, data, remote=False)


def substitutions(settings: Settings, machinetype: MachineType, *, machine_name: str,
                  uuid: str, mjf_urls: Sequence[Optional[str]], version: Optional[str] = None,
                  template_url: Optional[str] = None,
                  heartbeat_machines_url: Optional[str] = None) -> List[Tuple[str, bytes]]:
    """The fixed part of the table, in the original's order: (name after user_data_, value).

    Names with no value here (no remote template, a local root_image, ...) are simply absent,
    so their patterns are removed with the other leftovers. Pure.
    """
    ver = manager_version(version)
    factory = settings.factory_name
    rows: List[Tuple[str, Optional[str]]] = [
        ("url", template_url),
        ("site", settings.site),
        ("space", settings.vac_space),
        ("machinetype", machinetype.name),
        ("machine_hostname", machine_name),
        ("manager_version", ver),
        ("manager_hostname", factory),
    ]
    for name, url in zip(MJF_URL_NAMES, tuple(mjf_urls) + (None,) * 3):
        rows += [(name, url), ("manager_" + name, url)]   # practice, and HSF-TN-2016-04
    image = machinetype.root_image or ""
    rows += [
        ("root_image_url", image if is_remote(image) else None),
        ("heartbeat_machines_url", heartbeat_machines_url),
        ("vmtype", machinetype.name),                     # deprecated synonyms
        ("vm_hostname", machine_name),
        ("vmlm_version", ver),
        ("vmlm_hostname", factory),
        ("uuid", uuid),
    ]
    return [(name, value.encode()) for name, value in rows if value]


def substitute(template: bytes, table: Sequence[Tuple[str, bytes]]) -> bytes:
    """Replace every ##user_data_NAME## by the first value for NAME in table, and remove
    every other ##user_data_[a-z0-9_]*## pattern. One pass; values are not rescanned. Pure."""
    values: Dict[bytes, bytes] = {}
    for name, value in table:
        values.setdefault(b"##user_data_" + name.encode() + b"##", value)
    return PATTERN_RE.sub(lambda m: values.get(m.group(0), b""), template)


def read_bounded(path: str, limit: int) -> bytes:
    """At most `limit` bytes of a regular file (site-managed, so symlinks are followed).

    Raises:
        OSError: cannot be opened or read.
        ValueError: not a regular file, or larger than `limit`.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError("not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def _option_values(machinetype: MachineType) -> List[Tuple[str, bytes]]:
    return [("option_" + key, str(value).encode())
            for key, value in sorted(machinetype.user_data_options.items())]


def _file_values(machinetype: MachineType) -> List[Tuple[str, bytes]]:
    """Every user_data_file_XXX read (all of them, used or not, as the original did) and
    offered for ##user_data_file_XXX## and ##user_data_option_XXX##."""
    rows: List[Tuple[str, bytes]] = []
    for key, name in sorted(machinetype.user_data_files.items()):
        path = machinetype.files_path(name) if name else ""
        try:
            if not path:
                raise ValueError("empty file name")
            data = read_bounded(path, FILE_LIMIT)
        except (OSError, ValueError) as e:
            raise UserDataError(f"machinetype {machinetype.name}: user_data_file_{key}: cannot "
                                f"read {path or repr(name)}: {_reason(e)}") from e
        if key in machinetype.user_data_options:
            log.warning("machinetype %s: both user_data_option_%s and user_data_file_%s are "
                        "set; ##user_data_option_%s## gets the option", machinetype.name,
                        key, key, key)
        rows += [("file_" + key, data), ("option_" + key, data)]
    return rows


def _fetch(machinetype: MachineType, url: str, fetcher: Optional[Fetcher],
           version: Optional[str]) -> bytes:
    if fetcher is None:
        from vac.fetch import fetch_bytes as fetcher
    try:
        data = fetcher(url, timeout=FETCH_TIMEOUT, max_bytes=TEMPLATE_LIMIT,
                       user_agent=manager_version(version))
    except FetchError as e:
        raise UserDataError(f"machinetype {machinetype.name}: cannot fetch user_data template "
                            f"{url}: {e}") from e
    if len(data) > TEMPLATE_LIMIT:
        raise UserDataError(f"machinetype {machinetype.name}: user_data template {url} is "
                            f"larger than {TEMPLATE_LIMIT} bytes")
    return bytes(data)


def _proxy(machinetype: MachineType, shutdown_time: int, proxy_maker: Optional[ProxyMaker],
           now: Optional[float]) -> str:
    cert = os.path.join(machinetype.machinetype_path, "x509cert.pem")
    key = os.path.join(machinetype.machinetype_path, "x509key.pem")
    try:
        if proxy_maker is None:
            try:
                from vac.machine.x509proxy import make_proxy as proxy_maker
            except ImportError as e:
                raise UserDataError(f"cannot load the proxy maker: {e}") from e
        legacy = machinetype.legacy_proxy
        return proxy_maker(cert, key, int(shutdown_time), cn=None if legacy else machinetype.name,
                           legacy=legacy, now=time.time() if now is None else now)
    except VacError as e:
        raise UserDataError(f"machinetype {machinetype.name}: user_data_proxy: cannot make a "
                            f"proxy from {cert}: {e}") from e


def _reason(e: Exception) -> str:
    return (e.strerror or str(e)) if isinstance(e, OSError) else str(e)
