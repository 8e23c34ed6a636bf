# SPDX-License-Identifier: BSD-2-Clause
"""A stand-in for the Docker engine's socket that a test can make vanish, to show what
vacd and the backend do when the engine goes away mid-run."""
from __future__ import annotations

import os
import socket
import threading
from typing import List, Optional


class SocketProxy:
    """A UNIX socket in front of the engine's: stop() is the engine vanishing for every client
    of the proxy (socket gone, connections cut), hang() an engine that accepts and never
    answers. The shared dockerd itself is never stopped."""

    def __init__(self, path: str, target: str = "/var/run/docker.sock"):
        self.path, self.target = path, target
        self.hanging = False
        self.conns: List[socket.socket] = []
        self.listener: Optional[socket.socket] = None

    def start(self) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if os.path.exists(self.path):
            os.unlink(self.path)
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self.conns = []

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.conns.append(client)
            if self.hanging:
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            self.conns.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
