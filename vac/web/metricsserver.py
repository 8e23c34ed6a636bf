# SPDX-License-Identifier: BSD-2-Clause
"""The metrics endpoint in vacd: an HTTP server thread on metrics_address:metrics_port (off
unless metrics_port is set) serving vac.web.metrics' registry at /metrics, and the one call
the daemon makes after each cycle. prometheus_client is imported only when the endpoint is on;
the endpoint is rebound when the configured address changes and closed when vacd stops. When
status_port equals metrics_port, the status page's listener (vac.web.statusserver) serves
/metrics from this registry and nothing is bound here. Any failure here is logged and never
reaches the cycle. When metrics_port is set and prometheus_client is not installed, that is one
ERROR line naming the setting and the package (vac.optional), no traceback; the same line each
cycle, which vacd's log (vac.service.journal.Repeats) shows once while it holds; the endpoint
comes up at the first cycle after the package is installed."""
from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Tuple

from vac import optional
from vac.config.model import Config
from vac.web.listener import Listener

log = logging.getLogger(__name__)
SHARED = "status page"   # bound.0 when the status page's listener serves /metrics
LIBRARY = "prometheus_client"


class MetricsEndpoint(Listener):
    what = "metrics"

    def __init__(self, get_config: Callable[[], Optional[Config]], responder: Any = None):
        super().__init__()
        self.get_config = get_config
        self.responder = responder
        self.metrics = None

    def after_cycle(self, report: Any, seconds: float) -> None:
        """Count the cycle's report and serve where the configuration says."""
        config = self.get_config()
        try:
            want = self._wanted(config)
            self.rebind(want if want is None or self._library_present() else None)
            if self.metrics is not None:
                from vac.web.feed import after_cycle

                after_cycle(self.metrics, config, report, seconds)
        except Exception:  # noqa: BLE001 - monitoring must never stop the factory
            log.exception("metrics: counting the cycle failed")

    @staticmethod
    def _library_present() -> bool:
        """Whether prometheus_client imports; if not, one ERROR line naming the setting and the
        package (the same line each cycle: vacd's log shows it once while it holds)."""
        if optional.installed(LIBRARY):
            return True
        log.error("%s; no metrics are served",
                  optional.MissingLibrary.of("metrics_port", LIBRARY).text())
        return False

    @staticmethod
    def _wanted(config: Optional[Config]) -> Optional[Tuple[str, int]]:
        if config is None or not config.settings.metrics_port:
            return None
        if config.settings.status_port == config.settings.metrics_port:
            return (SHARED, config.settings.metrics_port)   # the status page serves /metrics
        return (config.settings.metrics_address, config.settings.metrics_port)

    def _bind(self, want: Tuple[str, int]) -> Any:
        from vac.web.metrics import Metrics

        if self.metrics is None:
            self.metrics = Metrics(self.get_config, self.responder)
        if want[0] == SHARED:
            return None
        from prometheus_client import start_http_server

        server, _ = start_http_server(want[1], want[0], registry=self.metrics.registry)
        return server

    def _url(self, want: Tuple[str, int]) -> str:
        if want[0] == SHARED:
            return f"the status page's port {want[1]} (/metrics)"
        return f"http://{want[0]}:{want[1]}/metrics"
