# SPDX-License-Identifier: BSD-2-Clause
"""The HTTP service VMs talk to: EC2/OpenStack metadata, MJF, and joboutputs PUT.

One service answers on both factory addresses (169.254.169.253 for MJF and joboutputs,
169.254.169.254 for metadata; every path works on both). It answers each VM only about
itself: the source address 169.254.169.N names slot N, whose slots/ record names the machine
directory. Any other source, or a slot without a live directory, gets 404 (GET) or 403 (PUT).
It only reads machine directories, apart from the joboutputs a VM PUTs.

Paths (any YYYY-MM-DD, "1.0" or "latest" as <v>; "//" folded; "." and ".." refused):
    /                                   EC2 versions            /openstack      OpenStack versions
    /<v>/user-data   /<v>/user_data     the machine's user_data (also under /openstack/<v>/)
    /<v>/meta-data.json  meta_data.json the OpenStack JSON      (also under /openstack/<v>/)
    /<v>/meta-data[/]                   listing: ami-id, instance-id, hostname, local-hostname,
                                        placement/, public-keys/, public-keys/0/openssh-key
    /<v>/meta-data/{ami-id,instance-id} job_id (the domain UUID)
    /<v>/meta-data/public-keys/0/openssh-key   the root public key
    /<v>/meta-data/network/...          the VM's interface (cloudmeta.py); OpenStack
                                        vendor_data.json, vendor_data2.json: {};
                                        network_data.json: its interface, DHCP for IPv4
    /machinefeatures[/], /jobfeatures[/]       HTML listing; /machinefeatures/KEY raw value
    PUT /joboutputs/NAME                one component, Content-Length required -> 201

Start it in vacd with MetadataServers(MetadataService(paths, factory_name)).ensure() once
the NAT network is up, and call ensure() again every cycle (it binds what is not bound yet).
"""
from __future__ import annotations

import html
import json
import logging
import os
import re
import stat
import threading
import unicodedata
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type

from vac import fsutil
from vac.errors import StateError
from vac.backends.libvirt import cloudmeta
from vac.backends.libvirt.heartbeat import METADATA, MJF, ServiceHeartbeat
from vac.backends.libvirt.unserved import Unserved
from vac.machine import joboutputs
from vac.machine.directory import MachineDir
from vac.machine.slots import BRIDGE_ADDRESS, MAX_ADDRESSED_ORDINAL, METADATA_ADDRESS, machine_name
from vac.paths import Paths

log = logging.getLogger(__name__)

MJF_BASE = f"http://{BRIDGE_ADDRESS}"
MACHINEFEATURES_URL = f"{MJF_BASE}/machinefeatures"
JOBFEATURES_URL = f"{MJF_BASE}/jobfeatures"
JOBOUTPUTS_URL = f"{MJF_BASE}/joboutputs"
EC2_VERSIONS = ("1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
                "2008-02-01", "2008-09-01", "2009-04-04", "latest")
OPENSTACK_VERSIONS = ("2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30",
                      "2016-10-06", "2017-02-22", "2018-08-27", "latest")
VERSION_RE = re.compile(r"latest|1\.0|[0-9]{4}-[0-9]{2}-[0-9]{2}")
MJF_DIRS = ("machinefeatures", "jobfeatures")
USER_DATA_LIMIT = 4 * 1024 * 1024
VALUE_LIMIT = 64 * 1024
KEY_LIMIT = 16 * 1024
MAX_PATH = 1024
MAX_CONNECTIONS = 64
MAX_CONNECTIONS_PER_PEER = 8
PUBLIC_KEY_NAME = "vac"
CONTENT_LENGTH_RE = re.compile(r"[0-9]{1,15}")
# A body refused on its Content-Length alone is still read and dropped up to this much before
# the connection closes, so a client still sending it reads the refusal instead of a reset.
DRAIN_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "text/plain"


