# SPDX-License-Identifier: BSD-2-Clause
"""vac.fetch against a real HTTP(S) server on 127.0.0.1 and real file:// URLs."""
from __future__ import annotations

import email.utils
import http.server
import os
import shutil
import ssl
import threading
import time

import pytest

import vac
from vac import fetch
from vac.errors import FetchError, ProcessError
from vac.subp import run

LAST_MODIFIED = 1_600_000_000
IMAGE = b"IMAGE-v1" * 100
BIG = b"x" * 100_000


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes by path; records (path, headers) of every request on the server."""

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requests.append((self.path, dict(self.headers)))
        route = ROUTES.get(self.path.split("?")[0])
        if route is None:
            self._send(404, b"not here")
        else:
            route(self)

    def _send(self, status, body=b"", headers=(), length=True):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


def _lm(h):
    ims = h.headers.get("If-Modified-Since")
    if ims and email.utils.parsedate_to_datetime(ims).timestamp() >= LAST_MODIFIED:
        h._send(304, length=False)
        return
    h._send(200, IMAGE, [("Last-Modified", email.utils.formatdate(LAST_MODIFIED, usegmt=True))])


SLOW_SECONDS = 20        # far beyond any bound test_timeout derives


def _slow(h):
    time.sleep(SLOW_SECONDS)
    h._send(200, b"late")


ROUTES = {
    "/plain": lambda h: h._send(200, b"hello"),
    "/ua": lambda h: h._send(200, h.headers.get("User-Agent", "").encode()),
    "/lm": _lm,
    "/nolm": lambda h: h._send(200, IMAGE),
    "/error": lambda h: h._send(500, b"oops"),
    "/big": lambda h: h._send(200, BIG),
    # HTTP/1.0 without Content-Length: the size is only known by counting.
    "/big-unsized": lambda h: h._send(200, BIG, length=False),
    "/redirect-ok": lambda h: h._send(302, headers=[("Location", "/plain")]),
    "/redirect-file": lambda h: h._send(302, headers=[("Location", "file:///etc/passwd")]),
    "/loop": lambda h: h._send(302, headers=[("Location", "/loop")]),
    "/slow": _slow,
}


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # TLS handshake failures are expected
        pass


def _start(server):
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server():
    srv = _start(Server(("127.0.0.1", 0), Handler))
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def base(server):
    server.requests.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def cache_dirs(tmp_path):
    (tmp_path / "imagecache").mkdir()
    (tmp_path / "tmp").mkdir()
    return str(tmp_path / "imagecache" / "image"), str(tmp_path / "tmp")


# ---- fetch_bytes ---------------------------------------------------------------------------

def test_fetch_bytes_http_200(base):
    assert fetch.fetch_bytes(base + "/plain") == b"hello"


def test_user_agent_is_vac_version(base):
    assert fetch.fetch_bytes(base + "/ua") == f"Vac {vac.__version__}".encode()


def test_404_is_fetch_error_with_status(base):
    with pytest.raises(FetchError) as e:
        fetch.fetch_bytes(base + "/missing")
    assert e.value.status == 404
    assert e.value.url == base + "/missing"
    assert "404" in str(e.value)


def test_500_is_fetch_error_with_status(base):
    with pytest.raises(FetchError) as e:
        fetch.fetch_bytes(base + "/error")
    assert e.value.status == 500


def test_redirect_within_http_is_followed(base, server):
    assert fetch.fetch_bytes(base + "/redirect-ok") == b"hello"
    assert [p for p, _ in server.requests] == ["/redirect-ok", "/plain"]


def test_redirect_to_file_url_is_refused(base):
    with pytest.raises(FetchError) as e:
        fetch.fetch_bytes(base + "/redirect-file")
    assert "refused protocol" in str(e.value)


def test_redirect_loop_is_bounded(base, server):
    with pytest.raises(FetchError) as e:
        fetch.fetch_bytes(base + "/loop")
    assert "redirects" in str(e.value)
    assert len(server.requests) == fetch.MAX_REDIRECTS + 1


def test_a_request_returns_any_status_and_follows_redirects_only_when_asked(base, server):
    assert fetch.request(base + "/error", fetch.Send()) == (500, b"oops")
    assert fetch.request(base + "/redirect-ok", fetch.Send(redirects=False))[0] == 302
    assert [p for p, _ in server.requests] == ["/error", "/redirect-ok"]
    assert fetch.request(base + "/redirect-ok", fetch.Send()) == (200, b"hello")
    with pytest.raises(FetchError, match="larger than the limit"):
        fetch.request(base + "/big", fetch.Send(), max_bytes=50_000)


def test_size_bound_with_content_length(base):
    with pytest.raises(FetchError) as e:
        fetch.fetch_bytes(base + "/big", max_bytes=50_000)
    assert "limit of 50000 bytes" in str(e.value)
    assert fetch.fetch_bytes(base + "/big", max_bytes=len(BIG)) == BIG


def test_size_bound_without_content_length(base):
    with pytest.raises(FetchError) as e:
        fetch.fetch_bytes(base + "/big-unsized", max_bytes=50_000)
    assert "limit of 50000 bytes" in str(e.value)
    assert fetch.fetch_bytes(base + "/big-unsized", max_bytes=len(BIG)) == BIG


def test_timeout(base):
    """Given up once, at the timeout: bounded by the timeout plus what a whole fetch of an
    answer that comes at once takes on this machine now (measured here), far below the answer
    of /slow."""
    started = time.monotonic()
    assert fetch.fetch_bytes(base + "/plain") == b"hello"
    bound = 0.3 + max(1.2, 5 * (time.monotonic() - started))
    assert bound < SLOW_SECONDS / 2, f"a fetch takes {bound:.1f} s here: too slow to tell"
    started = time.monotonic()
    with pytest.raises(FetchError) as e:
        fetch.fetch_bytes(base + "/slow", timeout=0.3)
    assert "timed out" in str(e.value)
    assert time.monotonic() - started < bound


def test_connection_refused_is_fetch_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(FetchError) as e:
        fetch.fetch_bytes(f"http://127.0.0.1:{port}/x", timeout=5)
    assert e.value.status is None


class RecordingCurl:
    def __init__(self):
        self.options = {}

    def setopt(self, option, value):
        self.options[option] = value


@pytest.mark.parametrize("timeout, connect_ms", [(30, fetch.CONNECT_TIMEOUT * 1000),
                                                 (120, fetch.CONNECT_TIMEOUT * 1000),
                                                 (2, 2000)])
def test_connecting_is_bounded_by_a_few_seconds_whatever_the_whole_timeout(timeout,
                                                                           connect_ms):
    import pycurl

    curl = RecordingCurl()
    fetch._set_options(curl, "https://x.example/p", "https", timeout, 100, "ua")
    assert fetch.CONNECT_TIMEOUT <= 10
    assert curl.options[pycurl.CONNECTTIMEOUT_MS] == connect_ms
    assert curl.options[pycurl.TIMEOUT_MS] == timeout * 1000


def test_a_host_that_accepts_and_never_answers_times_out():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)                         # the kernel accepts; nobody ever answers
    try:
        with pytest.raises(FetchError) as e:
            fetch.fetch_bytes(f"http://127.0.0.1:{s.getsockname()[1]}/p.pipe", timeout=0.5)
        assert "timed out after 0.5 s" in str(e.value)
    finally:
        s.close()


def test_file_url(tmp_path):
    f = tmp_path / "doc.pipe"
    f.write_bytes(b'{"machinetypes": []}')
    assert fetch.fetch_bytes(f"file://{f}") == b'{"machinetypes": []}'


def test_missing_file_url_is_fetch_error(tmp_path):
    with pytest.raises(FetchError):
        fetch.fetch_bytes(f"file://{tmp_path}/absent")


def test_file_url_size_bound(tmp_path):
    f = tmp_path / "big"
    f.write_bytes(BIG)
    with pytest.raises(FetchError) as e:
        fetch.fetch_bytes(f"file://{f}", max_bytes=1000)
    assert "limit of 1000 bytes" in str(e.value)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "/etc/passwd", "gopher://x/",
                                 "http://127.0.0.1/a b", "http://127.0.0.1/a\r\nX: y", ""])
def test_other_urls_refused_before_any_transfer(url):
    with pytest.raises(FetchError):
        fetch.fetch_bytes(url)


# ---- fetch_to_cache ------------------------------------------------------------------------

def test_cache_200_with_last_modified(base, cache_dirs):
    cache, tmp = cache_dirs
    assert fetch.fetch_to_cache(base + "/lm", cache, tmp) == cache
    with open(cache, "rb") as f:
        assert f.read() == IMAGE
    assert os.stat(cache).st_mtime == LAST_MODIFIED
    assert os.listdir(tmp) == []


def test_cache_304_keeps_cached_copy(base, server, cache_dirs):
    cache, tmp = cache_dirs
    fetch.fetch_to_cache(base + "/lm", cache, tmp)
    with open(cache, "wb") as f:       # mark the cached copy so a re-download would show
        f.write(b"CACHED")
    os.utime(cache, (LAST_MODIFIED, LAST_MODIFIED))
    server.requests.clear()
    assert fetch.fetch_to_cache(base + "/lm", cache, tmp) == cache
    with open(cache, "rb") as f:
        assert f.read() == b"CACHED"
    sent = server.requests[0][1].get("If-Modified-Since")
    assert email.utils.parsedate_to_datetime(sent).timestamp() == LAST_MODIFIED
    assert os.listdir(tmp) == []


def test_cache_older_copy_is_replaced(base, cache_dirs):
    cache, tmp = cache_dirs
    with open(cache, "wb") as f:
        f.write(b"OLD")
    os.utime(cache, (LAST_MODIFIED - 100, LAST_MODIFIED - 100))
    fetch.fetch_to_cache(base + "/lm", cache, tmp)
    with open(cache, "rb") as f:
        assert f.read() == IMAGE
    assert os.stat(cache).st_mtime == LAST_MODIFIED


def test_cache_200_without_last_modified_refused(base, cache_dirs):
    cache, tmp = cache_dirs
    with pytest.raises(FetchError) as e:
        fetch.fetch_to_cache(base + "/nolm", cache, tmp)
    assert "Last-Modified" in str(e.value)
    assert not os.path.exists(cache)
    assert os.listdir(tmp) == []


def test_cache_404_raises_even_with_cached_copy_and_keeps_it(base, cache_dirs):
    cache, tmp = cache_dirs
    with open(cache, "wb") as f:
        f.write(b"CACHED")
    with pytest.raises(FetchError) as e:
        fetch.fetch_to_cache(base + "/missing", cache, tmp)
    assert e.value.status == 404
    with open(cache, "rb") as f:
        assert f.read() == b"CACHED"
    assert os.listdir(tmp) == []


def test_cache_404_without_cached_copy(base, cache_dirs):
    cache, tmp = cache_dirs
    with pytest.raises(FetchError):
        fetch.fetch_to_cache(base + "/missing", cache, tmp)
    assert not os.path.exists(cache)
    assert os.listdir(tmp) == []


def test_cache_size_bound_leaves_no_temp_file(base, cache_dirs):
    cache, tmp = cache_dirs
    with pytest.raises(FetchError) as e:
        fetch.fetch_to_cache(base + "/big-unsized", cache, tmp, max_bytes=1000)
    assert "limit" in str(e.value)
    assert not os.path.exists(cache)
    assert os.listdir(tmp) == []


def test_cache_missing_tmp_dir_is_fetch_error(base, tmp_path):
    with pytest.raises(FetchError):
        fetch.fetch_to_cache(base + "/lm", str(tmp_path / "c"), str(tmp_path / "no-such-dir"))


def test_cache_file_url_uses_file_mtime(tmp_path, cache_dirs):
    cache, tmp = cache_dirs
    src = tmp_path / "src.img"
    src.write_bytes(IMAGE)
    os.utime(src, (LAST_MODIFIED, LAST_MODIFIED))
    fetch.fetch_to_cache(f"file://{src}", cache, tmp)
    assert os.stat(cache).st_mtime == LAST_MODIFIED
    with open(cache, "rb") as f:
        assert f.read() == IMAGE
    # unchanged source: cache kept (not rewritten)
    with open(cache, "wb") as f:
        f.write(b"CACHED")
    os.utime(cache, (LAST_MODIFIED, LAST_MODIFIED))
    fetch.fetch_to_cache(f"file://{src}", cache, tmp)
    with open(cache, "rb") as f:
        assert f.read() == b"CACHED"
    assert os.listdir(tmp) == []


# ---- TLS -----------------------------------------------------------------------------------

def _make_cert(directory, san):
    key, cert = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    try:
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
             "-out", cert, "-days", "1", "-subj", "/CN=vac-test", "-addext",
             f"subjectAltName={san}"], timeout=60)
        digest = run(["openssl", "x509", "-hash", "-noout", "-in", cert],
                     timeout=30).stdout.strip()
    except ProcessError as e:
        pytest.skip(f"openssl cannot make a test certificate: {e}")
    capath = os.path.join(directory, "certificates")
    os.mkdir(capath)
    shutil.copy(cert, os.path.join(capath, digest + ".0"))
    return key, cert, capath


@pytest.fixture
def https_server(tmp_path):
    def start(san):
        d = tmp_path / san.replace(":", "_")
        d.mkdir()
        key, cert, capath = _make_cert(str(d), san)
        srv = Server(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        started.append(_start(srv))
        return f"https://127.0.0.1:{srv.server_address[1]}", capath

    started = []
    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def test_https_untrusted_server_refused(https_server, monkeypatch, tmp_path):
    url, _ = https_server("IP:127.0.0.1")
    monkeypatch.setattr(fetch, "GRID_CA_DIR", str(tmp_path / "no-grid-cas"))
    with pytest.raises(FetchError):
        fetch.fetch_bytes(url + "/plain", timeout=10)


def test_https_trusted_through_grid_ca_dir(https_server, monkeypatch):
    url, capath = https_server("IP:127.0.0.1")
    monkeypatch.setattr(fetch, "GRID_CA_DIR", capath)
    assert fetch.fetch_bytes(url + "/plain", timeout=10) == b"hello"


def test_https_host_name_verified(https_server, monkeypatch):
    url, capath = https_server("DNS:other.example.com")
    monkeypatch.setattr(fetch, "GRID_CA_DIR", capath)
    with pytest.raises(FetchError):
        fetch.fetch_bytes(url + "/plain", timeout=10)


def test_https_never_redirects_to_http(https_server, monkeypatch, base):
    url, capath = https_server("IP:127.0.0.1")
    monkeypatch.setattr(fetch, "GRID_CA_DIR", capath)
    ROUTES["/to-http"] = lambda h: h._send(302, headers=[("Location", base + "/plain")])
    try:
        with pytest.raises(FetchError) as e:
            fetch.fetch_bytes(url + "/to-http", timeout=10)
        assert "refused protocol" in str(e.value)
    finally:
        del ROUTES["/to-http"]
