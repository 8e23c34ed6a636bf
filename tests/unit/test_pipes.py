# SPDX-License-Identifier: BSD-2-Clause
"""vac.config.pipes: document validation, value rules, share rescaling, the cache; and the
pipes merged into the whole configuration by vac.config.assemble.load_config."""
from __future__ import annotations

import json
import os
import textwrap

import pytest
from testbed import REALPIPES

from vac.config import assemble, model, pipes
from vac.errors import ConfigError, FetchError

URL = "https://pipes.example.org/p.pipe"
NOW = 1_700_000_000.0
REAL = os.path.join(REALPIPES, "pipes")


class FakeFetcher:
    """Stands in for fetch.fetch_bytes: answers per URL, counts calls."""

    def __init__(self, answers=None):
        self.answers = dict(answers or {})
        self.calls = []

    def __call__(self, url, *, timeout, max_bytes):
        self.calls.append((url, timeout, max_bytes))
        answer = self.answers[url]
        if isinstance(answer, Exception):
            raise answer
        return answer


def doc(*entries, cache_seconds=3600):
    return {"cache_seconds": cache_seconds, "machinetypes": list(entries)}


def encode(document):
    return json.dumps(document).encode()


def section(prefix="p", url=URL, share=1.0, options=None):
    return model.PipeSection(prefix=prefix, url=url, target_share=share,
                              options=options or {}, origin=f"vac.conf [vacuum_pipe {prefix}]")


def expand(document, share=1.0, prefixes=("p",)):
    parsed = pipes.parse_document(encode(document), URL)
    return pipes.expand(section(share=share), parsed, prefixes)


def values_of(document, name="p-a", **kw):
    values, warnings = expand(document, **kw)
    return {k: v for k, (v, _) in values.get(name, {}).items()}, warnings


def write_cache(paths, prefix, body, mtime, raw=None):
    path = paths.pipe_cache(prefix)
    with open(path, "wb") as f:
        f.write(raw if raw is not None else encode(body))
    os.utime(path, (mtime, mtime))
    return path


# ---- the document --------------------------------------------------------------------------

@pytest.mark.parametrize("data, why", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"machinetypes": {"suffix": "a"}}', "not a list"),
    (b'{"machinetypes": ["a"]}', "machinetypes[0] is not an object"),
    (b'{"machinetypes": [{"suffix": "a", "target_share": NaN}]}', "not valid JSON"),
    (b'{"machinetypes": [{"suffix": "a", "target_share": 1e400}]}', "not valid JSON"),
    (b'{"machinetypes": [{"suffix": "a", "max_processors": ' + b"9" * 100 + b"}]}",
     "not valid JSON"),
    (b'{"cache_seconds": 1, "machinetypes": []}\xff', "not valid JSON"),
    (b"[" * 200_000 + b"]" * 200_000, "not valid JSON"),
])
def test_invalid_documents_refused(data, why):
    with pytest.raises(pipes.PipeError) as e:
        pipes.parse_document(data, URL)
    assert why in str(e.value)
    assert URL in str(e.value)


def test_document_size_bound():
    big = encode(doc({"suffix": "a", "user_data_option_x": "y" * pipes.MAX_PIPE_BYTES}))
    with pytest.raises(pipes.PipeError) as e:
        pipes.parse_document(big, URL)
    assert "larger than" in str(e.value)


def test_entry_count_bound():
    many = doc(*({"suffix": f"s{i}"} for i in range(pipes.MAX_ENTRIES + 1)))
    with pytest.raises(pipes.PipeError):
        pipes.parse_document(encode(many), URL)
    pipes.parse_document(encode(doc(*({"suffix": f"s{i}"} for i in range(pipes.MAX_ENTRIES)))),
                         URL)


def test_document_without_machinetypes_gives_nothing():
    values, warnings = expand({"cache_seconds": 60})
    assert values == {} and warnings == []


@pytest.mark.parametrize("given, used", [(None, 3600), (60, 60), ("120", 120), (0, 0),
                                         (10 ** 9, pipes.MAX_CACHE_SECONDS), (-5, 3600),
                                         ("soon", 3600), (True, 3600)])
def test_cache_seconds(given, used):
    body = {"machinetypes": []}
    if given is not None:
        body["cache_seconds"] = given
    assert pipes.parse_document(encode(body), URL).cache_seconds == used


# ---- entries and suffixes ------------------------------------------------------------------

def test_entry_without_suffix_skipped_with_warning():
    values, warnings = expand(doc({"target_share": 1}, {"suffix": "a"}))
    assert list(values) == ["p-a"]
    assert len(warnings) == 1
    assert URL in warnings[0] and "machinetypes[0]" in warnings[0] and "no suffix" in warnings[0]


