# SPDX-License-Identifier: BSD-2-Clause
"""The one downloader: pycurl with Vac's user agent, timeouts, TLS rules, size bounds, image cache;
and its one request that sends (`request`: a PUT with a client certificate, for GOCDB).

Rules (the original's, tightened):
- https://, http:// and file:// URLs only; redirects are followed (at most MAX_REDIRECTS) but
  only to http(s), and an https URL only ever to https (no downgrade, never to file://).
- TLS peer and host name are always verified; /etc/grid-security/certificates (IGTF CAs) is
  added to the system bundle when that directory exists.
- Every transfer has a total timeout, a connect timeout of at most CONNECT_TIMEOUT seconds
  (name resolution included: a host that does not answer fails in seconds, not after the
  whole timeout) and a hard size bound (the transfer is aborted as soon as it passes
  `max_bytes`, whether or not the server sent a Content-Length).
- Every failure is a vac.errors.FetchError naming the URL (and the HTTP status if any).
"""
from __future__ import annotations

import io
import logging
import os
import stat
import tempfile
import urllib.parse
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional, Tuple

import pycurl

import vac
from vac import fsutil
from vac.errors import FetchError
from vac.paths import GRID_CA_DIR

log = logging.getLogger(__name__)

USER_AGENT = f"Vac {vac.__version__}"
MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 16 * 1024 * 1024            # user_data templates, pipes pass less
DEFAULT_IMAGE_MAX_BYTES = 64 * 1024 * 1024 * 1024
SCHEMES = ("https", "http", "file")
CONNECT_TIMEOUT = 5.0

# (protocols allowed for the first request, protocols allowed after a redirect), per scheme.
_PROTOCOLS = {
    "https": (("https",), ("https",)),
    "http": (("http", "https"), ("http", "https")),
    "file": (("file",), ()),
}
_PROTO_BITS = {"https": pycurl.PROTO_HTTPS, "http": pycurl.PROTO_HTTP, "file": pycurl.PROTO_FILE}


class _Sink:
    """Write callback target that counts bytes and refuses to go past a limit."""

    def __init__(self, out: BinaryIO, limit: int):
        self.out = out
        self.limit = limit
        self.count = 0
        self.too_big = False

    def write(self, chunk: bytes) -> Optional[int]:
        self.count += len(chunk)
        if self.count > self.limit:
            self.too_big = True
            return 0            # not len(chunk): libcurl aborts with CURLE_WRITE_ERROR
        self.out.write(chunk)
        return None


def fetch_bytes(url: str, *, timeout: float = 30, max_bytes: int = DEFAULT_MAX_BYTES,
                user_agent: str = USER_AGENT) -> bytes:
    """Download url into memory (user_data templates, Vacuum Pipes).

    Raises:
        FetchError: bad URL, transport or TLS failure, timeout, refused redirect, a non-2xx
            HTTP status (`status` set), or a body larger than max_bytes.
    """
    buf = io.BytesIO()
    status, _, _ = _transfer(url, buf, timeout=timeout, max_bytes=max_bytes,
                             user_agent=user_agent)
    if _scheme(url) != "file" and not 200 <= status < 300:
        raise FetchError(url, f"HTTP status {status}", status)
    return buf.getvalue()


@dataclass(frozen=True)
class Send:
    """What a request sends beyond a plain GET, and whom it trusts."""

    method: str = "GET"
    body: Optional[bytes] = None
    content_type: str = ""
    cert: str = ""              # the client certificate and its key (PEM files), if any
    key: str = ""
    cafile: str = ""            # CAs trusted instead of the system bundle (tests' own CA)
    redirects: bool = True      # False: a 3xx is the answer, not followed


def request(url: str, send: Send, *, timeout: float = 30, max_bytes: int = DEFAULT_MAX_BYTES,
            user_agent: str = USER_AGENT) -> Tuple[int, bytes]:
    """One request under the rules above (a GET, or a PUT/POST of send.body); returns the HTTP
    status and the body whatever the status is, for the caller to judge.

    Raises:
        FetchError: bad URL, transport or TLS failure, timeout, refused redirect, or a body
            larger than max_bytes.
    """
    buf = io.BytesIO()
    status, _, _ = _transfer(url, buf, timeout=timeout, max_bytes=max_bytes,
                             user_agent=user_agent, setup=lambda curl: _set_send(curl, send))
    return status, buf.getvalue()


