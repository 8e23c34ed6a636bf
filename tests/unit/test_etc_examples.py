# SPDX-License-Identifier: BSD-2-Clause
"""The example files under etc/ that the RPM ships: they parse, their values carry no comment
glued on (the original example's user_data line had one), the vac.d example is all comments,
the example pipe is a valid Vacuum Pipe, and the squid template is what squid-conf extends."""
from __future__ import annotations

import configparser
import os
import re

import pytest
from testbed import REPO

from vac.config import load, model, pipes, presence
from vac.errors import ConfigError, ConfigMissing

ETC = os.path.join(REPO, "etc")


def _values(path: str):
    parser = configparser.RawConfigParser()
    parser.read(path)
    return [(s, o, v) for s in parser.sections() for o, v in parser.items(s)]


def uncommented(path: str) -> str:
    """The example's settings with their "#" taken off (its prose keeps "# ")."""
    lines = open(path).read().splitlines()
    return "\n".join(line[1:] for line in lines
                     if re.match(r"#(\[|[a-z_0-9]+ = )", line)) + "\n"


def test_installed_vac_conf_is_all_comments_so_vacd_is_not_configured_yet(tmp_path):
    # The RPM installs it as /etc/vac.conf: vacd must start in "not configured yet".
    path = os.path.join(ETC, "vac.conf")
    lines = open(path).read().splitlines()
    assert all(line.startswith("#") or not line.strip() for line in lines)
    with pytest.raises(ConfigMissing) as missing:
        presence.require([path], explicit=False)
    assert "not configured yet: edit /etc/vac.conf" in str(missing.value)


def test_example_vac_conf_values_have_no_inline_comments(tmp_path):
    conf = tmp_path / "vac.conf"
    conf.write_text(uncommented(os.path.join(ETC, "vac.conf")))
    values = _values(str(conf))
    assert ("machinetype example", "user_data", "user_data") in values
    glued = [(s, o, v) for s, o, v in values if "#" in v]
    assert glued == []


def test_the_check_catches_the_original_inline_comment_bug(tmp_path):
    # As the example was: the comment becomes part of the value, which the check above sees.
    bad = tmp_path / "bad.conf"
    bad.write_text("[machinetype example]\nuser_data = user_data    # in files/\n")
    assert [v for _, _, v in _values(str(bad)) if "#" in v] == ["user_data    # in files/"]


def test_example_vac_conf_is_accepted_uncommented(tmp_path, host):
    text = uncommented(os.path.join(ETC, "vac.conf")).replace(
        "[settings]\n", f"[settings]\nstate_dir = {tmp_path}/state\n", 1)
    text = text[:text.index("[vacuum_pipe atlas]")]   # no network here
    # this host's processors, whatever the example's total says
    text = "\n".join(line for line in text.splitlines() if "total_processors" not in line)
    conf = tmp_path / "vac.conf"
    conf.write_text(text)
    presence.require([str(conf)], explicit=True)
    config = load.build(load.read_raw([str(conf)]), host)
    assert config.settings.vac_space == "vac01.example.com"
    assert config.machinetypes["example"].user_data == "user_data"
    assert config.machinetypes["example"].root_image == "docker://registry.example.com/payload:1"


def test_vac_d_example_is_only_comments_and_would_parse_uncommented(tmp_path, host):
    path = os.path.join(ETC, "vac.d", "example.conf")
    lines = open(path).read().splitlines()
    assert all(line.startswith("#") or not line.strip() for line in lines)
    body = "\n".join(line[2:] for line in lines if line.startswith("# ") and
                     (line[2:3] == "[" or " = " in line))
    conf = tmp_path / "uncommented.conf"
    conf.write_text(body.replace("[settings]\n", f"[settings]\nstate_dir = {tmp_path}/s\n"
                                 "singularity_user = vacsngly\n", 1) + "\n")
    try:
        config = load.build(load.read_raw([str(conf)]), host)
    except ConfigError as e:
        pytest.fail(f"the vac.d example does not parse uncommented: {e}")
    assert "monitoring" in config.machinetypes
    assert config.settings.factories == ("factory1", "factory2", "factory3")


def test_example_pipe_is_a_valid_vacuum_pipe():
    with open(os.path.join(ETC, "example.pipe"), "rb") as f:
        doc = pipes.parse_document(f.read(), "https://repo.example.org/example.pipe")
    assert doc.cache_seconds == 3600 and doc.warnings == ()
    section = model.PipeSection(prefix="example", url="https://repo.example.org/example.pipe",
                                target_share=2.0, options={}, origin="test")
    values, warnings = pipes.expand(section, doc, ["example"])
    assert warnings == []
    assert sorted(values) == ["example-prod"]
    assert sorted(values["example-prod"]) == sorted(k for k in doc.entries[0] if k != "suffix")


def test_squid_template_ends_where_squid_conf_appends():
    text = open(os.path.join(ETC, "squid.conf.vac")).read()
    assert "acl localnet src 169.254.169.0/24" in text
    assert "http_port 3128" in text and "icp_port 3130" in text
    assert "http_access deny URN" in text  # CVE-2019-12526, as in 03.00.02
    assert text.endswith("\n")


def test_every_file_under_etc_is_packaged_by_the_spec():
    # A file added under etc/ (by any change) must be installed by vac.spec, by name.
    with open(os.path.join(REPO, "vac.spec")) as f:
        spec = f.read()
    missing = []
    for root, _, files in os.walk(ETC):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), REPO)
            if rel not in spec and f" {name}" not in spec:
                missing.append(rel)
    assert missing == [], "add these to vac.spec (%install and %files)"
