# SPDX-License-Identifier: BSD-2-Clause
"""The image version each machine got: SIFs and VM images downloaded over http
(a real loopback server with Last-Modified and If-Modified-Since, the real fetch_to_cache)
recorded as sha256 of the cached file plus Last-Modified, hashed once per download; what the
Apptainer and libvirt backends put in backend.json; and `vac slots` showing machine versions
and the refreshed Docker tags, hostile record values made harmless."""
from __future__ import annotations

import email.utils
import hashlib
import http.server
import json
import os
import threading
import types

import pytest

from vac import cli, fetch
from vac.backends import imageversion as iv
from vac.slotview import image_notes, short_version, slot_rows

PORTS = range(18661, 18670)
V1, V2 = b"SIF-v1" * 1000, b"SIF-v2" * 1200
LM1, LM2 = 1_700_000_000, 1_700_086_400


class Handler(http.server.BaseHTTPRequestHandler):
    """/image.sif: the server's current (body, Last-Modified), honouring If-Modified-Since."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        body, modified = self.server.image
        self.server.gets += 1
        since = self.headers.get("If-Modified-Since")
        if since and email.utils.parsedate_to_datetime(since).timestamp() >= modified:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Last-Modified", email.utils.formatdate(modified, usegmt=True))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    for port in PORTS:
        try:
            srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
            break
        except OSError:
            continue
    else:
        pytest.fail(f"no free port in {PORTS}")
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def url(server, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server.image, server.gets = (V1, LM1), 0
    return f"http://127.0.0.1:{server.server_address[1]}/image.sif"


def download(url: str, paths) -> str:
    return fetch.fetch_to_cache(url, paths.image_cache(url), paths.tmp)


def sha(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


# The version of a downloaded image ------------------------------------------------------------

def test_a_downloaded_image_records_its_sha256_and_last_modified(url, server, paths,
                                                                 monkeypatch):
    download(url, paths)
    assert iv.url_image_record(url, paths) == {
        "image_url": url, "image_version": sha(V1), "image_modified": "2023-11-14T22:13:20Z"}
    cache = paths.image_cache(url)
    assert os.path.exists(paths.image_version(cache))
    assert paths.image_version(cache).startswith(paths.imagecache + "/")

    def no_hashing(f):
        raise AssertionError("hashed again")

    monkeypatch.setattr(iv, "hash_file", no_hashing)     # the record serves every machine
    download(url, paths)                                 # 304: the same file
    assert iv.url_image_record(url, paths)["image_version"] == sha(V1)
    monkeypatch.undo()

    server.image = (V2, LM2)                             # a new version on the server
    download(url, paths)
    assert iv.url_image_record(url, paths) == {
        "image_url": url, "image_version": sha(V2), "image_modified": "2023-11-15T22:13:20Z"}


def test_a_record_that_does_not_name_the_file_is_not_believed(url, paths):
    download(url, paths)
    cache = paths.image_cache(url)
    record = paths.image_version(cache)
    iv.url_image_record(url, paths)
    forged = json.load(open(record))
    forged["sha256"] = "0" * 64
    forged["key"]["size"] += 1
    open(record, "w").write(json.dumps(forged))
    assert iv.url_image_record(url, paths)["image_version"] == sha(V1)
    open(record, "w").write("not json")
    assert iv.url_image_record(url, paths)["image_version"] == sha(V1)


def test_no_version_for_local_images_or_an_unreadable_cache(paths, tmp_path):
    assert iv.url_image_record("/cvmfs/x/image.sif", paths) == {}
    assert iv.url_image_record("image.sif", paths) == {}
    assert iv.url_image_record(None, paths) == {}
    assert iv.url_image_record("https://nowhere.example/x.sif", paths) == \
        {"image_url": "https://nowhere.example/x.sif"}
    target = tmp_path / "elsewhere"
    target.write_bytes(b"x")
    os.symlink(target, paths.image_cache("https://a.example/l.sif"))   # never followed
    assert "image_version" not in iv.url_image_record("https://a.example/l.sif", paths)


def test_sidecar_names_never_collide_with_cached_urls(paths):
    cache = paths.image_cache("https://x.example/a.sif")
    assert paths.image_version(cache) != paths.image_cache("https://x.example/a.sif+sha256")
    assert "+" not in os.path.basename(paths.image_cache("https://x.example/a.sif+sha256"))


# What the backends record ---------------------------------------------------------------------

def test_an_apptainer_machine_records_the_sif_version_it_got(url, tmp_path, make_config,
                                                             paths):
    from apptainerfakes import NAME, USER, fake_process

    from vac.backends.apptainer.backend import ApptainerBackend
    from vac.backends.base import MachineSpec
    from vac.machine.directory import MachineDir
    from vac.machine.slots import Slot
    config = make_config(f"""
        [settings]
        vac_space = vac01.example.com
        factory_name = f1.example.com
        singularity_user = vacsngly

        [machinetype app]
        machine_model = apptainer
        target_share = 1
        root_image = {url}
        user_data = /dev/null
        """)
    (tmp_path / "proc").mkdir()
    fake_process(tmp_path / "proc", 777)
    backend = ApptainerBackend(config.settings, proc_root=str(tmp_path / "proc"))
    directory = MachineDir.create(paths, 1700000000, "app", NAME)
    spec = MachineSpec(name=NAME, machinetype=config.machinetypes["app"],
                       settings=config.settings, slot=Slot(1, NAME), processors=1,
                       memory_mb=32, created=1700000000, shutdown_time=1700003600,
                       uuid="1234-abcd", directory=directory)
    image = backend._image(spec)                       # downloads into the image cache
    cgroup = types.SimpleNamespace(relative_path="vac/apptainer-" + NAME, dirs={})
    backend._inode = lambda cg: 0
    backend._record(spec, types.SimpleNamespace(pid=777), cgroup, USER, image)
    record = directory.read_backend_record()
    assert record["image"] == paths.image_cache(url)
    assert record["image_url"] == url and record["image_version"] == sha(V1)
    assert record["image_modified"] == "2023-11-14T22:13:20Z"


def test_a_vm_records_the_image_version_it_got(url, make_config, paths, monkeypatch):
    from vac.backends.base import MachineSpec
    from vac.backends.libvirt import backend as lb
    from vac.backends.libvirt import configdrive
    from vac.machine.directory import MachineDir
    from vac.machine.slots import Slot, machine_name
    config = make_config(f"""
        [settings]
        vac_space = vac01.example.com
        factory_name = f1.example.com

        [machinetype vm]
        machine_model = vm-raw
        root_image = {url}
        target_share = 1
        """)
    download(url, paths)
    name = machine_name("f1.example.com", 0)
    directory = MachineDir.create(paths, 1000, "vm", name)
    spec = MachineSpec(name=name, machinetype=config.machinetypes["vm"],
                       settings=config.settings, slot=Slot(0, name), processors=1,
                       memory_mb=256, created=1000, shutdown_time=2000, uuid="u-1",
                       directory=directory)
    defined = []
    conn = types.SimpleNamespace(createXML=lambda xml, flags: defined.append(xml))
    monkeypatch.setattr(lb.LibvirtBackend, "_conn", lambda self: conn)
    monkeypatch.setattr(lb.LibvirtBackend, "virt_type", "qemu")
    monkeypatch.setattr(lb.LibvirtBackend, "_disks", lambda self, s: ([], [], False))
    monkeypatch.setattr(lb.LibvirtBackend, "_params", lambda self, *a: None)
    monkeypatch.setattr(lb.LibvirtBackend, "_call",
                        lambda self, what, fn, *a, machine=None: fn(*a))
    monkeypatch.setattr(configdrive, "build_config_drive", lambda d, f, path: path)
    monkeypatch.setattr(lb, "render_domain_xml", lambda params: "<domain/>")
    assert lb.LibvirtBackend(config.settings).create(spec) == "u-1"
    assert defined == ["<domain/>"]
    record = directory.read_backend_record()
    assert record["image_url"] == url and record["image_version"] == sha(V1)
    assert record["image_modified"] == "2023-11-14T22:13:20Z"


# vac slots ------------------------------------------------------------------------------------

DIGEST = "127.0.0.1:18650/vac-test/payload@sha256:" + "ab" * 32


def test_vac_slots_shows_each_machines_image_version(make_factory, capsys):
    factory, backend, clock = make_factory()
    report = factory.run_cycle()
    assert len(report.created) == 3
    config = factory.load_config()
    first, second, third = sorted(report.created)
    dirs = {n: _dir(config, n) for n in report.created}
    dirs[first].write_backend_record({"backend": "fake", "image": "x:1",
                                      "image_version": DIGEST, "ip": "10.231.0.5"})
    dirs[second].write_backend_record({"backend": "fake", "image_version": "sha256:" +
                                       "cd" * 32 + "\x1b[31m\n"})
    dirs[third].write_backend_record({"backend": "fake", "image_version": ["not", "text"]})
    rows = {r["name"]: r for r in slot_rows(config, clock.now)}
    assert rows[first]["image_version"] == DIGEST and rows[first]["image"] == "x:1"
    assert rows[first]["detail"].endswith(
        ", ip 10.231.0.5, image 127.0.0.1:18650/vac-test/payload@sha256:abababababab")
    assert rows[first]["ip"] == "10.231.0.5" and rows[second]["ip"] is None   # null for none
    assert rows[second]["image_version"] == "sha256:" + "cd" * 32 + "[31m"  # no escapes
    assert rows[third]["image_version"] is None and "image" not in rows[third]["detail"]
    assert short_version("sha256:" + "e" * 64) == "sha256:" + "e" * 12
    assert short_version("not a digest") == "not a digest"


def _dir(config, name):
    from vac.machine.directory import MachineDir
    return MachineDir.for_slot(config.settings.paths, name)


NOTES_CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
host_processors = 2

[machinetype reg]
machine_model = docker
root_image = docker://127.0.0.1:18650/vac-test/payload:latest
docker_pull_seconds = 60
target_share = 1

[machinetype other]
machine_model = docker
root_image = docker://ok/image:1
docker_pull_seconds = 3600
target_share = 1

[machinetype plain]
machine_model = docker
root_image = docker://plain/image:1
target_share = 1
"""


