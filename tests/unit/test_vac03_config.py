# SPDX-License-Identifier: BSD-2-Clause
"""The original's volume group fallback: with volume_group
unset, vac_volume_group is used when it exists; a given volume group must exist."""
from __future__ import annotations

import dataclasses

import pytest

from vac.errors import ConfigError

SETTINGS = "[settings]\nvac_space = vac01.example.com\nfactory_name = f1.example.com\n"


def test_unset_volume_group_falls_back_to_vac_volume_group_when_it_exists(make_config, host):
    assert host.vg_exists("vac_volume_group")
    assert make_config(SETTINGS).settings.volume_group == "vac_volume_group"
    without = dataclasses.replace(host, vg_exists=lambda name: False)
    assert make_config(SETTINGS, host_facts=without).settings.volume_group is None


def test_a_given_volume_group_is_used_or_must_exist(make_config, host):
    both = dataclasses.replace(host, vg_exists=lambda name: name in ("vg1", "vac_volume_group"))
    assert make_config(SETTINGS + "volume_group = vg1\n",
                       host_facts=both).settings.volume_group == "vg1"
    with pytest.raises(ConfigError, match="nosuchvg"):
        make_config(SETTINGS + "volume_group = nosuchvg\n")
