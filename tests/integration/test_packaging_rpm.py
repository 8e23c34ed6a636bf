# SPDX-License-Identifier: BSD-2-Clause
"""The RPMs, built by scripts/build-rpm with a real rpmbuild: their file lists and modes, then
installed into a scratch root (rpm2cpio) and run from there with EL9's Python (3.9, from pyenv
when this machine has it): vac --help, vacd --help, vac config check, check-vacd; and the
systemd unit verified by systemd-analyze inside that root."""
from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import subprocess
import sys
from typing import Dict, List

import pytest
from testbed import REPO, require_engine

import vac

pytestmark = pytest.mark.slow
SITELIB = "/usr/lib/python3.9/site-packages"
UNITS = ("vacd.service", "vac-ssmsend.service", "vac-ssmsend.timer", "vac-apel-sync.service",
         "vac-apel-sync.timer")
STATE_DIRS = ("tmp", "imagecache", "machinetypes", "pipescache", "apel-archive",
              "apel-outgoing", "slots", "finishes", "machines")


def _run(argv: List[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def rpms(tmp_path_factory) -> Dict[str, str]:
    require_engine("rpmbuild", shutil.which("rpmbuild") is not None,
                   "scripts/ci/setup-packaging.sh installs Debian's rpm")
    out = tmp_path_factory.mktemp("rpmbuild")
    done = _run([os.path.join(REPO, "scripts", "build-rpm"), str(out)])
    assert done.returncode == 0, done.stderr
    found = {}
    for path in glob.glob(str(out / "RPMS" / "noarch" / "*.rpm")):
        name = _run(["rpm", "-qp", "--qf", "%{NAME}", path]).stdout
        found[name] = path
    assert sorted(found) == ["vac", "vac-command"]
    return found


def _listing(path: str) -> Dict[str, str]:
    """File -> its mode in octal, from rpm -qp (the package's header, as installed)."""
    done = _run(["rpm", "-qp", "--qf", "[%{FILEMODES:octal} %{FILENAMES}\n]", path])
    assert done.returncode == 0, done.stderr
    return {line.split(" ", 1)[1]: line.split(" ", 1)[0] for line in done.stdout.splitlines()}


def test_versions_are_the_one_version_string(rpms):
    for path in rpms.values():
        assert _run(["rpm", "-qp", "--qf", "%{VERSION}", path]).stdout == vac.__version__


def test_daemon_package_files_and_modes(rpms):
    files = _listing(rpms["vac"])
    assert files.pop("/usr/sbin/vacd") == "100755"
    assert files.pop("/usr/sbin/check-vacd") == "100755"
    for unit in UNITS:
        assert files.pop(f"/usr/lib/systemd/system/{unit}") == "100644", unit
    assert files.pop("/etc/logrotate.d/vacd") == "100644"
    assert files.pop("/etc/sysconfig/vacd") == "100644"
    assert files.pop("/etc/vac.conf") == "100644"
    assert files.pop("/etc/squid/squid.conf.vac") == "100644"   # the original's path
    assert files.pop("/usr/lib/firewalld") == "40755"
    assert files.pop("/usr/lib/firewalld/services") == "40755"
    assert files.pop("/usr/lib/firewalld/services/vacquery.xml") == "100644"
    assert files.pop("/etc/apel") == "40755"
    assert files.pop("/etc/apel/vac-ssmsend-prod.cfg") == "100644"
    assert files.pop("/usr/share/doc/vac/example.cron.d.vac-ssmsend") == "100644"
    assert files.pop("/usr/share/man/man8/vacd.8.gz") == "100644"
    assert files.pop("/usr/share/man/man8/check-vacd.8.gz") == "100644"
    assert files.pop("/var/lib/vac") == "40755"
    for d in STATE_DIRS:
        assert files.pop(f"/var/lib/vac/{d}") == "40755", d
    assert files == {}, "unexpected files in the vac package"
    config = _run(["rpm", "-qp", "--configfiles", rpms["vac"]]).stdout.split()
    assert sorted(config) == ["/etc/apel/vac-ssmsend-prod.cfg", "/etc/logrotate.d/vacd",
                              "/etc/squid/squid.conf.vac", "/etc/sysconfig/vacd",
                              "/etc/vac.conf"]
    noreplace = _run(["rpm", "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]",
                      rpms["vac"]]).stdout
    assert "cn /etc/vac.conf" in noreplace.splitlines(), "vac.conf must be %config(noreplace)"


def test_firewalld_service_opens_vacquery_udp_995(rpms, tmp_path):
    import xml.etree.ElementTree as ET

    cpio = subprocess.Popen(["rpm2cpio", rpms["vac"]], stdout=subprocess.PIPE)
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames",
                    "./usr/lib/firewalld/services/vacquery.xml"], stdin=cpio.stdout,
                   cwd=tmp_path, timeout=60, check=True)
    cpio.stdout.close()
    cpio.wait(timeout=60)
    service = ET.parse(tmp_path / "usr/lib/firewalld/services/vacquery.xml").getroot()
    ports = [(p.get("protocol"), p.get("port")) for p in service.findall("port")]
    assert service.tag == "service" and ports == [("udp", "995")]


