# SPDX-License-Identifier: BSD-2-Clause
"""VacQuery 01.03 messages, as the original's: field tables, cookies, encode and decode (pure).

Datagrams are JSON objects, as the original sent them (json.dumps with its default
separators). Decoding is for hostile input: a datagram over its size bound, not UTF-8 JSON,
not an object, of another space or version, without a well-formed cookie or with a field of
the wrong type is rejected with MessageError, never repaired. A reply must also carry the
cookie the client derived for the factory that the reply names.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

VACQUERY_VERSION = "VacQuery 01.03"
# Queries from these versions are answered (01.00 to 01.03 share the query fields).
ACCEPTED_VERSIONS = ("VacQuery 01.00", "VacQuery 01.01", "VacQuery 01.02", VACQUERY_VERSION)
DEFAULT_PORT = 995
QUERY_LIMIT = 1024      # the responder reads up to 1024 bytes per query
REPLY_LIMIT = 10240     # clients read up to 10240 bytes per reply
STRING_LIMIT = 1024     # no string field is longer
COOKIE_RE = re.compile(r"\A[0-9a-fA-F]{64}\Z")

MACHINES, MACHINETYPES, FACTORY = "machines_query", "machinetypes_query", "factory_query"
REPLY_TYPE = {MACHINES: "machine_status", MACHINETYPES: "machinetype_status",
              FACTORY: "factory_status"}
LEGACY_METHOD = {"machines": MACHINES, "machinetypes": MACHINETYPES, "factories": FACTORY}
# The original sent the legacy method with machines and factories queries, not machinetypes.
METHOD_SENT = {MACHINES: "machines", FACTORY: "factories"}
COUNT_FIELD = {MACHINES: "num_machines", MACHINETYPES: "num_machinetypes"}
COUNT_LIMIT = 4096      # a factory reporting more machines or machinetypes is not believed


class MessageError(ValueError):
    """A datagram that is not a VacQuery message we accept; the text says why.

    `ours` is true for a reply that carried our cookie (so it answers our query) and was
    still refused: a client reports those, where any other stray datagram is only ignored.
    """

    def __init__(self, text: str, ours: bool = False):
        super().__init__(text)
        self.ours = ours


# Field kinds: str, int, num (int or float); "?" after a kind also allows null.
COMMON_FIELDS = {"message_type": "str", "vac_version": "str", "daemon_version": "str?",
                 "vacquery_version": "str", "cookie": "str", "space": "str",
                 "factory": "str", "time_sent": "num", "site": "str?"}
MACHINE_FIELDS = {
    "num_machines": "int", "machine": "str", "state": "str", "machine_model": "str?",
    "uuid": "str?", "created_time": "num?", "started_time": "num?", "heartbeat_time": "num?",
    "num_cpus": "int?", "num_processors": "int?", "cpu_seconds": "num?",
    "cpu_percentage": "num?", "hs06": "num?", "machinetype": "str?",
    "shutdown_message": "str?", "shutdown_time": "num?", "fqan": "str?"}
MACHINETYPE_FIELDS = {
    "num_machinetypes": "int", "machinetype": "str", "bytes_per_processor": "int?",
    "running_hs06": "num?", "running_machines": "int?", "running_cpus": "int?",
    "running_processors": "int?", "num_before_fizzle": "int?", "shutdown_message": "str?",
    "shutdown_time": "num?", "shutdown_machine": "str?", "fqan": "str?",
    "max_wallclock_seconds": "int?", "max_processors": "int?"}
FACTORY_FIELDS = {name: "num?" for name in (
    "running_cpus", "running_processors", "running_machines", "running_hs06", "max_cpus",
    "max_processors", "max_machines", "max_hs06", "total_cpus", "total_machines",
    "total_hs06", "root_disk_avail_kb", "root_disk_avail_inodes", "vac_disk_avail_kb",
    "daemon_disk_avail_kb", "vac_disk_avail_inodes", "daemon_disk_avail_inodes",
    "load_average", "boot_time", "factory_heartbeat_time", "responder_heartbeat_time",
    "mjf_heartbeat_time", "metadata_heartbeat_time", "swap_used_kb", "swap_free_kb",
    "mem_used_kb", "mem_total_kb")}
FACTORY_FIELDS.update({"kernel_version": "str?", "os_issue": "str?"})
REPLY_FIELDS = {"machine_status": MACHINE_FIELDS, "machinetype_status": MACHINETYPE_FIELDS,
                "factory_status": FACTORY_FIELDS}
# Keys a client needs in each reply; the others are typed when present.
REQUIRED = {
    "machine_status": ("num_machines", "machine", "state", "uuid", "created_time",
                       "started_time", "heartbeat_time", "cpu_seconds", "cpu_percentage",
                       "hs06", "machinetype", "shutdown_message", "shutdown_time"),
    "machinetype_status": ("num_machinetypes", "machinetype", "running_hs06",
                           "num_before_fizzle", "shutdown_message", "shutdown_time",
                           "shutdown_machine"),
    "factory_status": ()}


# Cookies ------------------------------------------------------------------------------------

def new_salt() -> str:
    """base64 of 32 random bytes: one per client call."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