@pytest.mark.parametrize("suffix", ["Prod", "a_b", "a/b", "a.b", "", "a b", "x" * 64, ["a"],
                                    None])
def test_invalid_suffix_skips_only_that_entry(suffix):
    values, warnings = expand(doc({"suffix": suffix}, {"suffix": "ok"}))
    assert list(values) == ["p-ok"]
    assert len(warnings) == 1 and "entry skipped" in warnings[0] and URL in warnings[0]


def test_numeric_suffix_converted_like_str():
    values, _ = expand(doc({"suffix": 7}))
    assert list(values) == ["p-7"]


def test_duplicate_suffix_keeps_first():
    values, warnings = expand(doc({"suffix": "a", "backoff_seconds": 1},
                                  {"suffix": "a", "backoff_seconds": 2}))
    assert values["p-a"]["backoff_seconds"][0] == "1"
    assert "same suffix" in warnings[0] and "machinetypes[1]" in warnings[0]


def test_name_of_a_longer_pipe_prefix_refused():
    # pipe "p" entry "x-a" would be p-x-a, which config attributes to [vacuum_pipe p-x]
    values, warnings = expand(doc({"suffix": "x-a"}, {"suffix": "y"}), prefixes=("p", "p-x"))
    assert list(values) == ["p-y"]
    assert "belongs to [vacuum_pipe p-x]" in warnings[0]


def test_too_many_options_skips_entry():
    entry = {"suffix": "a"}
    entry.update({f"user_data_option_o{i}": "v" for i in range(pipes.MAX_OPTIONS_PER_ENTRY)})
    values, warnings = expand(doc(entry))
    assert values == {} and "more than" in warnings[0]


def test_origin_names_url_and_pipe():
    values, _ = expand(doc({"suffix": "a", "backoff_seconds": 5}))
    assert values["p-a"]["backoff_seconds"] == ("5", f"{URL} (pipe p)")


# ---- target_share --------------------------------------------------------------------------

def test_target_share_rescaled_to_section_share():
    got, _ = expand(doc({"suffix": "a", "target_share": 1}, {"suffix": "b", "target_share": 3.0},
                        {"suffix": "c"}), share=8.0)
    assert got["p-a"]["target_share"][0] == "2.0"
    assert got["p-b"]["target_share"][0] == "6.0"
    assert "target_share" not in got["p-c"]


def test_target_share_numeric_strings_count():
    got, warnings = expand(doc({"suffix": "a", "target_share": "1"},
                               {"suffix": "b", "target_share": 1}), share=4.0)
    assert got["p-a"]["target_share"][0] == "2.0" and got["p-b"]["target_share"][0] == "2.0"
    assert warnings == []


def test_target_share_all_zero_gives_zero():
    got, warnings = expand(doc({"suffix": "a", "target_share": 0.0}), share=5.0)
    assert got["p-a"]["target_share"][0] == "0.0" and warnings == []


@pytest.mark.parametrize("bad", ["lots", -1, True, [1], None, "nan", "inf"])
def test_bad_target_share_is_zero_with_warning_and_not_summed(bad):
    got, warnings = expand(doc({"suffix": "a", "target_share": bad},
                               {"suffix": "b", "target_share": 2}), share=3.0)
    assert got["p-a"]["target_share"][0] == "0.0"
    assert got["p-b"]["target_share"][0] == "3.0"
    assert len(warnings) == 1 and "target_share" in warnings[0] and "suffix a" in warnings[0]


# ---- options and values --------------------------------------------------------------------

@pytest.mark.parametrize("key", ["machinegroup", "machines_dir_days", "vm_model",
                                 "root_public_key", "vacuum_pipe_url", "machinetype_path",
                                 "docker_network_mode", "fake_create_error", "whatever",
                                 "user_data_option_Bad", "user_data_file_a-b",
                                 "user_data_option_"])
def test_options_not_accepted_are_dropped_with_warning(key):
    got, warnings = values_of(doc({"suffix": "a", key: "x", "backoff_seconds": 9}))
    assert got == {"backoff_seconds": "9"}
    assert len(warnings) == 1
    assert URL in warnings[0] and "suffix a" in warnings[0] and repr(key) in warnings[0]


