# SPDX-License-Identifier: BSD-2-Clause
"""The status page's HTTP side in vacd: a ThreadingHTTPServer thread on
status_address:status_port (off unless status_port is set), and the one call the daemon
makes after each cycle (bind, rebind on a changed address, close on exit).

Read only: GET and HEAD (anything else 405), paths up to PATH_LIMIT, no request body read,
at most CONCURRENCY requests at once (503 beyond), a socket timeout; unknown paths and
names that are not this factory's slots or machine directories are 404; at most CONNECTIONS
connections are held at once (more are closed). When metrics_port
equals status_port the same listener also serves /metrics (the MetricsEndpoint then binds
nothing). Any failure is logged and never reaches the cycle.

    /                   the factory page          /api/factory
    /space              the space page            /api/space
    /slot/<slot>        a slot and its machine    /api/slot/<slot>
    /machine/<dir>      a machine directory       /api/machine/<dir>
    /api                the list of the API's paths
"""
from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, Optional, Tuple

from vac.config.model import Config
from vac.web import machinefiles, statuspages
from vac.web.listener import Listener
from vac.web.spaceview import space_view
from vac.web.status import SpaceView, factory_view, markers, read_plan, slot_cell

log = logging.getLogger(__name__)

PATH_LIMIT = 2048
CONCURRENCY = 16     # requests being answered at once
CONNECTIONS = 64     # connections with a thread (sending their request or answered)
TIMEOUT = 10.0
API_INDEX = {"/api/factory": "the factory: health, slots, machinetypes, last finished",
             "/api/space": "the space: one row per factory of the census, silent ones marked",
             "/api/slot/<slot>": "one slot: its current machine's files, or why it is idle",
             "/api/machine/<directory>": "one machine directory under machines/"}


