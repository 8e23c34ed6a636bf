# SPDX-License-Identifier: BSD-2-Clause
"""vac.fsutil.unlink_if_present: the one unlink-if-there of the package."""
from __future__ import annotations

import os

import pytest

from vac import fsutil


def test_a_present_file_is_removed_and_an_absent_one_is_no_error(tmp_path):
    path = tmp_path / "marker"
    path.write_text("x")
    assert fsutil.unlink_if_present(str(path)) is True
    assert not path.exists()
    assert fsutil.unlink_if_present(str(path)) is False


def test_a_dangling_link_is_removed_not_followed(tmp_path):
    target = tmp_path / "kept"
    target.write_text("x")
    link = tmp_path / "link"
    os.symlink(str(target), str(link))
    assert fsutil.unlink_if_present(str(link)) is True
    assert target.exists() and not os.path.lexists(str(link))


def test_a_directory_is_an_error_not_a_silent_no(tmp_path):
    with pytest.raises(OSError):
        fsutil.unlink_if_present(str(tmp_path))
