# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s checks that vacd's listeners answer while it runs: the VacQuery responder
(a factory query to vacquery_address:vacquery_port), the metrics endpoint (GET /metrics) and
the status page (GET /api), each asked as a client would ask it, with a short timeout.

A port that is held is not yet a port that is served: vacd may hold it and answer nothing (a
missing library, a crashed thread). When vacd does not run, vac.ops.checks.port says whether
each port is free instead. Never raises: every finding is a line.
"""
from __future__ import annotations

import urllib.error
import urllib.request
from typing import List

from vac import optional
from vac.config.model import Settings
from vac.ops.checks import FAIL, OK, Check
from vac.space import client
from vac.space import messages as m

ANSWER_TIMEOUT = 3.0
READ_LIMIT = 1024 * 1024
LOG_FIX = "look in vacd's log (journalctl -u vacd) for why it does not answer there"


def local(address: str) -> str:
    """Where to ask a listener bound to address: loopback for a wildcard."""
    return address if address and address not in ("0.0.0.0", "::") else "127.0.0.1"


def responder(settings: Settings, timeout: float = ANSWER_TIMEOUT) -> Check:
    """vacd's VacQuery responder answers a factory query."""
    address = local(settings.vacquery_address)
    where = f"udp {address}:{settings.vacquery_port}"
    result = client.query(m.FACTORY, settings.vac_space, [address], timeout,
                          port=settings.vacquery_port, program="vac",
                          addresses={address: (address, settings.vacquery_port)})
    reply = result.replies.get(address, {}).get("")
    if reply is None:
        return Check("vacquery-port", FAIL, f"vacd runs but {where} sent no VacQuery reply in "
                     f"{timeout:g} s (space {settings.vac_space})", LOG_FIX)
    return Check("vacquery-port", OK, f"{where}: vacd's responder answers as factory "
                 f"{reply['factory']}")


def http(name: str, address: str, port: int, path: str, setting: str, module: str,
         timeout: float = ANSWER_TIMEOUT) -> Check:
    """vacd's HTTP listener for setting answers GET path with 200."""
    url = f"http://{local(address)}:{port}{path}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # no proxy
    try:
        with opener.open(url, timeout=timeout) as response:
            response.read(READ_LIMIT)
            status = response.status
    except urllib.error.HTTPError as e:
        return Check(name, FAIL, f"{url} answers HTTP {e.code}", LOG_FIX)
    except (OSError, ValueError) as e:
        return Check(name, FAIL, f"vacd runs but {url} does not answer "
                     f"({_reason(e)})", _fix(setting, module))
    return Check(name, OK, f"{url} answers (HTTP {status})")


def _fix(setting: str, module: str) -> str:
    """The library's install when it is missing (vacd then serves nothing), else the log."""
    if not optional.installed(module):
        return optional.MissingLibrary.of(setting, module).package
    return LOG_FIX


def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None) or e
    return " ".join(str(reason).split())[:200] or type(e).__name__


def served(settings: Settings, timeout: float = ANSWER_TIMEOUT) -> List[Check]:
    """Every listener vacd should be serving under this configuration."""
    s = settings
    lines = [responder(s, timeout)]
    if s.status_port:
        lines.append(http("status-port", s.status_address, s.status_port, "/api",
                          "status_port", "jinja2", timeout))
    if s.metrics_port:
        shared = s.metrics_port == s.status_port        # the status page serves /metrics
        lines.append(http("metrics-port", s.status_address if shared else s.metrics_address,
                          s.metrics_port, "/metrics", "metrics_port", "prometheus_client",
                          timeout))
    return lines

