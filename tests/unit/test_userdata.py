# SPDX-License-Identifier: BSD-2-Clause
"""user_data: every ##user_data_...## substitution, template sources, files, proxies, and the
real template parts of tests/data/realpipes."""
from __future__ import annotations

import email
import json
import os
import re

import pytest
from testbed import REALPIPES

from vac.errors import FetchError, UserDataError
from vac.machine.userdata import (
    FILE_LIMIT,
    TEMPLATE_LIMIT,
    build_user_data,
    load_template,
    substitute,
)

UUID = "5f0c7f3e-4a0b-4c53-9a7e-2d1e4f7b9c01"
NAME = "f1-03.example.com"
SHUTDOWN = 1_700_086_400
NOW = 1_700_000_000
VM_URLS = ("http://169.254.169.253/machinefeatures", "http://169.254.169.253/jobfeatures",
           "http://169.254.169.253/joboutputs")
DOCKER_URLS = ("/etc/machinefeatures", "/etc/jobfeatures", "/var/spool/joboutputs")
APPTAINER_URLS = ("/tmp/machinefeatures", "/tmp/jobfeatures", "/tmp/joboutputs")
TEMPLATES = os.path.join(REALPIPES, "templates")
INVENTORY = os.path.join(REALPIPES, "derived", "user_data_template_inventory.json")
MIME_STRUCTURE = os.path.join(REALPIPES, "derived", "mime_user_data_structure.json")

CONF = """
[settings]
vac_space = vac01.example.com
{settings}

[machinetype lhcb]
target_share = 1
user_data = {user_data}
root_image = {root_image}
{machinetype}
"""


@pytest.fixture
def setup(make_config, paths):
    """setup(template=bytes or None, user_data=..., settings=..., machinetype=...) ->
    (settings, machinetype); a bytes template is written to the machinetype's files/."""

    def make(template=b"", user_data="user_data", settings="", machinetype="",
             root_image="https://repo.example.org/cernvm4.iso"):
        files = os.path.join(paths.machinetype_dir("lhcb"), "files")
        os.makedirs(files, exist_ok=True)
        if template is not None:
            with open(os.path.join(files, "user_data"), "wb") as f:
                f.write(template)
        conf = make_config(CONF.format(settings=settings, user_data=user_data,
                                       root_image=root_image, machinetype=machinetype))
        return conf.settings, conf.machinetypes["lhcb"]

    return make


def files_dir(paths):
    return os.path.join(paths.machinetype_dir("lhcb"), "files")


def build(settings, machinetype, **kw):
    args = dict(machine_name=NAME, uuid=UUID, mjf_urls=VM_URLS, shutdown_time=SHUTDOWN,
                version="04.00.00", now=NOW)
    args.update(kw)
    return build_user_data(settings, machinetype, **args)


class FakeFetcher:
    def __init__(self, body=b"", error=None):
        self.body = body
        self.error = error
        self.calls = []

    def __call__(self, url, *, timeout, max_bytes, user_agent):
        self.calls.append(dict(url=url, timeout=timeout, max_bytes=max_bytes,
                               user_agent=user_agent))
        if self.error:
            raise self.error
        return self.body


class FakeProxyMaker:
    def __init__(self, pem="-----BEGIN CERTIFICATE-----\nPROXY\n-----END CERTIFICATE-----\n",
                 error=None):
        self.pem = pem
        self.error = error
        self.calls = []

    def __call__(self, cert_path, key_path, expires, *, cn, legacy, now):
        self.calls.append(dict(cert_path=cert_path, key_path=key_path, expires=expires, cn=cn,
                               legacy=legacy, now=now))
        if self.error:
            raise self.error
        return self.pem


# Every fixed substitution, table-driven -----------------------------------------------------

SUBSTITUTIONS = [
    ("url", ""),                                   # local template: no URL
    ("site", "example.com"),                       # no gocdb_sitename: the space's domain
    ("space", "vac01.example.com"),
    ("machinetype", "lhcb"),
    ("machine_hostname", NAME),
    ("manager_version", "Vac 04.00.00"),
    ("manager_hostname", "f1.example.com"),
    ("machinefeatures_url", VM_URLS[0]),
    ("jobfeatures_url", VM_URLS[1]),
    ("joboutputs_url", VM_URLS[2]),
    ("manager_machinefeatures_url", VM_URLS[0]),
    ("manager_jobfeatures_url", VM_URLS[1]),
    ("manager_joboutputs_url", VM_URLS[2]),
    ("root_image_url", "https://repo.example.org/cernvm4.iso"),
    ("heartbeat_machines_url", ""),
    ("vmtype", "lhcb"),
    ("vm_hostname", NAME),
    ("vmlm_version", "Vac 04.00.00"),
    ("vmlm_hostname", "f1.example.com"),
    ("uuid", UUID),
    ("option_x509_proxy", ""),                     # user_data_proxy not set
    ("option_cvmfs_proxy", "http://squid1:3128|http://squid2:3128;DIRECT"),
    ("option_queue", "default"),
]


