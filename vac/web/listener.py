# SPDX-License-Identifier: BSD-2-Clause
"""A listener vacd binds where the configuration says: after each cycle it is given the
(address, port) it should serve on, or None; it is rebound when that changes and closed when
vacd stops. A port that cannot be bound is logged (the same line each cycle, which vacd's log
shows once while it holds), and the next cycle tries again."""
from __future__ import annotations

import logging
from typing import Any, Optional, Tuple

log = logging.getLogger(__name__)
Where = Tuple[str, int]


class Listener:
    """The bind/rebind/close cycle of one HTTP server thread; subclasses say how to bind."""

    what = "listener"

    def __init__(self) -> None:
        self.server: Any = None
        self.bound: Optional[Where] = None

    def _bind(self, want: Where) -> Any:
        """Start serving on want and return the server (None: nothing of its own to close).

        Raises:
            OSError: the address cannot be bound.
        """
        raise NotImplementedError

    def _url(self, want: Where) -> str:
        return f"http://{want[0]}:{want[1]}/"

    def rebind(self, want: Optional[Where]) -> None:
        """Serve on want (None: nowhere), binding anew only when it changed."""
        if want == self.bound:
            return
        self.close()
        if want is None:
            return
        try:
            self.server = self._bind(want)
        except OSError as e:
            log.error("%s %s:%d cannot be bound (tried again each cycle): %s", self.what,
                      want[0], want[1], e)
            return
        self.bound = want
        log.info("%s served on %s", self.what, self._url(want))

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.server = None
        self.bound = None