def test_every_accepted_option_is_taken():
    entry = {"suffix": "a", "accounting_fqan": "/vo/Role=NULL", "backoff_seconds": 1,
             "container_command": "/user_data", "cvmfs_repositories": "a.cern.ch b.cern.ch",
             "fizzle_seconds": 2, "disk_gb_per_processor": 3, "heartbeat_file": "hb",
             "heartbeat_seconds": 4, "image_signing_dn": "/CN=x$", "legacy_proxy": False,
             "machine_model": "docker", "max_processors": 6, "max_wallclock_seconds": 7,
             "min_processors": 5, "min_wallclock_seconds": 6, "root_device": "vda",
             "root_image": "docker://repo/img:1", "scratch_device": "vdb",
             "tmp_binds": "/tmp /scratch", "user_data": "https://x/ud",
             "user_data_proxy": True, "user_data_option_q": "v", "user_data_file_f": "f.pem"}
    got, warnings = values_of(doc(entry))
    assert warnings == []
    assert set(got) == set(entry) - {"suffix"}
    assert got["user_data_proxy"] == "true" and got["legacy_proxy"] == "false"
    assert got["backoff_seconds"] == "1"


@pytest.mark.parametrize("raw, text", [(True, "true"), (False, "false"), (600, "600"),
                                       (1.5, "1.5"), ("true", "true"), ("True", "True")])
def test_json_scalars_become_strings(raw, text):
    got, warnings = values_of(doc({"suffix": "a", "user_data_option_x": raw}))
    assert got["user_data_option_x"] == text and warnings == []


@pytest.mark.parametrize("raw", [["a"], {"a": 1}, None])
def test_non_scalar_values_rejected(raw):
    got, warnings = values_of(doc({"suffix": "a", "user_data_option_x": raw}))
    assert "user_data_option_x" not in got and "user_data_option_x" in warnings[0]


def test_value_length_bound():
    limit = pipes.MAX_VALUE_CHARS
    got, warnings = values_of(doc({"suffix": "a", "user_data_option_ok": "v" * limit,
                                   "user_data_option_long": "v" * (limit + 1)}))
    assert "user_data_option_ok" in got and "user_data_option_long" not in got
    assert "longer than" in warnings[0]


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\tb", "a\x7fb", "a\x85b",
                                   "a\u2028b", "a\ud800b"])
def test_control_characters_rejected(value):
    got, warnings = values_of(doc({"suffix": "a", "accounting_fqan": value}))
    assert "accounting_fqan" not in got and "control characters" in warnings[0]


@pytest.mark.parametrize("key, value, ok", [
    ("user_data_file_cert", "hostcert.pem", True),
    ("user_data_file_cert", "certs/hostcert.pem", False),
    ("user_data_file_cert", "/etc/shadow", False),
    ("user_data_file_cert", "..", False),
    ("cvmfs_repositories", "atlas.cern.ch grid.cern.ch", True),
    ("cvmfs_repositories", "atlas.cern.ch /cvmfs/grid.cern.ch", False),
    ("cvmfs_repositories", "atlas.cern.ch ..", False),
    ("heartbeat_file", "heartbeat", True),
    ("heartbeat_file", "../heartbeat", False),
    ("heartbeat_file", "logs/heartbeat", False),
    ("user_data", "https://repo.example/user_data", True),
    ("user_data", "http://repo.example/user_data", True),
    ("user_data", "user_data_sl7", True),
    ("user_data", "https://repo.example/a/../b", False),
    ("user_data", "/etc/passwd", False),
    ("user_data", "sub/user_data", False),
    ("user_data", "file:///etc/passwd", False),
    ("user_data", "..", False),
    ("root_image", "https://repo.example/cernvm3.iso", True),
    ("root_image", "http://repo.example/cernvm3.iso", True),
    ("root_image", "docker://registry.example/img:1", True),
    ("root_image", "/cvmfs/unpacked.cern.ch/registry/img", True),
    ("root_image", "cernvm3.iso", True),
    ("root_image", "/cvmfs/unpacked.cern.ch/../../etc", False),
    ("root_image", "/cvmfs/x/..", False),
    ("root_image", "/var/lib/images/x.img", False),
    ("root_image", "../x.img", False),
    ("root_image", "ftp://repo.example/x.iso", False),
    ("tmp_binds", "/tmp /scratch", True),
    ("tmp_binds", "/tmp scratch", False),
    ("tmp_binds", "/tmp/../etc", False),
])
def test_path_safety(key, value, ok):
    entry = {"suffix": "a", key: value}
    if key == "root_image" and value.startswith("docker://"):
        entry["machine_model"] = "docker"
    got, warnings = values_of(doc(entry))
    assert (key in got) == ok
    assert (warnings == []) == ok
    if not ok:
        assert repr(key) in warnings[0] and URL in warnings[0]


