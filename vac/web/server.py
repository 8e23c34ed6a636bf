# SPDX-License-Identifier: BSD-2-Clause
"""The metrics endpoint in vacd: an HTTP server thread on metrics_address:metrics_port (off
unless metrics_port is set) serving vac.web.metrics' registry at /metrics, and the one call
the daemon makes after each cycle. prometheus_client is imported only when the endpoint is on;
the endpoint is rebound when the configured address changes and closed when vacd stops. When
status_port equals metrics_port, the status page's listener (vac.web.statusserver) serves
/metrics from this registry and nothing is bound here. Any failure here is logged and never
reaches the cycle."""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Tuple

from vac.config.model import Config

log = logging.getLogger(__name__)
SHARED = "status page"   # bound.0 when the status page's listener serves /metrics


class MetricsEndpoint:
    def __init__(self, get_config: Callable[[], Optional[Config]], responder: Any = None):
        self.get_config = get_config
        self.responder = responder
        self.metrics = None
        self.server = None
        self.bound: Optional[Tuple[str, int]] = None

    def after_cycle(self, report: Any, seconds: float) -> None:
        """Count the cycle's report and serve where the configuration says."""
        config = self.get_config()
        try:
            self._ensure(config)
            if self.metrics is not None:
                from vac.web.feed import after_cycle

                after_cycle(self.metrics, config, report, seconds)
        except Exception:  # noqa: BLE001 - monitoring must never stop the factory
            log.exception("metrics: counting the cycle failed")

    def _ensure(self, config: Optional[Config]) -> None:
        want = None
        if config is not None and config.settings.metrics_port:
            want = (config.settings.metrics_address, config.settings.metrics_port)
            if config.settings.status_port == config.settings.metrics_port:
                want = (SHARED, want[1])    # the status page's listener serves /metrics
        if want == self.bound:
            return
        self.close()
        if want is None:
            return
        from prometheus_client import start_http_server

        from vac.web.metrics import Metrics

        if self.metrics is None:
            self.metrics = Metrics(self.get_config, self.responder)
        if want[0] == SHARED:
            self.bound = want
            log.info("metrics served beside the status page on port %d", want[1])
            return
        try:
            self.server, _ = start_http_server(want[1], want[0], registry=self.metrics.registry)
        except OSError as e:
            log.error("metrics endpoint %s:%d cannot be bound: %s", want[0], want[1], e)
            return
        self.bound = want
        log.info("metrics served on http://%s:%d/metrics", want[0], want[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.server = None
        self.bound = None