@pytest.mark.parametrize("name, expected", SUBSTITUTIONS)
def test_each_substitution(setup, name, expected):
    s, mt = setup(b"<##user_data_" + name.encode() + b"##>\n", machinetype=(
        "user_data_option_cvmfs_proxy = http://squid1:3128|http://squid2:3128;DIRECT\n"
        "user_data_option_queue = default"))
    assert build(s, mt) == b"<" + expected.encode() + b">\n"


def test_all_substitutions_in_one_template(setup):
    template = b"".join(b"%s=##user_data_%s##\n" % (n.encode(), n.encode())
                        for n, _ in SUBSTITUTIONS)
    s, mt = setup(template, machinetype="user_data_option_cvmfs_proxy = "
                  "http://squid1:3128|http://squid2:3128;DIRECT\nuser_data_option_queue = default")
    expected = b"".join(b"%s=%s\n" % (n.encode(), v.encode()) for n, v in SUBSTITUTIONS)
    assert build(s, mt) == expected


def test_site_is_gocdb_sitename_when_set(setup):
    s, mt = setup(b"##user_data_site##", settings="gocdb_sitename = UKI-NORTHGRID-MAN-HEP")
    assert build(s, mt) == b"UKI-NORTHGRID-MAN-HEP"


def test_root_image_url_only_for_http_images(setup):
    s, mt = setup(b"[##user_data_root_image_url##]", root_image="cernvm4.iso")
    assert build(s, mt) == b"[]"
    s, mt = setup(b"[##user_data_root_image_url##]", root_image="http://r.example.org/a.iso")
    assert build(s, mt) == b"[http://r.example.org/a.iso]"


def test_heartbeat_machines_url_when_supplied(setup):
    s, mt = setup(b"[##user_data_heartbeat_machines_url##]")
    assert build(s, mt, heartbeat_machines_url="https://hb.example/") == b"[https://hb.example/]"


def test_version_defaults_to_this_package(setup):
    import vac

    s, mt = setup(b"##user_data_manager_version##")
    assert build(s, mt, version=None) == f"Vac {vac.__version__}".encode()


@pytest.mark.parametrize("urls", [VM_URLS, DOCKER_URLS, APPTAINER_URLS])
def test_both_spellings_of_mjf_urls(setup, urls):
    template = b"".join(b"##user_data_%s%s_url##\n" % (prefix, name)
                        for prefix in (b"", b"manager_")
                        for name in (b"machinefeatures", b"jobfeatures", b"joboutputs"))
    s, mt = setup(template)
    out = build(s, mt, mjf_urls=urls).decode().splitlines()
    assert out == list(urls) + list(urls)


def test_uuid_must_be_known(setup):
    s, mt = setup(b"##user_data_uuid##")
    with pytest.raises(UserDataError, match="UUID"):
        build(s, mt, uuid="")


# Leftovers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("template, expected", [
    (b"# ##user_data___## substitutions:\n", b"#  substitutions:\n"),
    (b"a##user_data__##b", b"ab"),
    (b"a##user_data_##b", b"ab"),
    (b"a##user_data_option_not_configured##b", b"ab"),
    (b"a##user_data_file_not_configured##b", b"ab"),
    (b"a##user_data_no_such_thing_2##b", b"ab"),
    (b"##user_data_x####user_data_space##", b"vac01.example.com"),
    (b"###user_data_space###", b"#vac01.example.com#"),
    # Not patterns: left alone.
    (b"##user_data_UPPER##", b"##user_data_UPPER##"),
    (b"##user_data_a-b##", b"##user_data_a-b##"),
    (b"##user_data_space#", b"##user_data_space#"),
    (b"#user_data_space##", b"#user_data_space##"),
    (b"##USER_DATA_space##", b"##USER_DATA_space##"),
])
def test_leftovers_removed(setup, template, expected):
    s, mt = setup(template)
    assert build(s, mt) == expected