NOT_FOUND = Reply(404, b"Not found\n")
FORBIDDEN = Reply(403, b"Forbidden\n")


def text_reply(text: str, content_type: str = "") -> Reply:
    kind = content_type or ("text/html" if text.startswith("<html>") else "text/plain")
    return Reply(200, text.encode(), kind)


def ordinal_from_address(address: str) -> Optional[int]:
    """169.254.169.N -> N for the addresses slots use, else None."""
    head, _, last = address.rpartition(".")
    if head != "169.254.169" or not re.fullmatch(r"0|[1-9][0-9]{0,2}", last):
        return None
    n = int(last)
    return n if n <= MAX_ADDRESSED_ORDINAL else None


def meta_data(directory: MachineDir, factory_name: str) -> Dict[str, object]:
    """The OpenStack meta_data.json of one machine (also written to its config drive)."""
    data: Dict[str, object] = {
        "availability_zone": factory_name,
        "uuid": directory.job_id or "",
        "hostname": directory.name,
        "name": directory.name,
        "launch_index": 0,
        "meta": {"machinefeatures": MACHINEFEATURES_URL, "jobfeatures": JOBFEATURES_URL,
                 "joboutputs": JOBOUTPUTS_URL, "machinetype": directory.machinetype},
    }
    key = public_key(directory)
    if key:
        data["public_keys"] = {"0": key}
    return data


def public_key(directory: MachineDir) -> Optional[str]:
    text = directory.read("root_public_key", KEY_LIMIT)
    return text.strip() + "\n" if text and text.strip() else None


def mjf_keys(directory: MachineDir, which: str) -> List[str]:
    """The valid key names of a machine's MJF directory (regular files only, sorted)."""
    path = directory.file(which)
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return []
        names = os.listdir(path)
    except OSError:
        return []
    keys = []
    for name in names:
        try:
            mode = os.lstat(os.path.join(path, name)).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and joboutputs.valid_name(name):
            keys.append(name)
    return sorted(keys)


def mjf_value(directory: MachineDir, which: str, key: str) -> Optional[bytes]:
    """One MJF value's bytes, or None if absent, unsafe or oversized."""
    if which not in MJF_DIRS or not joboutputs.valid_name(key):
        return None
    if os.path.islink(directory.file(which)):
        return None
    try:
        return fsutil.read_bytes_nofollow(directory.file(f"{which}/{key}"), VALUE_LIMIT)
    except (OSError, StateError):
        return None