def _set_send(curl: pycurl.Curl, send: Send) -> None:
    if send.method != "GET":
        curl.setopt(pycurl.CUSTOMREQUEST, send.method)
        curl.setopt(pycurl.POSTFIELDS, send.body or b"")
    if send.content_type:
        curl.setopt(pycurl.HTTPHEADER, [f"Content-Type: {send.content_type}"])
    if send.cert:
        curl.setopt(pycurl.SSLCERT, send.cert)
        curl.setopt(pycurl.SSLKEY, send.key)
    if send.cafile:
        curl.setopt(pycurl.CAINFO, send.cafile)
    if not send.redirects:
        curl.setopt(pycurl.FOLLOWLOCATION, 0)


def fetch_to_cache(url: str, cache_path: str, tmp_dir: str, *, timeout: float = 120,
                   max_bytes: int = DEFAULT_IMAGE_MAX_BYTES,
                   user_agent: str = USER_AGENT) -> str:
    """Bring the cached copy of url (a root image) up to date and return cache_path.

    Sends If-Modified-Since = the cached file's mtime. A 200 must carry Last-Modified (else
    FetchError); the body is written to a temp file in tmp_dir (same filesystem as the cache),
    given mtime = Last-Modified and renamed over cache_path. Not modified keeps the cache.
    Any failure raises, even when a cached copy exists (the caller decides whether to use
    it); no temp file is ever left behind.
    """
    cached = _cached_mtime(cache_path)
    try:
        fd, tmp = tempfile.mkstemp(prefix="fetch-", dir=tmp_dir)
    except OSError as e:
        raise FetchError(url, f"cannot create a temporary file in {tmp_dir}: {e}") from e
    try:
        with os.fdopen(fd, "wb") as out:
            status, unmet, filetime = _transfer(url, out, timeout=timeout, max_bytes=max_bytes,
                                                user_agent=user_agent, since=cached)
        if unmet or status == 304:
            if cached is None:
                raise FetchError(url, "not modified, but there is no cached copy", status)
            log.debug("%s not modified since %d; using %s", url, cached, cache_path)
            return cache_path
        if _scheme(url) != "file" and status != 200:
            raise FetchError(url, f"HTTP status {status}", status)
        if filetime < 0:
            raise FetchError(url, "no Last-Modified header; refusing to cache", status)
        os.chmod(tmp, 0o644)
        os.utime(tmp, (filetime, filetime))
        os.replace(tmp, cache_path)
        tmp = ""
        log.info("%s downloaded to %s (Last-Modified %d)", url, cache_path, filetime)
        return cache_path
    except OSError as e:
        raise FetchError(url, f"cannot write {cache_path}: {e}") from e
    finally:
        if tmp:
            _unlink_quietly(tmp)


def _transfer(url: str, out: BinaryIO, *, timeout: float, max_bytes: int, user_agent: str,
              since: Optional[int] = None,
              setup: Optional[Callable[[pycurl.Curl], None]] = None) -> Tuple[int, bool, int]:
    """Run one transfer into out; return (HTTP status or 0, condition unmet, filetime or -1).
    setup, if given, sets what the request sends after the rules are set."""
    scheme = _check_url(url)
    sink = _Sink(out, max_bytes)
    curl = pycurl.Curl()
    try:
        _set_options(curl, url, scheme, timeout, max_bytes, user_agent)
        if setup is not None:
            setup(curl)
        curl.setopt(pycurl.WRITEFUNCTION, sink.write)
        if since is not None:
            curl.setopt(pycurl.TIMECONDITION, pycurl.TIMECONDITION_IFMODSINCE)
            curl.setopt(pycurl.TIMEVALUE, int(since))
        try:
            curl.perform()
        except pycurl.error as e:
            raise _translate(url, e, sink, timeout) from e
        return (int(curl.getinfo(pycurl.RESPONSE_CODE)),
                bool(curl.getinfo(pycurl.CONDITION_UNMET)),
                int(curl.getinfo(pycurl.INFO_FILETIME)))
    finally:
        curl.close()


