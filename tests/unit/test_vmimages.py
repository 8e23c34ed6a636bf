# SPDX-License-Identifier: BSD-2-Clause
"""VM disks: root image resolution, qcow2 overlays (real qemu-img), sparse files, LV sizes."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess

import pytest
from testbed import require_engine

from vac.backends.libvirt import images as vmimages
from vac.errors import BackendError, FetchError

CONF = """
[settings]
vac_space = space.example.com
factory_name = f1.example.com
{settings}
[machinetype vmt]
machine_model = vm-raw
root_image = {image}
{machinetype}
"""


@pytest.fixture
def mt(make_config):
    def build(image, settings="", machinetype=""):
        cfg = make_config(CONF.format(image=image, settings=settings, machinetype=machinetype))
        return cfg.machinetypes["vmt"], cfg.settings
    return build


def _files_dir(paths):
    d = os.path.join(paths.machinetype_dir("vmt"), "files")
    os.makedirs(d, exist_ok=True)
    return d


def test_relative_name_is_under_machinetype_files(mt, paths):
    image = os.path.join(_files_dir(paths), "root.img")
    open(image, "wb").write(b"\0" * 1024)
    machinetype, _ = mt("root.img")
    assert vmimages.resolve_root_image(machinetype, paths) == image


@pytest.mark.parametrize("name", ["../../../etc/passwd", "a/../../b", "./x", "a//b"])
def test_relative_name_may_not_climb(mt, paths, name):
    machinetype, _ = mt(name)
    with pytest.raises(BackendError, match="not a plain file name"):
        vmimages.resolve_root_image(machinetype, paths)


def test_absolute_path_must_be_a_regular_file(mt, paths, tmp_path):
    image = tmp_path / "img"
    image.write_bytes(b"x")
    assert vmimages.resolve_root_image(mt(str(image))[0], paths) == str(image)
    with pytest.raises(BackendError, match="not a regular file"):
        vmimages.resolve_root_image(mt(str(tmp_path))[0], paths)
    with pytest.raises(BackendError, match="not a regular file"):
        vmimages.resolve_root_image(mt("/dev/null")[0], paths)
    with pytest.raises(BackendError, match="No such file"):
        vmimages.resolve_root_image(mt(str(tmp_path / "absent"))[0], paths)


def test_pipe_root_image_outside_cvmfs_is_refused(mt, paths, tmp_path):
    image = tmp_path / "img"
    image.write_bytes(b"x")
    machinetype, _ = mt(str(image))
    from_pipe = dataclasses.replace(machinetype, pipe="prefix",
                                    origins={"root_image": "https://pipes.example/p.json"})
    with pytest.raises(BackendError, match="/cvmfs/"):
        vmimages.resolve_root_image(from_pipe, paths)
    local = dataclasses.replace(from_pipe, origins={"root_image": "/etc/vac.conf [x]"})
    assert vmimages.resolve_root_image(local, paths) == str(image)


def test_https_image_goes_through_the_cache(mt, paths, monkeypatch):
    calls = []

    def fake_fetch(url, cache_path, tmp_dir, *, timeout, **kw):
        calls.append((url, cache_path, tmp_dir))
        open(cache_path, "wb").write(b"image")
        return cache_path

    monkeypatch.setattr("vac.fetch.fetch_to_cache", fake_fetch)
    machinetype, _ = mt("https://images.example.com/cernvm4.iso")
    path = vmimages.resolve_root_image(machinetype, paths)
    assert path == paths.image_cache("https://images.example.com/cernvm4.iso")
    assert calls == [("https://images.example.com/cernvm4.iso", path, paths.tmp)]


def test_failed_refresh_uses_cached_copy_else_fails(mt, paths, monkeypatch):
    def failing(url, *a, **kw):
        raise FetchError(url, "HTTP status 503", 503)

    monkeypatch.setattr("vac.fetch.fetch_to_cache", failing)
    url = "https://images.example.com/img"
    machinetype, _ = mt(url)
    with pytest.raises(BackendError, match="503"):
        vmimages.resolve_root_image(machinetype, paths)
    open(paths.image_cache(url), "wb").write(b"old")
    assert vmimages.resolve_root_image(machinetype, paths) == paths.image_cache(url)


@pytest.fixture
def needs_qemu_img():
    require_engine("qemu-img", shutil.which("qemu-img") is not None,
                   "install qemu-utils (scripts/ci/setup-libvirt.sh)")


def _info(path):
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", path],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_overlay_is_backed_by_the_image_which_stays_unchanged(tmp_path, needs_qemu_img):
    image = tmp_path / "cache.img"
    image.write_bytes(b"\x01" * (1024 * 1024))
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    overlay = vmimages.create_overlay(str(image), str(tmp))
    assert os.path.dirname(overlay) == str(tmp)
    assert os.path.basename(overlay).startswith("root.disk.")
    info = _info(overlay)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(image)
    assert info["backing-filename-format"] == "raw"
    subprocess.run(["qemu-io", "-c", "write -P 0x55 0 64k", overlay], check=True,
                   capture_output=True)
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before


def test_chained_image_is_refused(tmp_path, needs_qemu_img):
    base = tmp_path / "base.img"
    base.write_bytes(b"\0" * 65536)
    chained = tmp_path / "chained.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base),
                    str(chained)], check=True)
    with pytest.raises(BackendError, match="backing file"):
        vmimages.create_overlay(str(chained), str(tmp_path))
    assert not any(n.startswith("root.disk.") for n in os.listdir(str(tmp_path)))


def test_unsupported_format_is_refused(tmp_path, needs_qemu_img):
    vdi = tmp_path / "img.vdi"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vdi", str(vdi), "1M"], check=True)
    with pytest.raises(BackendError, match="only raw and qcow2"):
        vmimages.image_format(str(vdi))


def test_sparse_disk_size_and_sparseness(tmp_path, mt):
    machinetype, settings = mt("x")
    assert vmimages.disk_gb_per_processor(machinetype, settings) is None
    size = vmimages.sparse_disk_bytes(3, None)
    assert size == 3 * 40 * 10 ** 9
    assert vmimages.sparse_disk_bytes(2, 5) == 10 * 10 ** 9
    path = vmimages.create_sparse_file(str(tmp_path), "root.disk.", size)
    st = os.stat(path)
    assert st.st_size == size and st.st_blocks == 0


def test_machinetype_disk_size_applies_up_to_the_settings_ceiling(mt):
    # [settings] is the site's ceiling; a machinetype (or pipe) asks below it.
    machinetype, settings = mt("x", settings="disk_gb_per_processor = 7",
                               machinetype="disk_gb_per_processor = 9")
    assert vmimages.disk_gb_per_processor(machinetype, settings) == 7
    machinetype, settings = mt("x", settings="disk_gb_per_processor = 7",
                               machinetype="disk_gb_per_processor = 5")
    assert vmimages.disk_gb_per_processor(machinetype, settings) == 5
    machinetype, settings = mt("x", settings="disk_gb_per_processor = 7")
    assert vmimages.disk_gb_per_processor(machinetype, settings) == 7


def test_lv_sizes_are_whole_extents():
    vg = vmimages.VolumeGroup("vg", size=1000 * 4 * 1024 ** 2, extent=4 * 1024 ** 2,
                              volumes={"root": 100 * 4 * 1024 ** 2,
                                       "f1-03.example.com": 50 * 4 * 1024 ** 2})
    ours = vmimages.vac_lv_pattern("f1.example.com").fullmatch
    assert ours("f1-03.example.com") and not ours("root") and not ours("f1-3.example.com")
    assert not ours("f1-03.example.comx") and not ours("g1-03.example.com")
    # fixed size: 1 GB x 2 processors, rounded down to 4 MiB extents
    assert vmimages.lv_bytes(2, 1, vg, 4, ours) == 2 * 10 ** 9 // vg.extent * vg.extent
    # share of the VG without non-Vac LVs: 1 of 4 processors of 900 extents
    assert vmimages.lv_bytes(1, None, vg, 4, ours) == 225 * vg.extent
    assert vmimages.lv_bytes(3, None, vg, 4, ours) % vg.extent == 0
