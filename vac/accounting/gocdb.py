# SPDX-License-Identifier: BSD-2-Clause
"""GOCDB: publish the space's capacity and VO shares as extension properties of its
`uk.ac.gridpp.vac` service endpoint, at most daily per factory with a random phase.

Due when gocdb_cert_file and gocdb_key_file are set and exist and `gocdb-updated` is older than
U = 86400 s (86400 x factories / 24 for spaces of more than 24 fresh census entries); its
first mtime is now - random(0, U). Capacity sums space-catalogue.json and the fresh census
(this factory's own status when neither has it). The service id is the PRIMARY_KEY (before
its "G") of the SERVICE_ENDPOINT that get_service_endpoint returns; the JSON is PUT to
<gocdb_url>/v5/Service/<id>/ExtensionProperties. Transfers go through vac.fetch with the
client certificate, TLS verified, bounded in time and size; any failure is a FetchError.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import time
import urllib.parse
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from vac import __version__, fsutil
from vac.config.model import Config
from vac.errors import FetchError
from vac.space import replies
from vac.space.census import fresh_census

log = logging.getLogger(__name__)

DAY = 86400
MARKER = "gocdb-updated"
CATALOGUE = "space-catalogue.json"
SERVICE_TYPE = "uk.ac.gridpp.vac"
REPLY_LIMIT = 1024 * 1024
TIMEOUT = 60
PRIMARY_KEY_RE = re.compile(rb"<SERVICE_ENDPOINT\s+PRIMARY_KEY=\"(\d+)G[0-9A-Za-z]*\"")

# (method, url, body, cert, key, cafile) -> (HTTP status, body)
Transport = Callable[[str, str, Optional[bytes], str, str, Optional[str]], Tuple[int, bytes]]


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and value == value \
        and abs(value) < 1e12 else 0.0


def capacity(config: Config, census: Mapping[str, Mapping[str, Any]],
             now: float) -> Dict[str, float]:
    """Sums of max_processors, max_machines, max_hs06 and the number of factories."""
    catalogue = _catalogue(config)
    entries: Dict[str, Mapping[str, Any]] = dict(catalogue)
    for factory, status in census.items():
        entries.setdefault(factory, status)
    if config.settings.factory_name not in entries:
        entries[config.settings.factory_name] = replies.factory_status(config, now)
    totals = {"processors": 0.0, "machines": 0.0, "hs06": 0.0, "factories": 0.0}
    for entry in entries.values():
        totals["processors"] += _number(entry.get("max_processors"))
        totals["machines"] += _number(entry.get("max_machines"))
        totals["hs06"] += _number(entry.get("max_hs06"))
        totals["factories"] += 1
    return totals


def _catalogue(config: Config) -> Dict[str, Mapping[str, Any]]:
    path = os.path.join(config.settings.state_dir, CATALOGUE)
    text = fsutil.read_optional(path, REPLY_LIMIT)
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as e:
        log.warning("%s is not JSON: %s", path, e)
        return {}
    found = {}
    for factory, item in (data.items() if isinstance(data, dict) else ()):
        if isinstance(item, dict) and all(k in item for k in
                                          ("max_processors", "max_machines", "max_hs06")):
            found[str(factory)] = item
        else:
            log.warning("%s: malformed entry for %r", path, factory)
    return found


def payload(config: Config, totals: Mapping[str, float], now: float) -> Dict[str, str]:
    """The extension properties, as the original published them."""
    rules, shares = [], {}
    for _, mt in sorted(config.machinetypes.items()):
        if not mt.accounting_fqan:
            continue
        rules.append(f"VOMS:{mt.accounting_fqan}")
        vo = mt.accounting_fqan.strip("/").split("/")[0]
        if mt.target_share > 0 and vo:
            shares[vo] = shares.get(vo, 0.0) + mt.target_share
    body = {"ComputingManagerCreationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                          time.gmtime(now)),
            "ComputingManagerProductName": "Vac",
            "ComputingManagerProductVersion": __version__,
            "ComputingManagerTotalLogicalCPUs": str(int(totals["processors"])),
            "ComputingManagerTotalSlots": str(int(totals["machines"])),
            "ComputingManagerTotalPhysicalCPUs": str(int(totals["factories"])),
            "BenchmarkType": "specint2000",
            "BenchmarkValue": str(int(totals["hs06"] * 250))}
    total = sum(shares.values())
    if total > 0:
        body["ComputingManagerOtherInfo"] = ",".join(
            f"Share={vo}:{round(100 * share / total)}" for vo, share in sorted(shares.items()))
    if rules:
        body["PolicyRule"] = ",".join(rules)
        body["PolicyScheme"] = "org.glite.standard"
    return body


def service_id(reply: bytes, url: str = "GOCDB") -> str:
    """The numeric part of the SERVICE_ENDPOINT's PRIMARY_KEY in a get_service_endpoint reply."""
    if len(reply) > REPLY_LIMIT or b"<!DOCTYPE" in reply or b"<!ENTITY" in reply:
        raise FetchError(url, "GOCDB reply too large or with a DTD")
    match = PRIMARY_KEY_RE.search(reply)
    if not match:
        raise FetchError(url, "GOCDB reply has no SERVICE_ENDPOINT with a PRIMARY_KEY")
    return match.group(1).decode()