def test_vac_slots_shows_the_refreshed_tags_and_a_failing_registry(make_config, capsys):
    config = make_config(NOTES_CONF)
    now = 1_700_000_000
    assert image_notes(config) == []
    failing = "Get \"http://127.0.0.1:18650/v2/\": connect: connection refused"
    body = {"time": 1, "images": {
        "127.0.0.1:18650/vac-test/payload:latest": {
            "machinetypes": ["reg"], "image_version": DIGEST, "image_id": "sha256:1",
            "checked": now - 600, "error": failing, "failing_since": now - 125,
            "pull_seconds": 60},
        "ok/image:1": {"machinetypes": ["other"], "image_version": "sha256:" + "f" * 64,
                       "checked": now - 65, "error": "", "failing_since": None},
        "plain/image:1": {"machinetypes": ["plain"], "image_version": "sha256:1"},
        "gone/from-the-config:1": {"machinetypes": ["old"], "image_version": "sha256:2"},
        "junk": "not a dict"}}
    open(config.settings.paths.docker_images, "w").write(json.dumps(body))
    notes = image_notes(config, now=now)
    assert [n["image"] for n in notes] == ["127.0.0.1:18650/vac-test/payload:latest",
                                           "ok/image:1"]
    assert notes[0]["text"] == (
        "image 127.0.0.1:18650/vac-test/payload:latest: registry failing for 2m05s "
        f"({failing}); new machines keep 127.0.0.1:18650/vac-test/payload@sha256:abababababab")
    assert notes[0]["error"] == failing and notes[0]["machinetypes"] == ["reg"]
    assert notes[1]["text"] == "image ok/image:1: sha256:ffffffffffff (refreshed 1m05s ago)"
    conf = config.files[0]
    assert cli.main(["--config", str(conf), "slots", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [i["image"] for i in shown["images"]] == [n["image"] for n in notes]
    assert cli.main(["--config", str(conf), "slots"]) == 0
    out = capsys.readouterr().out
    assert "image 127.0.0.1:18650/vac-test/payload:latest: registry failing for" in out
    assert "gone/from-the-config" not in out and "plain/image" not in out
    open(config.settings.paths.docker_images, "w").write("{broken")
    assert image_notes(config) == []