class MetadataService:
    """Answers requests by client address; the HTTP layer is make_handler()'s.

    Args:
        paths: the state directory.
        factory_name: this factory's FQDN (slot names and availability_zone).
        slot_name: ordinal -> machine name, or None if no such slot (default: the factory's
            naming rule for every addressed ordinal).
        client_address: maps the socket's peer address to the address to identify (tests
            use this to make 127.0.0.1 look like 169.254.169.N); default: unchanged.
    """

    def __init__(self, paths: Paths, factory_name: str,
                 slot_name: Optional[Callable[[int], Optional[str]]] = None,
                 client_address: Optional[Callable[[str], str]] = None,
                 max_put_bytes: int = joboutputs.MAX_FILE_BYTES,
                 max_total_bytes: int = joboutputs.MAX_TOTAL_BYTES,
                 max_files: int = joboutputs.MAX_FILES):
        self.paths = paths
        self.factory_name = factory_name
        self.slot_name = slot_name or (lambda n: machine_name(factory_name, n))
        self.client_address = client_address or (lambda address: address)
        self.max_put_bytes = max_put_bytes          # the joboutputs bounds: set from vac.conf
        self.max_total_bytes = max_total_bytes      # by the supervisor every cycle
        self.max_files = max_files
        self.unserved = Unserved()

    def machine_for(self, peer: str) -> Optional[MachineDir]:
        """The live machine directory of the VM at this address, or None."""
        ordinal = ordinal_from_address(self.client_address(peer))
        if ordinal is None:
            return None
        name = self.slot_name(ordinal)
        if not name:
            return None
        try:
            directory = MachineDir.for_slot(self.paths, name)
        except StateError:
            return None
        if directory is None or directory.finished is not None:
            return None
        return directory

    # GET ----------------------------------------------------------------------------------

    def get(self, peer: str, path: str) -> Reply:
        """The answer to a GET; one that is not served is logged once (unserved.py)."""
        reply = self._get(peer, path)
        if reply.status == 404:
            self.unserved.note("GET", peer, self.who(peer), path, reply.status)
        return reply

    def who(self, peer: str) -> str:
        """The machine name a client address stands for, for log lines."""
        ordinal = ordinal_from_address(self.client_address(peer))
        name = self.slot_name(ordinal) if ordinal is not None else None
        return name or "no slot of this factory"

    def _get(self, peer: str, path: str) -> Reply:
        parts = split_path(path)
        directory = self.machine_for(peer) if parts is not None else None
        if directory is None or parts is None:
            return NOT_FOUND
        if parts and parts[0] in MJF_DIRS:
            return self._mjf(directory, parts)
        if not parts:
            return text_reply("\n".join(EC2_VERSIONS))
        ordinal = ordinal_from_address(self.client_address(peer))
        if parts[0] == "openstack":
            if len(parts) == 1:
                return text_reply("\n".join(OPENSTACK_VERSIONS))
            return self._versioned(directory, parts[1], parts[2:], openstack=True,
                                   ordinal=ordinal)
        return self._versioned(directory, parts[0], parts[1:], openstack=False, ordinal=ordinal)

    def _mjf(self, directory: MachineDir, parts: Sequence[str]) -> Reply:
        if len(parts) == 1:
            items = "".join(f'<li><a href="{html.escape(k)}">{html.escape(k)}</a></li>'
                            for k in mjf_keys(directory, parts[0]))
            return text_reply(f"<html><body><ul>{items}</ul></body></html>")
        if len(parts) == 2:
            value = mjf_value(directory, parts[0], parts[1])
            return NOT_FOUND if value is None else Reply(200, value)
        return NOT_FOUND

    def _versioned(self, directory: MachineDir, version: str, rest: Sequence[str],
                   openstack: bool, ordinal: Optional[int] = None) -> Reply:
        if not VERSION_RE.fullmatch(version):
            return NOT_FOUND
        user_data = directory.read("user_data", USER_DATA_LIMIT)
        if not rest:
            names = ["meta_data.json"] if openstack else ["meta-data"]
            if user_data is not None:
                names.append("user_data" if openstack else "user-data")
            return text_reply("\n".join(names))
        head = rest[0]
        if head in ("user-data", "user_data") and len(rest) == 1:
            return NOT_FOUND if user_data is None else Reply(200, user_data.encode())
        if head in ("meta-data.json", "meta_data.json") and len(rest) == 1:
            body = json.dumps(meta_data(directory, self.factory_name), sort_keys=True)
            return text_reply(body, "application/json")
        if head == "meta-data":
            return self._ec2_meta_data(directory, rest[1:], ordinal)
        if openstack and head in cloudmeta.OPENSTACK_EMPTY and len(rest) == 1:
            return text_reply("{}", "application/json")
        if openstack and head == "network_data.json" and len(rest) == 1:
            body = json.dumps(cloudmeta.openstack_network_data(ordinal), sort_keys=True)
            return text_reply(body, "application/json")
        return NOT_FOUND

    def _ec2_meta_data(self, directory: MachineDir, rest: Sequence[str],
                       ordinal: Optional[int]) -> Reply:
        key = public_key(directory)
        leaf = "/".join(rest)
        network = cloudmeta.ec2_network(ordinal)
        if not rest:
            names = ["ami-id", "hostname", "instance-id", "local-hostname", "placement/"]
            names += ["network/"] if network else []
            if key:
                names += ["public-keys/", "public-keys/0/openssh-key"]
            return text_reply("\n".join(names))
        values = {
            "ami-id": directory.job_id, "instance-id": directory.job_id,
            "hostname": directory.name, "local-hostname": directory.name,
            "placement": "availability-zone", "placement/availability-zone": self.factory_name,
            "public-keys": f"0={PUBLIC_KEY_NAME}" if key else None,
            "public-keys/0": "openssh-key" if key else None,
            "public-keys/0/openssh-key": key,
            **network,
        }
        value = values.get(leaf)
        return NOT_FOUND if value is None else text_reply(value)

    # PUT ----------------------------------------------------------------------------------

    def put_allowed(self, peer: str, path: str) -> Tuple[Optional[MachineDir], str]:
        """(machine directory, joboutput name) for an acceptable PUT, else (None, reason)."""
        parts = split_path(path)
        if parts is None or len(parts) != 2 or parts[0] != "joboutputs":
            return None, "only PUT /joboutputs/NAME"
        if not joboutputs.valid_name(parts[1]):
            return None, f"bad joboutput name {parts[1][:40]!r}"
        directory = self.machine_for(peer)
        if directory is None:
            return None, f"{peer} is not a live machine of this factory"
        return directory, parts[1]

    def put(self, directory: MachineDir, name: str, body: bytes) -> Reply:
        try:
            joboutputs.write_joboutput(directory.file("joboutputs"), name, body,
                                       max_bytes=self.max_put_bytes,
                                       max_total=self.max_total_bytes, max_files=self.max_files)
        except joboutputs.JoboutputRefused as e:
            log.warning("%s: joboutput refused: %s", directory.name, e)
            return FORBIDDEN
        log.info("%s: joboutput %s stored (%d bytes)", directory.name, name, len(body))
        return Reply(201, b"Created\n")