def publish(config: Config, now: float, transport: Optional[Transport] = None,
            cafile: Optional[str] = None) -> str:
    """Look up the service and PUT the properties; return the service id."""
    s = config.settings
    send = transport or curl_transport
    base = s.gocdb_url.rstrip("/")
    query = urllib.parse.urlencode({"method": "get_service_endpoint", "sitename": s.site,
                                    "hostname": s.vac_space, "service_type": SERVICE_TYPE})
    lookup = f"{base}/public/?{query}"
    status, reply = send("GET", lookup, None, s.gocdb_cert_file, s.gocdb_key_file, cafile)
    if not 200 <= status < 300:
        raise FetchError(lookup, f"get_service_endpoint: HTTP {status}", status)
    ident = service_id(reply, lookup)
    body = payload(config, capacity(config, fresh_census(s, now), now), now)
    target = f"{base}/v5/Service/{ident}/ExtensionProperties"
    status, _ = send("PUT", target, json.dumps(body, sort_keys=True).encode(),
                     s.gocdb_cert_file, s.gocdb_key_file, cafile)
    if not 200 <= status < 300:
        raise FetchError(target, f"ExtensionProperties: HTTP {status}", status)
    return ident


def interval(census_count: int) -> float:
    return float(DAY) if census_count <= 24 else DAY * census_count / 24.0


def update_if_due(config: Config, now: float, transport: Optional[Transport] = None,
                  rng: Optional[random.Random] = None, cafile: Optional[str] = None) -> bool:
    """Publish when due (see the module's docstring); True if published now."""
    s = config.settings
    if not (s.gocdb_cert_file and s.gocdb_key_file and os.path.isfile(s.gocdb_cert_file)
            and os.path.isfile(s.gocdb_key_file)):
        return False
    period = interval(len(fresh_census(s, now)))
    marker = os.path.join(s.state_dir, MARKER)
    last = fsutil.mtime_or_none(marker)
    if last is None:
        last = now - (rng or random.Random()).uniform(0, period)
        fsutil.atomic_write(marker, "", mtime=last)
    if now <= last + period:
        return False
    fsutil.atomic_write(marker, "", mtime=now)
    try:
        ident = publish(config, now, transport, cafile)
    except FetchError as e:
        log.error("GOCDB update failed: %s", e)
        return False
    log.info("GOCDB service %s updated with the space's capacity", ident)
    return True


def curl_transport(method: str, url: str, body: Optional[bytes], cert: str, key: str,
                   cafile: Optional[str]) -> Tuple[int, bytes]:
    """One HTTPS request with the client certificate, peer verified, bounded in time and size,
    redirects not followed (vac.fetch, the one downloader)."""
    from vac import fetch   # lazily: pycurl is needed only where GOCDB is configured

    if not url.startswith("https://"):
        raise FetchError(url, "GOCDB is reached over https only")
    send = fetch.Send(method=method, body=body, cert=cert, key=key, cafile=cafile or "",
                      content_type="application/json" if method == "PUT" else "",
                      redirects=False)
    return fetch.request(url, send, timeout=TIMEOUT, max_bytes=REPLY_LIMIT)