def cookie_for(salt: str, factory: str) -> str:
    """sha256 hex of salt + factory name: the cookie a reply from that factory must echo."""
    return hashlib.sha256((salt + factory).encode("utf-8")).hexdigest()


def version_string(version: str, program: str = "") -> str:
    """'Vac <version> <program>' (vac_version and daemon_version)."""
    return f"Vac {version} {program}" if program else f"Vac {version}"


# Encoding -----------------------------------------------------------------------------------

def encode(message: Mapping[str, Any], limit: int = REPLY_LIMIT) -> bytes:
    """The datagram for a message; MessageError if it would exceed the limit."""
    data = json.dumps(dict(message)).encode("utf-8")
    if len(data) > limit:
        raise MessageError(f"{message.get('message_type')} of {len(data)} bytes exceeds "
                           f"{limit}")
    return data


def make_query(kind: str, space: str, cookie: str, vac_version: str) -> Dict[str, Any]:
    """A machines, machinetypes or factory query, with the legacy method where it was sent."""
    if kind not in REPLY_TYPE:
        raise MessageError(f"unknown query {kind!r}")
    query = {"vac_version": vac_version, "vacquery_version": VACQUERY_VERSION,
             "space": space, "cookie": cookie, "message_type": kind}
    if kind in METHOD_SENT:
        query["method"] = METHOD_SENT[kind]
    return query


def reply_header(kind: str, cookie: str, space: str, factory: str, site: str,
                 version: str, time_sent: int) -> Dict[str, Any]:
    """The fields every reply to a query of this kind starts with."""
    return {"message_type": REPLY_TYPE[kind], "vac_version": version,
            "daemon_version": version, "vacquery_version": VACQUERY_VERSION,
            "cookie": cookie, "space": space, "factory": factory,
            "time_sent": int(time_sent), "site": site}


def two_decimals(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), 2)


# Decoding -----------------------------------------------------------------------------------