def loggable(text: str) -> str:
    """A guest's text for a log line, control characters as \\xNN (as http.server's own
    log_message does since Python 3.11.1): no terminal escapes through the log."""
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in text)


def split_path(path: str) -> Optional[List[str]]:
    """Path components with '//' folded and any query dropped; None if '.' or '..' appear."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if len(path) > MAX_PATH or not path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    return parts


class MetadataHandler(BaseHTTPRequestHandler):
    """The HTTP side of a MetadataService (make_handler binds one as `service`)."""

    service: MetadataService
    server_version = "Vac metadata server"
    sys_version = ""
    protocol_version = "HTTP/1.1"      # answers "Expect: 100-continue" (curl -T)
    timeout = 10

    def do_GET(self) -> None:
        self._send(self.service.get(self.client_address[0], self.path))

    def do_HEAD(self) -> None:
        reply = self.service.get(self.client_address[0], self.path)
        self._send(Reply(reply.status, b"", reply.content_type), len(reply.body))

    def do_PUT(self) -> None:
        directory, name = self.service.put_allowed(self.client_address[0], self.path)
        if directory is None:
            log.info("PUT %s from %s refused: %s", loggable(self.path[:200]),
                     self.client_address[0], loggable(name))
            self.close_connection = True
            return self._send(FORBIDDEN)
        length = self.headers.get("Content-Length", "").strip()
        if not CONTENT_LENGTH_RE.fullmatch(length):     # ASCII digits only, not "²"
            self.close_connection = True
            return self._send(Reply(411, b"Content-Length required\n"))
        if int(length) > self.service.max_put_bytes:
            return self._refuse_unread(Reply(413, b"Too large\n"), int(length))
        body = self.rfile.read(int(length))
        if len(body) != int(length):
            self.close_connection = True
            return self._send(Reply(400, b"Short body\n"))
        self._send(self.service.put(directory, name, body))

    def _refuse_unread(self, reply: Reply, length: int) -> None:
        """Answer, then read and drop at most DRAIN_LIMIT bytes of the unread body (until
        the handler's timeout), and close."""
        self.close_connection = True
        self._send(reply)
        self.wfile.flush()
        left = min(length, DRAIN_LIMIT)
        try:
            while left > 0:
                chunk = self.rfile.read1(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _send(self, reply: Reply, length: Optional[int] = None) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body) if length is None
                                               else length))
        self.end_headers()
        if reply.body:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib name)
        log.info("%s %s", self.client_address[0], loggable(format % args))