def test_nothing_matching_is_left(setup):
    s, mt = setup(b"".join(b"##user_data_%s##" % n for n in
                           (b"_", b"__", b"___", b"zz9_", b"option_x", b"file_y", b"url")))
    assert build(s, mt) == b""


# Options and files -------------------------------------------------------------------------

def test_user_data_option_from_settings_and_machinetype(setup):
    s, mt = setup(b"##user_data_option_a## ##user_data_option_b##",
                  settings="user_data_option_a = site-a\nuser_data_option_b = site-b",
                  machinetype="user_data_option_b = type-b")
    assert build(s, mt) == b"site-a type-b"


def test_user_data_file_fills_both_patterns(setup, paths):
    cert = b"-----BEGIN CERTIFICATE-----\nMIIB\xff\xfe\n-----END CERTIFICATE-----\n"
    s, mt = setup(b"A:##user_data_file_hostcert##B:##user_data_option_hostcert##",
                  machinetype="user_data_file_hostcert = hostcert.pem")
    with open(os.path.join(files_dir(paths), "hostcert.pem"), "wb") as f:
        f.write(cert)
    assert build(s, mt) == b"A:" + cert + b"B:" + cert


def test_user_data_file_absolute_path(setup, tmp_path):
    key = tmp_path / "hostkey.pem"
    key.write_bytes(b"KEY\n")
    s, mt = setup(b"[##user_data_option_hostkey##][##user_data_file_hostkey##]",
                  settings=f"user_data_file_hostkey = {key}")
    assert build(s, mt) == b"[KEY\n][KEY\n]"


def test_file_contents_are_inserted_verbatim_not_rescanned(setup, paths):
    s, mt = setup(b"##user_data_file_script##", machinetype="user_data_file_script = s.sh")
    body = b"#!/bin/sh\necho ##user_data_space## ##user_data___##\n"
    with open(os.path.join(files_dir(paths), "s.sh"), "wb") as f:
        f.write(body)
    assert build(s, mt) == body


def test_option_beats_file_of_the_same_name(setup, paths):
    s, mt = setup(b"##user_data_option_hostkey##|##user_data_file_hostkey##",
                  machinetype="user_data_option_hostkey = inline\n"
                              "user_data_file_hostkey = hostkey.pem")
    with open(os.path.join(files_dir(paths), "hostkey.pem"), "wb") as f:
        f.write(b"FROMFILE")
    assert build(s, mt) == b"inline|FROMFILE"


@pytest.mark.parametrize("make_bad", ["missing", "directory", "too_big"])
def test_unreadable_file_is_an_error_naming_everything(setup, paths, make_bad):
    s, mt = setup(b"##user_data_file_hostkey##", machinetype="user_data_file_hostkey = hk.pem")
    path = os.path.join(files_dir(paths), "hk.pem")
    if make_bad == "directory":
        os.mkdir(path)
    elif make_bad == "too_big":
        with open(path, "wb") as f:
            f.write(b"x" * (FILE_LIMIT + 1))
    with pytest.raises(UserDataError) as info:
        build(s, mt)
    message = str(info.value)
    assert "lhcb" in message and "user_data_file_hostkey" in message and path in message


def test_unused_unreadable_file_is_still_an_error(setup):
    s, mt = setup(b"no patterns", machinetype="user_data_file_unused = nothere.pem")
    with pytest.raises(UserDataError, match="user_data_file_unused"):
        build(s, mt)


def test_x509_proxy_from_proxy_maker(setup, paths):
    s, mt = setup(b"P=##user_data_option_x509_proxy##",
                  machinetype="user_data_proxy = true\nuser_data_option_x509_proxy = static")
    maker = FakeProxyMaker()
    assert build(s, mt, proxy_maker=maker) == b"P=" + maker.pem.encode()
    base = paths.machinetype_dir("lhcb")
    assert maker.calls == [dict(cert_path=os.path.join(base, "x509cert.pem"),
                                key_path=os.path.join(base, "x509key.pem"),
                                expires=SHUTDOWN, cn="lhcb", legacy=False, now=NOW)]


def test_legacy_x509_proxy(setup):
    s, mt = setup(b"##user_data_option_x509_proxy##",
                  machinetype="user_data_proxy = true\nlegacy_proxy = true")
    maker = FakeProxyMaker()
    build(s, mt, proxy_maker=maker)
    assert (maker.calls[0]["cn"], maker.calls[0]["legacy"]) == (None, True)