def _set_options(curl: pycurl.Curl, url: str, scheme: str, timeout: float, max_bytes: int,
                 user_agent: str) -> None:
    first, redirect = _PROTOCOLS[scheme]
    _set_protocols(curl, pycurl.PROTOCOLS, "PROTOCOLS_STR", sorted(set(first + redirect)))
    if redirect:
        _set_protocols(curl, pycurl.REDIR_PROTOCOLS, "REDIR_PROTOCOLS_STR", redirect)
        curl.setopt(pycurl.FOLLOWLOCATION, 1)
        curl.setopt(pycurl.MAXREDIRS, MAX_REDIRECTS)
    curl.setopt(pycurl.URL, url)
    curl.setopt(pycurl.USERAGENT, user_agent)
    curl.setopt(pycurl.NOSIGNAL, 1)
    curl.setopt(pycurl.TIMEOUT_MS, max(1, int(timeout * 1000)))
    curl.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(min(timeout, CONNECT_TIMEOUT) * 1000)))
    curl.setopt(pycurl.SSL_VERIFYPEER, 1)
    curl.setopt(pycurl.SSL_VERIFYHOST, 2)
    curl.setopt(pycurl.MAXFILESIZE_LARGE, max_bytes)
    curl.setopt(pycurl.OPT_FILETIME, 1)
    curl.setopt(pycurl.NOPROGRESS, 1)
    if os.path.isdir(GRID_CA_DIR):
        curl.setopt(pycurl.CAPATH, GRID_CA_DIR)
    else:
        log.debug("%s does not exist; using the system CA bundle only", GRID_CA_DIR)


def _set_protocols(curl: pycurl.Curl, bitmask_opt: int, str_name: str, names) -> None:
    """Restrict protocols, with the string option where this libcurl has it."""
    str_opt = getattr(pycurl, str_name, None)
    if str_opt is not None:
        curl.setopt(str_opt, ",".join(names))
        return
    bits = 0
    for name in names:
        bits |= _PROTO_BITS[name]
    curl.setopt(bitmask_opt, bits)


def _check_url(url: str) -> str:
    """The URL's scheme, if it is one we fetch and the URL has no spaces or control chars."""
    if not isinstance(url, str) or not url:
        raise FetchError(str(url), "empty URL")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise FetchError(url, "URL contains spaces or control characters")
    scheme = _scheme(url)
    if scheme not in SCHEMES:
        raise FetchError(url, "only https://, http:// and file:// URLs can be fetched")
    return scheme


def _scheme(url: str) -> str:
    return urllib.parse.urlsplit(url).scheme.lower()


def _translate(url: str, e: pycurl.error, sink: _Sink, timeout: float) -> FetchError:
    code = e.args[0] if e.args else None
    text = e.args[1] if len(e.args) > 1 else str(e)
    if sink.too_big or code == pycurl.E_FILESIZE_EXCEEDED:
        return FetchError(url, f"larger than the limit of {sink.limit} bytes; aborted")
    if code == pycurl.E_OPERATION_TIMEDOUT:
        return FetchError(url, f"timed out after {timeout:g} s")
    if code == pycurl.E_UNSUPPORTED_PROTOCOL:
        return FetchError(url, f"refused protocol (redirect to a non-https URL?): {text}")
    if code == pycurl.E_TOO_MANY_REDIRECTS:
        return FetchError(url, f"more than {MAX_REDIRECTS} redirects")
    return FetchError(url, f"{text} (curl error {code})")


def _cached_mtime(path: str) -> Optional[int]:
    """Whole-second mtime of a cached regular file, or None (absent, symlink, not a file)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return int(st.st_mtime) if stat.S_ISREG(st.st_mode) else None


def _unlink_quietly(path: str) -> None:
    try:
        fsutil.unlink_if_present(path)
    except OSError as e:
        log.warning("cannot remove temporary file %s: %s", path, e)