def make_handler(service: MetadataService) -> Type[BaseHTTPRequestHandler]:
    """A request handler class bound to one service."""
    return type("Handler", (MetadataHandler,), {"service": service})


class BoundedThreadingHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with daemon threads and at most MAX_CONNECTIONS at once, of which
    at most MAX_CONNECTIONS_PER_PEER from one address: a VM holding half-sent requests open
    (each byte restarts the handler's timeout) cannot take the service from the others."""

    daemon_threads = True
    request_queue_size = 256
    beat: Optional[Callable[[], None]] = None   # its heartbeat file's writer, every loop turn

    def service_actions(self) -> None:
        if self.beat is not None:
            self.beat()

    def __init__(self, address: Tuple[str, int], handler: Type[BaseHTTPRequestHandler]):
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._peers: Dict[str, int] = {}
        self._peers_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        peer = client_address[0]
        with self._peers_lock:
            if self._peers.get(peer, 0) >= MAX_CONNECTIONS_PER_PEER or \
                    not self._slots.acquire(blocking=False):
                self.shutdown_request(request)
                return
            self._peers[peer] = self._peers.get(peer, 0) + 1
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._peers_lock:
                left = self._peers.pop(client_address[0], 1) - 1
                if left > 0:
                    self._peers[client_address[0]] = left
            self._slots.release()


def serve(service: MetadataService, host: str, port: int,
          beat: Optional[Callable[[], None]] = None) -> BoundedThreadingHTTPServer:
    """Bind (host, port) and serve in a daemon thread; the caller shuts it down. beat() is
    called each turn of the serving loop (vac.backends.libvirt.heartbeat).

    Raises:
        OSError: the address cannot be bound (e.g. not configured yet).
    """
    server = BoundedThreadingHTTPServer((host, port), make_handler(service))
    server.beat = beat
    thread = threading.Thread(target=server.serve_forever, args=(0.1,),
                              name=f"metadata-{host}:{port}", daemon=True)
    thread.start()
    return server


class MetadataServers:
    """The servers vacd runs: one per factory address, (re)bound by ensure() every cycle.
    The first address's server keeps `mjf-heartbeat` fresh, the second's
    `metadata-heartbeat` (the original's vacd-mjf on .253 and vacd-metadata on .254)."""

    def __init__(self, service: MetadataService,
                 addresses: Sequence[str] = (BRIDGE_ADDRESS, METADATA_ADDRESS), port: int = 80):
        self.service = service
        self.addresses = tuple(addresses)
        self.port = port
        self.heartbeats = {address: ServiceHeartbeat(service.paths.state_dir, name)
                           for address, name in zip(self.addresses, (MJF, METADATA))}
        self.servers: Dict[str, BoundedThreadingHTTPServer] = {}

    def ensure(self) -> List[str]:
        """Bind every address not yet served; return the problems (empty when all serve)."""
        problems = []
        for address in self.addresses:
            if address in self.servers:
                continue
            try:
                beat = self.heartbeats.get(address)
                self.servers[address] = serve(self.service, address, self.port,
                                              beat.beat if beat else None)
                log.info("metadata service listening on %s:%d", address, self.port)
            except OSError as e:
                problems.append(f"cannot serve metadata on {address}:{self.port}: {e}")
        for problem in problems:
            log.warning("%s", problem)
        return problems

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()
        self.servers.clear()