def _load(data: bytes, limit: int) -> Dict[str, Any]:
    if not isinstance(data, (bytes, bytearray)):
        raise MessageError("not bytes")
    if len(data) > limit:
        raise MessageError(f"{len(data)} bytes is over the limit of {limit}")
    try:
        message = json.loads(bytes(data).decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MessageError(f"not JSON: {str(e)[:80]}") from None
    if not isinstance(message, dict):
        raise MessageError("not a JSON object")
    return message


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def field_value(name: str, value: Any, kind: str) -> Any:
    """The value of a field of this kind, or MessageError; "?" kinds allow null.

    An "int" may come as a float with no fractional part and is returned as an int: the
    original sums processors as floats, so Python 2 sends "running_processors": 2.0.
    """
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    if kind == "str":
        ok = isinstance(value, str) and len(value) <= STRING_LIMIT
    elif isinstance(value, bool):
        ok = False
    elif kind == "int":
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and abs(value) < 2 ** 63
    else:
        ok = (isinstance(value, int) and abs(value) < 2 ** 63) or \
            (isinstance(value, float) and math.isfinite(value))
    if not ok:
        raise MessageError(f"{name} is not {'an' if kind == 'int' else 'a'} {kind}: "
                           f"{str(value)[:40]!r}")
    return value


def check_field(message: Mapping[str, Any], name: str, kind: str) -> None:
    """MessageError unless message[name] (present) is of the kind; "?" kinds allow null."""
    field_value(name, message[name], kind)


def _check_space(message: Mapping[str, Any], space: str) -> None:
    if message.get("space") != space:
        raise MessageError(f"space {str(message.get('space'))[:80]!r} is not {space!r}")


def decode_query(data: bytes, space: str) -> Tuple[str, str]:
    """(kind, cookie) of a query to a factory of this space, or MessageError."""
    message = _load(data, QUERY_LIMIT)
    cookie = message.get("cookie")
    if not isinstance(cookie, str) or not COOKIE_RE.match(cookie):
        raise MessageError("no well-formed cookie")
    _check_space(message, space)
    if message.get("vacquery_version") not in ACCEPTED_VERSIONS:
        raise MessageError(f"vacquery_version {str(message.get('vacquery_version'))[:40]!r}")
    kind = message.get("message_type")
    if kind is None:
        kind = LEGACY_METHOD.get(message.get("method"))  # type: ignore[arg-type]
    if not isinstance(kind, str) or kind not in REPLY_TYPE:
        raise MessageError(f"unknown message_type {str(kind)[:40]!r}")
    return kind, cookie   # echoed exactly as it came


def decode_reply(data: bytes, space: str, kind: str, salt: str,
                 cookie_name: Optional[str] = None) -> Dict[str, Any]:
    """A reply to our query of this kind, checked against the field tables, or MessageError.

    The reply must be of the type our query asks for, of our space, and carry the cookie our
    salt gives for the factory it names (or for `cookie_name`, the name the query went to,
    when that was an address or an alias); every known field present must have its type.
    """
    message = _load(data, REPLY_LIMIT)
    expected = REPLY_TYPE[kind]
    if message.get("message_type") != expected:
        raise MessageError(f"message_type {str(message.get('message_type'))[:40]!r} is not "
                           f"{expected}")
    _check_space(message, space)
    factory = message.get("factory")
    if not isinstance(factory, str) or not factory or len(factory) > 255:
        raise MessageError("no factory name")
    if message.get("cookie") != cookie_for(salt, cookie_name or factory):
        raise MessageError(f"cookie is not ours for {(cookie_name or factory)[:80]!r}")
    try:
        _check_fields(message, kind, expected)
    except MessageError as e:
        raise MessageError(f"{_named(message, expected)}: {e}", ours=True) from None
    return message


def _check_fields(message: Dict[str, Any], kind: str, expected: str) -> None:
    """Every field of the tables present has its kind (integral floats made ints)."""
    fields = dict(COMMON_FIELDS, **REPLY_FIELDS[expected])
    for name in REQUIRED[expected]:
        if name not in message:
            raise MessageError(f"without {name}")
    for name, field_kind in fields.items():
        if name in message:
            message[name] = field_value(name, message[name], field_kind)
    count = COUNT_FIELD.get(kind)
    if count is not None and not 0 < message[count] <= COUNT_LIMIT:
        raise MessageError(f"{count} {message[count]} is out of range")


def _named(message: Mapping[str, Any], expected: str) -> str:
    """'machine_status f2-00.example.com from f2.example.com': the datagram refused."""
    what = message.get({"machine_status": "machine",
                        "machinetype_status": "machinetype"}.get(expected, ""))
    what = f" {what[:80]}" if isinstance(what, str) and what else ""
    return f"{expected}{what} from {str(message.get('factory'))[:80]}"