@pytest.mark.parametrize("key, value, ok", [
    ("backoff_seconds", "600", True), ("backoff_seconds", "ten", False),
    ("backoff_seconds", 600.5, False), ("backoff_seconds", -1, False),
    ("min_processors", 0, False), ("max_processors", 1, True),
    ("min_wallclock_seconds", "", True), ("disk_gb_per_processor", "x", False),
    ("machine_model", "cernvm3", True), ("machine_model", "vm-raw", True),
    ("machine_model", "singularity", True), ("machine_model", "qemu", False),
    ("machine_model", "fake", False),
])
def test_values_config_would_reject_are_dropped(key, value, ok):
    got, warnings = values_of(doc({"suffix": "a", key: value}))
    assert (key in got) == ok and (warnings == []) == ok


def test_warnings_bounded_per_pipe(paths):
    entries = [{"suffix": f"s{i}", "bogus": 1, "also_bogus": 2} for i in range(40)]
    write_cache(paths, "p", doc(*entries), NOW)
    result = pipes.load_pipes([section()], paths, update=False, now=NOW)
    assert len(result.warnings) == pipes.MAX_WARNINGS_PER_PIPE + 1
    assert "30 more warnings" in result.warnings[-1]


# ---- the cache -----------------------------------------------------------------------------

GOOD = doc({"suffix": "a", "target_share": 1, "backoff_seconds": 111})
NEWER = doc({"suffix": "a", "target_share": 1, "backoff_seconds": 222})


def _backoff(result):
    return result.values["p-a"]["backoff_seconds"][0]


def test_missing_cache_fetches_and_writes_once(paths):
    fetcher = FakeFetcher({URL: encode(GOOD)})
    result = pipes.load_pipes([section()], paths, update=True, now=NOW, fetcher=fetcher)
    assert fetcher.calls == [(URL, 30, pipes.MAX_PIPE_BYTES)]
    assert _backoff(result) == "111" and result.errors == ()
    cache = paths.pipe_cache("p")
    assert os.stat(cache).st_mtime == NOW
    with open(cache) as f:
        cached = json.load(f)
    assert cached["machinetypes"] == GOOD["machinetypes"]
    assert cached[pipes.CACHE_URL_KEY] == URL
    assert os.listdir(paths.pipescache) == ["p.pipe"]


def test_fresh_cache_not_refetched(paths):
    write_cache(paths, "p", GOOD, NOW - 3599)
    fetcher = FakeFetcher({URL: encode(NEWER)})
    result = pipes.load_pipes([section()], paths, update=True, now=NOW, fetcher=fetcher)
    assert fetcher.calls == [] and _backoff(result) == "111"


def test_stale_cache_refetched(paths):
    write_cache(paths, "p", GOOD, NOW - 3600)
    fetcher = FakeFetcher({URL: encode(NEWER)})
    result = pipes.load_pipes([section()], paths, update=True, now=NOW, fetcher=fetcher)
    assert len(fetcher.calls) == 1 and _backoff(result) == "222"
    assert os.stat(paths.pipe_cache("p")).st_mtime == NOW


def test_cache_seconds_from_cached_document(paths):
    write_cache(paths, "p", doc(*GOOD["machinetypes"], cache_seconds=60), NOW - 61)
    fetcher = FakeFetcher({URL: encode(NEWER)})
    pipes.load_pipes([section()], paths, update=True, now=NOW, fetcher=fetcher)
    assert len(fetcher.calls) == 1


def test_cache_seconds_zero_fetches_every_time(paths):
    zero = doc(*GOOD["machinetypes"], cache_seconds=0)
    fetcher = FakeFetcher({URL: encode(zero)})
    for i in range(3):
        pipes.load_pipes([section()], paths, update=True, now=NOW + i, fetcher=fetcher)
    assert len(fetcher.calls) == 3


def test_cache_from_the_future_refetched(paths):
    write_cache(paths, "p", GOOD, NOW + 86400)
    fetcher = FakeFetcher({URL: encode(NEWER)})
    pipes.load_pipes([section()], paths, update=True, now=NOW, fetcher=fetcher)
    assert len(fetcher.calls) == 1


def test_no_update_never_fetches(paths):
    fetcher = FakeFetcher({URL: encode(NEWER)})
    result = pipes.load_pipes([section()], paths, update=False, now=NOW, fetcher=fetcher)
    assert result.values == {} and result.errors == ()
    write_cache(paths, "p", GOOD, NOW - 10 ** 6)
    result = pipes.load_pipes([section()], paths, update=False, now=NOW, fetcher=fetcher)
    assert fetcher.calls == [] and _backoff(result) == "111"