def test_a_rebuild_with_another_release_upgrades(tmp_path):
    done = _run([os.path.join(REPO, "scripts", "build-rpm"), "--release", "2", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    built = glob.glob(str(tmp_path / "RPMS" / "noarch" / "vac-*.rpm"))
    assert len(built) == 2
    for path in built:
        assert _run(["rpm", "-qp", "--qf", "%{RELEASE}", path]).stdout.startswith("2")
    scripts = _run(["rpm", "-qp", "--scripts", [p for p in built if "command" not in p][0]])
    assert "try-restart vacd.service" in scripts.stdout or \
        "mark-restart-system-units vacd.service" in scripts.stdout, scripts.stdout


def test_command_package_files_and_modes(rpms):
    files = _listing(rpms["vac-command"])
    assert files["/usr/bin/vac"] == "100755"
    assert files["/var/lib/vac/VERSION"] == "100644"
    assert files["/etc/vac.d"] == "40755"
    for doc in ("example.vac.conf", "example.vac.d.conf", "example.pipe", "README.md"):
        assert files[f"/usr/share/doc/vac/{doc}"] == "100644", doc
    assert files["/usr/share/vac/squid.conf.vac"] == "100644"
    assert files["/usr/share/man/man1/vac.1.gz"] == "100644"
    assert files["/usr/share/man/man5/vac.conf.5.gz"] == "100644"
    template = f"{SITELIB}/vac/backends/libvirt/templates/libvirt-domain.xml.j2"
    assert files[template] == "100644", "templates are package data"
    modules = [f for f in files if f.startswith(f"{SITELIB}/vac/") and f.endswith(".py")]
    in_tree = [os.path.relpath(p, REPO) for p in glob.glob(f"{REPO}/vac/**/*.py", recursive=True)]
    assert sorted(m[len(SITELIB) + 1:] for m in modules) == sorted(in_tree)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    # The original's vac-command installed /usr/sbin/vac: kept as a link, nothing else there.
    assert files.pop("/usr/sbin/vac") == "120777"
    links = _run(["rpm", "-qp", "--qf", "[%{FILENAMES} %{FILELINKTOS}\n]",
                  rpms["vac-command"]]).stdout.splitlines()
    assert "/usr/sbin/vac ../bin/vac" in links
    assert not [f for f in files if f.startswith("/usr/sbin") or "systemd" in f]


def test_requires_and_weak_dependencies(rpms):
    requires = _run(["rpm", "-qp", "--requires", rpms["vac"]]).stdout
    assert f"vac-command = {vac.__version__}" in requires
    assert "libvirt" not in requires and "docker" not in requires, "backends must be optional"
    recommends = _run(["rpm", "-qp", "--recommends", rpms["vac"]]).stdout.split()
    assert {"python3-docker", "python3-libvirt", "python3-pycdlib"} <= set(recommends)
    assert {"python3-dirq", "python3-prometheus_client"} <= set(recommends)
    command = _run(["rpm", "-qp", "--requires", rpms["vac-command"]]).stdout
    assert "python3-jinja2" in command and "python3-pycurl" in command


@pytest.fixture(scope="module")
def root(rpms, tmp_path_factory) -> str:
    top = tmp_path_factory.mktemp("root")
    for path in rpms.values():
        cpio = subprocess.Popen(["rpm2cpio", path], stdout=subprocess.PIPE)
        done = subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
                              stdin=cpio.stdout, cwd=top, capture_output=True, timeout=60)
        cpio.stdout.close()
        assert cpio.wait(timeout=60) == 0 and done.returncode == 0, done.stderr
    return str(top)


def _python() -> str:
    """EL9's Python is 3.9: use pyenv's when this machine has it (with the test packages)."""
    found = sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3"))
    return found[-1] if found else sys.executable


def _installed(root: str, *argv: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": root + SITELIB, "LANG": "C.UTF-8"}
    return _run([_python(), *argv], cwd="/", env=env)


def test_installed_files_run_from_the_scratch_root(root):
    where = _installed(root, "-c", "import vac; print(vac.__file__)")
    assert where.stdout.strip() == f"{root}{SITELIB}/vac/__init__.py", where.stderr
    help_vac = _installed(root, f"{root}/usr/bin/vac", "--help")
    assert help_vac.returncode == 0, help_vac.stderr
    assert "doctor" in help_vac.stdout and "config" in help_vac.stdout
    help_vacd = _installed(root, f"{root}/usr/sbin/vacd", "--help")
    assert help_vacd.returncode == 0 and "--foreground" in help_vacd.stdout, help_vacd.stderr
    version = _installed(root, f"{root}/usr/bin/vac", "--version")
    assert version.stdout.strip() == f"vac {vac.__version__}"
    old_path = _installed(root, f"{root}/usr/sbin/vac", "--version")   # the original's path
    assert old_path.stdout.strip() == f"vac {vac.__version__}", old_path.stderr
    with open(f"{root}/var/lib/vac/VERSION") as f:
        assert f.read() == f"VERSION={vac.__version__}\n"


def test_the_squid_template_is_at_the_originals_path_too(root, tmp_path):
    """The original's Puppet module runs vac squid-conf /etc/squid/squid.conf.vac OUT."""
    with open(f"{root}/etc/squid/squid.conf.vac") as f, \
            open(f"{root}/usr/share/vac/squid.conf.vac") as g:
        assert f.read() == g.read()
    conf = tmp_path / "vac.conf"
    conf.write_text("[settings]\nvac_space = vac01.example.com\nfactory_name = f1.example.com\n"
                    f"state_dir = {tmp_path}/state\ntotal_processors = 1\n")
    out = tmp_path / "squid.conf"
    done = _installed(root, f"{root}/usr/sbin/vac", "--config", str(conf), "squid-conf",
                      f"{root}/etc/squid/squid.conf.vac", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    with open(f"{root}/etc/squid/squid.conf.vac") as f:
        assert out.read_text().startswith(f.read())


def test_installed_vac_conf_is_the_not_configured_example(root):
    with open(f"{root}/etc/vac.conf") as f, \
            open(f"{root}/usr/share/doc/vac/example.vac.conf") as g:
        assert f.read() == g.read()
    done = _installed(root, f"{root}/usr/bin/vac", "--config", f"{root}/etc/vac.conf",
                      "config", "check")
    assert done.returncode != 0, done.stdout


def test_installed_vac_config_check_on_the_installed_example(root, tmp_path):
    example = f"{root}/usr/share/doc/vac/example.vac.conf"
    conf = tmp_path / "vac.conf"
    with open(example) as f:   # uncommented, as a site starts from it
        body = "\n".join(line[1:] for line in f.read().splitlines()
                         if line.startswith("#[") or (line.startswith("#") and " = " in line
                                                      and not line.startswith("# "))
                         and "total_processors" not in line and "state_dir" not in line)
    body = body[:body.index("[vacuum_pipe atlas]")]
    conf.write_text(body.replace("[settings]\n", f"[settings]\nstate_dir = {tmp_path}/state\n"
                                 "factory_name = f1.example.com\n", 1))
    # The example's user_data is a file in the machinetype's files/: until it is there,
    # config check says so, resolved, and exits 1; then it is OK.
    files = tmp_path / "state" / "machinetypes" / "example" / "files"
    done = _installed(root, f"{root}/usr/bin/vac", "--config", str(conf), "config", "check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"user_data: user_data (resolved: {files}/user_data) does not exist" in done.stderr
    files.mkdir(parents=True)
    (files / "user_data").write_text("#!/bin/sh\necho payload\n")
    done = _installed(root, f"{root}/usr/bin/vac", "--config", str(conf), "config", "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "configuration OK: space vac01.example.com" in done.stdout
    assert "root_image" in done.stdout and "docker://registry.example.com/payload:1" in done.stdout
    as_json = _installed(root, f"{root}/usr/bin/vac", "--config", str(conf), "config", "check",
                         "--json")
    # The user_data line's value is the file name alone (no comment glued to it).
    example_mt = json.loads(as_json.stdout)["machinetypes"]["example"]
    assert example_mt["user_data"]["value"] == "user_data"


def test_installed_check_vacd_runs(root, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    script = f"{root}/usr/sbin/check-vacd"
    with open(script) as f:
        assert f.readline() == "#!/usr/bin/python3 -s\n"
    done = _installed(root, script, "--state-dir", str(state))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith("CRITICAL: factory-heartbeat missing")
    for name in ("factory-heartbeat", "responder-heartbeat"):
        (state / name).write_text("0")
    (state / "counts").write_text("3 8 3 8 30.0\n")
    done = _installed(root, script, "600", "--state-dir", str(state))
    assert (done.returncode, done.stdout) == (0, "OK: Factory + responder ok (3/8 3/8)\n")


def test_systemd_analyze_verifies_the_installed_unit(root, tmp_path):
    require_engine("systemd-analyze", shutil.which("systemd-analyze") is not None,
                   "package systemd")
    units = f"{root}/usr/lib/systemd/system"
    for unit in os.listdir("/usr/lib/systemd/system"):  # the targets the unit refers to
        src = os.path.join("/usr/lib/systemd/system", unit)
        if unit != "vacd.service" and not os.path.exists(os.path.join(units, unit)):
            if os.path.isfile(src) and not os.path.islink(src):
                shutil.copy(src, units)
    os.makedirs(f"{root}/bin", exist_ok=True)
    shutil.copy("/bin/kill", f"{root}/bin/kill")
    # ssmsend comes from apel-ssm, not from us: a stand-in, so that its units can be verified.
    with open(f"{root}/usr/bin/ssmsend", "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(f"{root}/usr/bin/ssmsend", 0o755)
    ok = _run(["systemd-analyze", "verify", "--man=no", f"--root={root}", *UNITS])
    assert ok.returncode == 0, ok.stderr
    with open(f"{units}/vacd.service") as f:
        text = f.read()
    assert "\nKillMode=process\n" in text
    assert "EnvironmentFile=-/etc/sysconfig/vacd" in text
    # The same verification fails on a broken unit: the check above can fail.
    with open(f"{units}/vacd.service", "w") as f:
        f.write(text.replace("ExecStart=/usr/sbin/vacd", "ExecStart=/usr/sbin/vacd-missing"))
    try:
        bad = _run(["systemd-analyze", "verify", "--man=no", f"--root={root}", "vacd.service"])
    finally:
        with open(f"{units}/vacd.service", "w") as f:
            f.write(text)
    assert bad.returncode != 0 and "vacd-missing" in bad.stderr
    assert stat.S_IMODE(os.stat(f"{root}/var/lib/vac").st_mode) == 0o755