def test_no_proxy_without_user_data_proxy(setup):
    s, mt = setup(b"[##user_data_option_x509_proxy##]")
    maker = FakeProxyMaker()
    assert build(s, mt, proxy_maker=maker) == b"[]"
    assert maker.calls == []


def test_proxy_failure_is_a_user_data_error(setup):
    s, mt = setup(b"##user_data_option_x509_proxy##", machinetype="user_data_proxy = true")
    maker = FakeProxyMaker(error=UserDataError("certificate x509cert.pem expires at 1"))
    with pytest.raises(UserDataError, match=r"lhcb.*expires"):
        build(s, mt, proxy_maker=maker)


def test_real_proxy_end_to_end(setup, paths):
    """The default proxy maker, signing with a self-signed certificate made here."""
    pytest.importorskip("cryptography")
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vac01.example.com")])
    utc = datetime.timezone.utc
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(datetime.datetime.fromtimestamp(NOW - 3600, tz=utc))
            .not_valid_after(datetime.datetime.fromtimestamp(SHUTDOWN + 3600, tz=utc))
            .sign(key, hashes.SHA256()))
    base = paths.machinetype_dir("lhcb")
    s, mt = setup(b"##user_data_option_x509_proxy##", machinetype="user_data_proxy = true")
    with open(os.path.join(base, "x509cert.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(base, "x509key.pem"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    pem = build(s, mt)
    proxy = x509.load_pem_x509_certificate(pem)
    assert proxy.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[-1].value == "lhcb"
    assert pem.count(b"-----BEGIN CERTIFICATE-----") == 2
    assert b"-----BEGIN PRIVATE KEY-----" in pem
    with pytest.raises(UserDataError, match="expires"):
        build(s, mt, shutdown_time=SHUTDOWN + 7200)


# Template sources --------------------------------------------------------------------------

def test_remote_template_through_fetcher(setup):
    url = "https://repo.example.org/lhcb/user_data"
    s, mt = setup(None, user_data=url)
    fetcher = FakeFetcher(b"from ##user_data_url## for ##user_data_machinetype##")
    assert build(s, mt, fetcher=fetcher) == f"from {url} for lhcb".encode()
    assert fetcher.calls == [dict(url=url, timeout=30, max_bytes=TEMPLATE_LIMIT,
                                  user_agent="Vac 04.00.00")]
    build(s, mt, fetcher=fetcher)
    assert len(fetcher.calls) == 2        # fetched at every creation, never cached


def test_remote_fetch_failure_names_machinetype_and_url(setup):
    url = "https://repo.example.org/lhcb/user_data"
    s, mt = setup(None, user_data=url)
    fetcher = FakeFetcher(error=FetchError(url, "HTTP status 404", 404))
    with pytest.raises(UserDataError) as info:
        build(s, mt, fetcher=fetcher)
    assert "lhcb" in str(info.value) and url in str(info.value)
    assert isinstance(info.value.__cause__, FetchError)


def test_remote_template_too_large(setup):
    s, mt = setup(None, user_data="http://repo.example.org/u")
    with pytest.raises(UserDataError, match="larger"):
        build(s, mt, fetcher=FakeFetcher(b"x" * (TEMPLATE_LIMIT + 1)))


def test_local_template_absolute_path(setup, tmp_path):
    path = tmp_path / "my_user_data"
    path.write_bytes(b"[##user_data_url##][##user_data_space##]")
    s, mt = setup(None, user_data=str(path))
    assert build(s, mt, fetcher=FakeFetcher(error=AssertionError("no fetch"))) \
        == b"[][vac01.example.com]"
    assert load_template(mt).source == str(path)


def test_local_template_relative_to_files(setup, paths):
    s, mt = setup(b"x", user_data="user_data")
    template = load_template(mt)
    assert template.source == os.path.join(paths.machinetype_dir("lhcb"), "files", "user_data")
    assert (template.data, template.remote) == (b"x", False)


def test_missing_template_names_machinetype_and_path(setup, paths):
    s, mt = setup(None, user_data="nothere")
    with pytest.raises(UserDataError) as info:
        build(s, mt)
    assert "lhcb" in str(info.value)
    assert os.path.join(files_dir(paths), "nothere") in str(info.value)


def test_local_template_too_large(setup):
    s, mt = setup(b"x" * (TEMPLATE_LIMIT + 1))
    with pytest.raises(UserDataError, match="larger"):
        build(s, mt)


def test_pipe_machinetype_files_resolve_under_the_pipe_prefix(make_config, paths):
    """The real vmcondor.pipe: bare user_data_file_* names live in machinetypes/<prefix>/files."""
    with open(os.path.join(REALPIPES, "pipes", "projectvacuum-vmcondor__vmcondor.pipe")) as f:
        entry = json.load(f)["machinetypes"][0]
    values = {k: (str(v), "pipe vmcondor") for k, v in entry.items() if k != "suffix"}
    conf = make_config("""
        [settings]
        vac_space = vac01.example.com

        [vacuum_pipe vmcondor]
        vacuum_pipe_url = https://repo.gridpp.ac.uk/vacproject/vmcondor/vmcondor.pipe
        target_share = 1
        """, pipe_values={"vmcondor-prod": values})
    mt = conf.machinetypes["vmcondor-prod"]
    files = os.path.join(paths.machinetype_dir("vmcondor"), "files")
    os.makedirs(files)
    for name in ("hostcert.pem", "hostkey.pem"):
        with open(os.path.join(files, name), "wb") as f:
            f.write(name.encode())
    fetcher = FakeFetcher(b"##user_data_option_hostcert##,##user_data_file_hostkey##,"
                          b"##user_data_option_arc_queue##,##user_data_root_image_url##,"
                          b"##user_data_url##")
    out = build(conf.settings, mt, fetcher=fetcher)
    assert out == (b"hostcert.pem,hostkey.pem,cernvm3,"
                   b"https://repo.gridpp.ac.uk/vacproject/vmcondor/cernvm3.iso,"
                   b"https://repo.gridpp.ac.uk/vacproject/vmcondor/vmcondor_cernvm3.user_data")


# Opaque bytes ------------------------------------------------------------------------------

def test_binary_and_non_utf8_templates_pass_through(setup):
    template = (b"\xef\xbb\xbfBOM\r\nlatin-1 caf\xe9\r\n\x00NUL\xff\xfe\x80\r\n"
                b"host=##user_data_machine_hostname##\r\nend\xc3(")
    s, mt = setup(template)
    assert build(s, mt) == template.replace(b"##user_data_machine_hostname##", NAME.encode())


def test_non_ascii_option_values_are_utf8(setup):
    s, mt = setup(b"\xe9##user_data_option_who##\xe9", machinetype="user_data_option_who = Zoë")
    assert build(s, mt) == b"\xe9Zo\xc3\xab\xe9"


def test_substitute_is_pure_and_first_value_wins():
    table = [("space", b"first"), ("space", b"second"), ("x", b"##user_data_space##")]
    assert substitute(b"##user_data_space##/##user_data_x##/##user_data_y##", table) \
        == b"first/##user_data_space##/"


# The real templates of tests/data/realpipes ----------------------------------------------------

REAL_OPTIONS = {"cvmfs_proxy": "http://squid.example.com:3128",
                "condor_host": "condor.example.com"}


def reference_substitution(template: bytes, values: dict) -> bytes:
    """An independent reading of the original: str.replace in turn, then remove leftovers."""
    for name, value in values.items():
        template = template.replace(b"##user_data_%s##" % name.encode(), value.encode())
    return re.sub(rb"##user_data_[a-z0-9_]*##", b"", template)


def real_values():
    return {"space": "vac01.example.com", "machinetype": "lhcb", "machine_hostname": NAME,
            "machinefeatures_url": VM_URLS[0], "jobfeatures_url": VM_URLS[1],
            "joboutputs_url": VM_URLS[2],
            **{"option_" + k: v for k, v in REAL_OPTIONS.items()}}


def real_setup(setup):
    return setup(None, machinetype="\n".join(f"user_data_option_{k} = {v}"
                                             for k, v in REAL_OPTIONS.items()))


@pytest.mark.parametrize("part", sorted(os.listdir(TEMPLATES)))
def test_real_template_part_substitutes_cleanly(setup, paths, part):
    with open(os.path.join(TEMPLATES, part), "rb") as f:
        original = f.read()
    s, mt = real_setup(setup)
    with open(os.path.join(files_dir(paths), "user_data"), "wb") as f:
        f.write(original)
    out = build(s, mt)
    assert b"##user_data_" not in out
    assert out == reference_substitution(original, real_values())
    before, after = original.split(b"\n"), out.split(b"\n")
    assert len(before) == len(after)
    for old, new in zip(before, after):
        if b"##user_data_" not in old:
            assert new == old


def test_inventory_patterns_are_all_known(setup, paths):
    """Every pattern the real templates use gets a value; only the ##user_data__(_)## comment
    markers are removed."""
    with open(INVENTORY) as f:
        patterns = sorted({p for entry in json.load(f) for p in entry["patterns"]})
    names = [p[len("##user_data_"):-2] for p in patterns]
    options = [n[len("option_"):] for n in names if n.startswith("option_")]
    file_keys = [n[len("file_"):] for n in names if n.startswith("file_")]
    lines = [f"user_data_option_{o} = opt-{o}" for o in options if o != "x509_proxy"]
    lines += [f"user_data_file_{k} = {k}.pem" for k in file_keys]
    lines.append("user_data_proxy = true")
    s, mt = setup(b"\n".join(p.encode() for p in patterns), machinetype="\n".join(lines),
                  user_data="https://repo.example.org/user_data")
    for k in file_keys:
        with open(os.path.join(files_dir(paths), f"{k}.pem"), "wb") as f:
            f.write(f"file-{k}".encode())
    out = build(s, mt, fetcher=FakeFetcher(b"\n".join(p.encode() for p in patterns)),
                proxy_maker=FakeProxyMaker(pem="PROXY")).split(b"\n")
    for pattern, value in zip(patterns, out):
        if pattern in ("##user_data__##", "##user_data___##"):
            assert value == b"", pattern
        else:
            assert value, f"{pattern} got no value"
            assert b"##" not in value


def assembled_mime() -> bytes:
    """A multipart user_data assembled from the real parts the way make_VMCondor_user_data
    assembles them, with the skeleton recorded in mime_user_data_structure.json."""
    with open(MIME_STRUCTURE) as f:
        skeleton = next(e for e in json.load(f) if e["path"] == "vacuum_user_data")

    def part(name):
        with open(os.path.join(TEMPLATES, f"projectvacuum-vmcondor__VMCondor_{name}"),
                  "rb") as f:
            return f.read()

    boundary = skeleton["boundary"].encode()
    head = (skeleton["first_line"].encode() + b"\n"
            + b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\n'
            + b"MIME-Version: 1.0\n"
            + b"Comment: Substitutions ##user_data___## for ##user_data_space##\n"
            + b"  made by the factory ##user_data_manager_hostname##\n\n")

    def mime_part(ctype, filename, body):
        return (b"--" + boundary + b"\n"
                + b'Content-Type: text/' + ctype + b'; charset="us-ascii"\n'
                + b"MIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\n"
                + b'Content-Disposition: attachment; filename="' + filename + b'"\n\n' + body)

    return (head
            + mime_part(b"cloud-config", b"vacuum_cloud-config",
                        part("comments") + part("cloud-config") + part("condor"))
            + mime_part(b"ucernvm", b"vacuum_ucernvm", part("ucernvm"))
            + b"--" + boundary + b"--\n")


def test_real_multipart_template_keeps_its_mime_structure(setup, paths):
    template = assembled_mime()
    s, mt = real_setup(setup)
    with open(os.path.join(files_dir(paths), "user_data"), "wb") as f:
        f.write(template)
    out = build(s, mt)
    assert b"##user_data_" not in out
    values = {**real_values(), "manager_hostname": "f1.example.com"}
    assert out == reference_substitution(template, values)
    before, after = template.split(b"\n"), out.split(b"\n")
    assert len(before) == len(after)
    for old, new in zip(before, after):
        if b"##user_data_" not in old:
            assert new == old                   # boundaries, headers, bodies byte-identical
    assert after[3] == b"Comment: Substitutions  for vac01.example.com"

    original, result = (email.message_from_bytes(x) for x in (template, out))
    assert result.is_multipart()
    assert result.get_boundary() == original.get_boundary()
    assert [(p.get_content_type(), p.get_filename()) for p in result.get_payload()] == \
        [(p.get_content_type(), p.get_filename()) for p in original.get_payload()] == \
        [("text/cloud-config", "vacuum_cloud-config"), ("text/ucernvm", "vacuum_ucernvm")]
    assert b"CVMFS_HTTP_PROXY: http://squid.example.com:3128" in out
    assert b"CONDOR_HOST: condor.example.com" in out