@pytest.mark.parametrize("failure", [FetchError(URL, "HTTP status 503", 503),
                                     b"{broken json", b'{"machinetypes": "none"}'])
def test_failure_keeps_last_good_cache_and_reports(paths, failure):
    path = write_cache(paths, "p", GOOD, NOW - 7200)
    with open(path, "rb") as f:
        before = f.read()
    fetcher = FakeFetcher({URL: failure})
    result = pipes.load_pipes([section()], paths, update=True, now=NOW, fetcher=fetcher)
    assert _backoff(result) == "111"
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"{URL} (pipe p): cannot update: ")
    assert "still using the last good cached copy" in result.errors[0]
    assert os.stat(path).st_mtime == NOW - 7200          # retried next cycle
    with open(path, "rb") as f:
        assert f.read() == before
    assert os.listdir(paths.pipescache) == ["p.pipe"]
    pipes.load_pipes([section()], paths, update=True, now=NOW + 60, fetcher=fetcher)
    assert len(fetcher.calls) == 2


def test_failure_without_cache_reports_no_machinetypes(paths):
    fetcher = FakeFetcher({URL: FetchError(URL, "connection refused")})
    result = pipes.load_pipes([section()], paths, update=True, now=NOW, fetcher=fetcher)
    assert result.values == {}
    assert "connection refused" in result.errors[0] and "gives no machinetypes" in result.errors[0]
    assert not os.path.exists(paths.pipe_cache("p"))


def test_one_failing_pipe_does_not_hide_another(paths):
    other = "https://pipes.example.org/q.pipe"
    fetcher = FakeFetcher({URL: FetchError(URL, "timed out"), other: encode(GOOD)})
    result = pipes.load_pipes([section(), section("q", other)], paths, update=True, now=NOW,
                              fetcher=fetcher)
    assert list(result.values) == ["q-a"] and len(result.errors) == 1 and URL in result.errors[0]


def test_corrupt_cache_refetched_without_error(paths):
    write_cache(paths, "p", None, NOW, raw=b"garbage")
    fetcher = FakeFetcher({URL: encode(GOOD)})
    result = pipes.load_pipes([section()], paths, update=True, now=NOW, fetcher=fetcher)
    assert _backoff(result) == "111" and result.errors == ()


def test_corrupt_cache_without_update_is_an_error(paths):
    path = write_cache(paths, "p", None, NOW, raw=b"garbage")
    result = pipes.load_pipes([section()], paths, update=False, now=NOW)
    assert result.values == {} and path in result.errors[0] and URL in result.errors[0]


def test_symlinked_cache_not_followed(paths, tmp_path):
    target = tmp_path / "elsewhere.pipe"
    target.write_bytes(encode(GOOD))
    os.symlink(str(target), paths.pipe_cache("p"))
    result = pipes.load_pipes([section()], paths, update=False, now=NOW)
    assert result.values == {} and "symlink" in result.errors[0]


def test_cache_of_another_url_not_used(paths):
    fetcher = FakeFetcher({"https://old.example/p.pipe": encode(GOOD), URL: encode(NEWER)})
    pipes.load_pipes([section(url="https://old.example/p.pipe")], paths, update=True, now=NOW,
                     fetcher=fetcher)
    result = pipes.load_pipes([section()], paths, update=False, now=NOW + 1)
    assert result.values == {}
    result = pipes.load_pipes([section()], paths, update=True, now=NOW + 1, fetcher=fetcher)
    assert _backoff(result) == "222"


def test_original_vac_cache_used_as_is(paths):
    with open(os.path.join(REAL, "vacproject-vac__example.pipe"), "rb") as f:
        write_cache(paths, "example", None, NOW, raw=f.read())
    result = pipes.load_pipes([section("example", "https://repo.example/example.pipe")],
                              paths, update=False, now=NOW)
    assert list(result.values) == ["example-prod"] and result.errors == ()


def test_url_that_cannot_be_fetched(paths):
    write_cache(paths, "p", GOOD, NOW - 10 ** 6)
    fetcher = FakeFetcher()
    result = pipes.load_pipes([section(url="ftp://x/p.pipe")], paths, update=True, now=NOW,
                              fetcher=fetcher)
    assert fetcher.calls == [] and _backoff(result) == "111"
    assert "must start with https://" in result.errors[0]