class Views:
    """What a request can ask for, from the config the factory holds and its space poll."""

    def __init__(self, get_config: Callable[[], Optional[Config]], space: Any = None,
                 metrics: Any = None):
        self.get_config = get_config
        self.space = space
        self.metrics = metrics      # the MetricsEndpoint, for a shared listener's /metrics

    def route(self, path: str) -> Tuple[int, str, Any]:
        """(status, kind, payload): kind is a page template, "json", "text" or "missing"."""
        config = self.get_config()
        if config is None:
            return 503, "text", "vacd has no configuration yet\n"
        now = time.time()
        space = SpaceView.of(self.space)
        parts = path.strip("/").split("/")
        api = parts[0] == "api"
        head, rest = (parts[1:2], parts[2:]) if api else (parts[:1], parts[1:])
        name = (head or [""])[0]
        if name == "" and not rest:
            return (200, "json", API_INDEX) if api else \
                (200, "factory", factory_view(config, now, space))
        if name == "factory" and api and not rest:
            return 200, "json", factory_view(config, now, space)
        if name == "space" and not rest:
            return 200, "json" if api else "space", space_view(config, now, space)
        if name in ("slot", "machine") and len(rest) == 1:
            return self._machine(config, name, urllib.parse.unquote(rest[0]), api, now)
        return 404, "missing", path

    def _machine(self, config: Config, kind: str, name: str, api: bool,
                 now: float) -> Tuple[int, str, Any]:
        if kind == "slot":
            return self._slot(config, name, api, now)
        directory = machinefiles.directory_named(config, name)
        if directory is None:
            return 404, "missing", f"/machine/{name}"
        return 200, "json" if api else "machine", machinefiles.machine_view(config, directory,
                                                                              now)

    @staticmethod
    def _slot(config: Config, name: str, api: bool, now: float) -> Tuple[int, str, Any]:
        """A slot: its current machine's page (saying why the slot is idle once the machine
        has finished), or the free slot's reason."""
        names = machinefiles.slot_names(config)
        if name not in names:                # also refuses every path and traversal
            return 404, "missing", f"/slot/{name}"
        cell = slot_cell(config, read_plan(config), names.index(name), name, markers(config),
                         now)
        directory = machinefiles.directory_of_slot(config, name)
        if directory is None:
            cell["time"] = int(now)
            return 200, "json" if api else "slot", cell
        view = machinefiles.machine_view(config, directory, now)
        if view["finished"] is not None:
            view["slot_idle"] = {"state": cell["state"], "reason": cell["reason"],
                                 "backoff_until": cell["backoff_until"]}
        return 200, "json" if api else "machine", view

    def metrics_text(self) -> Optional[bytes]:
        registry = getattr(getattr(self.metrics, "metrics", None), "registry", None)
        if registry is None:
            return None
        from prometheus_client import generate_latest

        return generate_latest(registry)


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "vacd-status"
    sys_version = ""
    timeout = TIMEOUT
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass        # one line per page view would flood vacd's log

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def _refuse(self) -> None:
        self._send(405, "text/plain; charset=utf-8", b"only GET and HEAD\n", True,
                   {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815

    def _answer(self, body: bool) -> None:
        gate: threading.BoundedSemaphore = self.server.gate  # type: ignore[attr-defined]
        if len(self.path) > PATH_LIMIT:
            self._send(414, "text/plain; charset=utf-8", b"path too long\n", body)
            return
        if not gate.acquire(blocking=False):
            self._send(503, "text/plain; charset=utf-8", b"busy\n", body, {"Retry-After": "1"})
            return
        try:
            self._serve(body)
        except Exception:  # noqa: BLE001 - a page must never take vacd down
            log.exception("status page %r failed", self.path[:200])
            self._send(500, "text/plain; charset=utf-8", b"internal error (see vacd's log)\n",
                       body)
        finally:
            gate.release()

    def _serve(self, body: bool) -> None:
        views: Views = self.server.views  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/metrics":
            text = views.metrics_text()
            if text is not None:
                self._send(200, "text/plain; version=0.0.4; charset=utf-8", text, body)
                return
        status, kind, payload = views.route(url.path)
        if kind == "json":
            data = json.dumps(payload, sort_keys=True, indent=1, allow_nan=False)
            self._send(status, "application/json", data.encode(), body)
        elif kind == "text":
            self._send(status, "text/plain; charset=utf-8", payload.encode(), body)
        else:
            self._send(status, "text/html; charset=utf-8",
                       self._page(kind, payload, url.query).encode(), body)

    def _page(self, kind: str, payload: Any, query: str) -> str:
        if kind == "missing":
            return statuspages.missing_page(payload)
        asked = urllib.parse.parse_qs(query).get("refresh", [""])[0]
        config = self.server.views.get_config()  # type: ignore[attr-defined]
        refresh = statuspages.refresh_seconds(
            config.settings.cycle_seconds if config else 60.0,
            int(asked) if asked.isdigit() and len(asked) < 6 else None)
        render = {"factory": statuspages.factory_page, "machine": statuspages.machine_page,
                  "slot": statuspages.slot_page, "space": statuspages.space_page}[kind]
        return render(payload, refresh)

    def _send(self, status: int, content_type: str, data: bytes, body: bool,
              extra: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)


class Server(http.server.ThreadingHTTPServer):
    """At most CONNECTIONS connections have a thread (each with TIMEOUT to send its
    request); a connection beyond them is closed at once."""

    daemon_threads = True
    request_queue_size = 32

    def __init__(self, address: Tuple[str, int], views: Views):
        # IPv6 for an IPv6 address ("::" then serves IPv4 too, as the responder's default).
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Handler)
        self.views = views
        self.gate = threading.BoundedSemaphore(CONCURRENCY)
        self.connections = threading.BoundedSemaphore(CONNECTIONS)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                                   0 if self.server_address[0] == "::" else 1)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()


def start(address: str, port: int, views: Views) -> Server:
    """Bind and serve in a daemon thread; OSError if the address cannot be bound."""
    server = Server((address, port), views)
    thread = threading.Thread(target=server.serve_forever, name="vac-status", daemon=True)
    thread.start()
    return server


class StatusEndpoint(Listener):
    """vacd's status page: bound after each cycle where the configuration says."""

    what = "status page"

    def __init__(self, get_config: Callable[[], Optional[Config]], space: Any = None,
                 metrics: Any = None):
        super().__init__()
        self.views = Views(get_config, space, metrics)

    def after_cycle(self) -> None:
        try:
            config = self.views.get_config()
            self.rebind((config.settings.status_address, config.settings.status_port)
                        if config is not None and config.settings.status_port else None)
        except Exception:  # noqa: BLE001 - monitoring must never stop the factory
            log.exception("status page: binding failed")

    def _bind(self, want: Tuple[str, int]) -> Server:
        return start(want[0], want[1], self.views)