def test_cache_write_failure_still_uses_fetched_document(paths):
    os.rmdir(paths.pipescache)
    with open(paths.pipescache, "w") as f:          # a file where the directory should be
        f.write("x")
    fetcher = FakeFetcher({URL: encode(GOOD)})
    result = pipes.load_pipes([section()], paths, update=True, now=NOW, fetcher=fetcher)
    assert _backoff(result) == "111"
    assert len(result.errors) == 1 and "cannot write" in result.errors[0]
    assert result.errors[0].startswith(f"{URL} (pipe p): ")


def test_missing_pipescache_directory_created(paths):
    os.rmdir(paths.pipescache)
    fetcher = FakeFetcher({URL: encode(GOOD)})
    result = pipes.load_pipes([section()], paths, update=True, now=NOW, fetcher=fetcher)
    assert result.errors == () and os.path.isfile(paths.pipe_cache("p"))


def test_fetch_through_file_url(paths, tmp_path):
    src = tmp_path / "local.pipe"
    src.write_bytes(encode(GOOD))
    result = pipes.load_pipes([section(url=f"file://{src}")], paths, update=True, now=NOW)
    assert _backoff(result) == "111" and os.path.exists(paths.pipe_cache("p"))


# ---- end to end through load.build and assemble.load_config ------------------------------

ATLAS = f"file://{REAL}/projectvacuum-vmcondor__atlas.pipe"


def _real_result(paths, prefix, filename, share):
    sec = section(prefix, f"file://{REAL}/{filename}", share)
    return pipes.load_pipes([sec], paths, update=True, now=NOW)


def test_atlas_pipe_gives_three_machinetypes(paths, make_config):
    result = _real_result(paths, "atlas", "projectvacuum-vmcondor__atlas.pipe", 30.0)
    assert result.warnings == () and result.errors == ()
    cfg = make_config(f"""
        [settings]
        vac_space = vac01.example.com
        [vacuum_pipe atlas]
        vacuum_pipe_url = {ATLAS}
        target_share = 30
        """, pipe_values=result.values)
    mts = cfg.machinetypes
    assert sorted(mts) == ["atlas-vm-mcore", "atlas-vm-mcore-sl6", "atlas-vm-score"]
    assert mts["atlas-vm-mcore-sl6"].target_share == 30.0
    assert mts["atlas-vm-mcore"].target_share == 0.0 and mts["atlas-vm-score"].target_share == 0.0
    sl6 = mts["atlas-vm-mcore-sl6"]
    assert sl6.user_data_proxy is True
    assert (sl6.min_processors, sl6.max_processors) == (8, 8)
    assert (mts["atlas-vm-score"].min_processors, mts["atlas-vm-score"].max_processors) == (1, 1)
    assert sl6.heartbeat_file == "heartbeat" and sl6.heartbeat_seconds == 600
    assert sl6.accounting_fqan == sl6.machinegroup == "/atlas/Role=NULL/Capability=NULL"
    assert sl6.root_image == "https://repo.gridpp.ac.uk/vacproject/atlas/cernvm3.iso"
    assert sl6.pipe == "atlas"
    assert sl6.machinetype_path == os.path.join(paths.state_dir, "machinetypes", "atlas")
    assert sl6.origins["backoff_seconds"] == f"{ATLAS} (pipe atlas)"


def test_iris_pipe(paths, make_config):
    result = _real_result(paths, "iris", "projectvacuum-vmcondor__iris-vmcondor.pipe", 1.0)
    cfg = make_config("""
        [settings]
        vac_space = vac01.example.com
        [vacuum_pipe iris]
        vacuum_pipe_url = https://x/iris.pipe
        target_share = 1
        """, pipe_values=result.values)
    mt = cfg.machinetypes["iris-vmcondor"]
    assert mt.target_share == 0.0 and mt.user_data_proxy is True
    assert (mt.min_wallclock_seconds, mt.max_wallclock_seconds) == (86400, 90000)
    assert result.warnings == () and result.errors == ()


def test_vmcondor_pipe_user_data_files_and_options(paths, make_config):
    result = _real_result(paths, "gridpp", "projectvacuum-vmcondor__vmcondor.pipe", 2.0)
    cfg = make_config("""
        [settings]
        vac_space = vac01.example.com
        [vacuum_pipe gridpp]
        vacuum_pipe_url = https://x/vmcondor.pipe
        target_share = 2
        """, pipe_values=result.values)
    mt = cfg.machinetypes["gridpp-prod"]
    assert mt.target_share == 2.0
    assert mt.user_data_files == {"hostcert": "hostcert.pem", "hostkey": "hostkey.pem"}
    assert mt.user_data_options["arc_queue"] == "cernvm3"
    assert mt.files_path("hostcert.pem") == os.path.join(paths.state_dir, "machinetypes",
                                                         "gridpp", "files", "hostcert.pem")
    assert result.warnings == () and result.errors == ()


def test_example_pipe(paths, make_config):
    result = _real_result(paths, "example", "vacproject-vac__example.pipe", 1.0)
    cfg = make_config("""
        [settings]
        vac_space = vac01.example.com
        [vacuum_pipe example]
        vacuum_pipe_url = https://x/example.pipe
        target_share = 1
        """, pipe_values=result.values)
    mt = cfg.machinetypes["example-prod"]
    assert (mt.target_share, mt.min_wallclock_seconds, mt.backoff_seconds) == (1.0, 9000, 600)
    assert result.warnings == () and result.errors == ()


def test_section_options_beat_document_and_local_beats_both(paths, make_config):
    result = _real_result(paths, "atlas", "projectvacuum-vmcondor__atlas.pipe", 3.0)
    cfg = make_config(f"""
        [settings]
        vac_space = vac01.example.com
        [vacuum_pipe atlas]
        vacuum_pipe_url = {ATLAS}
        target_share = 3
        backoff_seconds = 1234
        user_data_option_cvmfs_proxy = http://squid.example:3128
        [machinetype atlas-vm-score]
        target_share = 7
        backoff_seconds = 99
        user_data = local_user_data
        """, pipe_values=result.values)
    sl6, score = cfg.machinetypes["atlas-vm-mcore-sl6"], cfg.machinetypes["atlas-vm-score"]
    assert sl6.backoff_seconds == 1234                   # [vacuum_pipe] beats the document
    assert sl6.user_data_options["cvmfs_proxy"] == "http://squid.example:3128"
    assert sl6.fizzle_seconds == 600                     # document value otherwise
    assert score.backoff_seconds == 99                   # local beats both
    assert score.target_share == 7.0
    assert score.user_data == "local_user_data"
    assert score.root_image == "https://repo.gridpp.ac.uk/vacproject/atlas/cernvm3.iso"


def _conf(tmp_path, paths, body):
    path = tmp_path / "vac.conf"
    path.write_text(textwrap.dedent(body).replace(
        "[settings]", f"[settings]\nstate_dir = {paths.state_dir}", 1))
    return [str(path)]


def test_load_config_all_real_pipes(tmp_path, paths, host):
    files = _conf(tmp_path, paths, f"""
        [settings]
        vac_space = vac01.example.com
        [vacuum_pipe atlas]
        vacuum_pipe_url = {ATLAS}
        target_share = 10
        [vacuum_pipe iris]
        vacuum_pipe_url = file://{REAL}/projectvacuum-vmcondor__iris-vmcondor.pipe
        [vacuum_pipe gridpp]
        vacuum_pipe_url = file://{REAL}/projectvacuum-vmcondor__vmcondor.pipe
        target_share = 1
        [vacuum_pipe example]
        vacuum_pipe_url = file://{REAL}/vacproject-vac__example.pipe
        target_share = 1
        [machinetype local]
        target_share = 1
        root_image = local.iso
        """)
    cfg, result = assemble.load_config_with_pipes(files, host, update=True, now=NOW)
    assert sorted(cfg.machinetypes) == ["atlas-vm-mcore", "atlas-vm-mcore-sl6", "atlas-vm-score",
                                        "example-prod", "gridpp-prod", "iris-vmcondor", "local"]
    assert cfg.machinetypes["atlas-vm-mcore-sl6"].target_share == 10.0
    assert result.errors == () and result.warnings == ()
    # the responder and CLI: cache only, same answer
    cfg2 = assemble.load_config(files, host, update=False, now=NOW + 10 ** 6,
                                fetcher=FakeFetcher())
    assert cfg2.machinetypes == cfg.machinetypes


def test_load_config_pipe_errors_in_warnings(tmp_path, paths, host):
    files = _conf(tmp_path, paths, f"""
        [settings]
        vac_space = vac01.example.com
        [vacuum_pipe p]
        vacuum_pipe_url = {URL}
        """)
    fetcher = FakeFetcher({URL: FetchError(URL, "HTTP status 404", 404)})
    cfg = assemble.load_config(files, host, update=True, now=NOW, fetcher=fetcher)
    assert cfg.machinetypes == {}
    assert [w for w in cfg.warnings if w.startswith(f"{URL} (pipe p): cannot update: ")]
    cfg, result = assemble.load_config_with_pipes(files, host, update=True, now=NOW,
                                                  fetcher=fetcher)
    assert len(result.errors) == 1
    assert result.errors[0] in cfg.warnings


def test_load_config_bad_suffix_is_not_a_config_error(tmp_path, paths, host):
    files = _conf(tmp_path, paths, f"""
        [settings]
        vac_space = vac01.example.com
        [vacuum_pipe p]
        vacuum_pipe_url = {URL}
        """)
    bad = doc({"suffix": "Bad_Name"}, {"suffix": "good", "user_data_option_X": "1"})
    cfg, result = assemble.load_config_with_pipes(files, host, update=True, now=NOW,
                                    fetcher=FakeFetcher({URL: encode(bad)}))
    assert list(cfg.machinetypes) == ["p-good"]
    assert len(result.warnings) == 2 and all(w in cfg.warnings for w in result.warnings)


def test_load_config_drops_pipe_machinetype_that_config_rejects(tmp_path, paths, host):
    files = _conf(tmp_path, paths, f"""
        [settings]
        vac_space = vac01.example.com
        [vacuum_pipe p]
        vacuum_pipe_url = {URL}
        """)
    bad = doc({"suffix": "inverted", "min_processors": 8, "max_processors": 2},
              {"suffix": "sing", "machine_model": "singularity"},      # no singularity_user
              {"suffix": "fine", "target_share": 1})
    cfg, result = assemble.load_config_with_pipes(files, host, update=True, now=NOW,
                                    fetcher=FakeFetcher({URL: encode(bad)}))
    assert list(cfg.machinetypes) == ["p-fine"]
    assert len(result.errors) == 2
    assert all(e.startswith(f"{URL} (pipe p): machinetype p-") for e in result.errors)
    assert "max_processors" in " ".join(result.errors)
    assert set(result.values) == {"p-fine"}


def test_load_config_local_error_still_raises(tmp_path, paths, host):
    files = _conf(tmp_path, paths, f"""
        [settings]
        vac_space = vac01.example.com
        [vacuum_pipe p]
        vacuum_pipe_url = {URL}
        [machinetype broken]
        machine_model = no-such-model
        """)
    with pytest.raises(ConfigError) as e:
        assemble.load_config(files, host, update=True, now=NOW,
                             fetcher=FakeFetcher({URL: encode(GOOD)}))
    assert "no-such-model" in str(e.value)


def test_load_config_without_pipes_never_fetches(tmp_path, paths, host):
    files = _conf(tmp_path, paths, """
        [settings]
        vac_space = vac01.example.com
        [machinetype a]
        root_image = a.iso
        """)
    fetcher = FakeFetcher()
    cfg, result = assemble.load_config_with_pipes(files, host, update=True, now=NOW,
                                                  fetcher=fetcher)
    assert list(cfg.machinetypes) == ["a"] and fetcher.calls == [] and result.values == {}


# ---- vac config check and the pipes --------------------------------------------------------

CHECK_CONF = """
[settings]
vac_space = s.example.com
factory_name = f.example.com
state_dir = {state}
host_processors = 2

[vacuum_pipe p]
vacuum_pipe_url = file://{pipe}
target_share = 1
machine_model = docker
root_image = docker://x

[vacuum_pipe gone]
vacuum_pipe_url = file://{missing}
target_share = 1
"""


def test_config_check_names_pipes_not_fetched_and_fetch_fetches_whatever_the_age(
        tmp_path, capsys):
    from vac import cli

    pipe, state = tmp_path / "p.pipe", tmp_path / "state"
    pipe.write_text(json.dumps(GOOD))
    conf = tmp_path / "vac.conf"
    conf.write_text(CHECK_CONF.format(state=state, pipe=pipe, missing=tmp_path / "no.pipe"))
    argv = ["--config", str(conf), "config", "check"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"file://{pipe} (pipe p): not fetched yet" in out and "(pipe gone): not fetched" in out
    assert cli.main(argv + ["--fetch"]) == 0
    out, err = capsys.readouterr()
    assert "fetching 2 pipes" in err and "[machinetype p-a]" in out
    assert "(pipe gone): cannot update: " in out and "(pipe p): not fetched" not in out
    pipe.write_text(json.dumps(NEWER))          # the cached copy is fresh for an hour
    assert cli.main(argv + ["--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["machinetypes"]["p-a"]["backoff_seconds"]["value"] == 111
    assert len(shown["pipes_not_fetched"]) == 1 and "(pipe gone)" in shown["pipes_not_fetched"][0]
    assert cli.main(argv + ["--fetch", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["machinetypes"]["p-a"]["backoff_seconds"]["value"] == 222
