# SPDX-License-Identifier: BSD-2-Clause
"""Hostile VM guests: what a VM can send back, through metadata PUTs and through
serial-console lines `VAC-JOBOUTPUT <name> <base64>`, against what may already lie in its
joboutputs/ (symlinks to /etc/shadow, relative or to a directory, FIFOs, directories and deep
trees under the target name, huge and sparse files, many files). Nothing is read or written
outside the machine directory, nothing blocks, memory stays bounded, every machine ends with
a coded shutdown_message and the factory keeps cycling.

The console path is the libvirt backend's own (LibvirtBackend.console_joboutputs and
read_console_tail, which its collect() and destroy() call), run inside a real factory cycle on
the fake backend; the PUT path is the real metadata service on 127.0.0.1.
"""
from __future__ import annotations

import base64
import hashlib
import os
import resource
import socket
import time
import unicodedata

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from metadatamachines import FACTORY, make_machine

from vac import cli
from vac.backends.fake import FakeBackend
from vac.backends.libvirt import metadata
from vac.backends.libvirt.backend import CONSOLE_LOG, LibvirtBackend, read_console_tail
from vac.machine import joboutputs as jo
from vac.machine import outcome
from vac.machine.directory import MachineDir

SLOTS = ["f1-00.example.com", "f1-01.example.com", "f1-02.example.com"]
B64 = base64.b64encode


def line(name: str, body: bytes) -> str:
    return f"VAC-JOBOUTPUT {name} {B64(body).decode()}"


def _digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _tree(top: str) -> dict:
    """Every path under top (not following symlinks) with its kind, size and mtime."""
    found = {}
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            st_ = os.lstat(os.path.join(base, name))
            found[os.path.join(base, name)] = (st_.st_mode, st_.st_size, st_.st_mtime_ns)
    return found


@pytest.fixture
def outside(tmp_path):
    """Files outside the machine directory that a hostile guest aims at."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "shadow").write_text("root:$6$secret:19000:0:99999:7:::\n")
    (d / "dir").mkdir()
    (d / "dir" / "keep").write_text("keep\n")
    return d


# The console framing -------------------------------------------------------------------------

HOSTILE_LINES = [
    line("../shutdown_message", b"200 x"), line("..", b"200 x"), line(".", b"200 x"),
    line("%2e%2e", b"200 x"), line("a/b", b"200 x"), line("/etc/shadow", b"200 x"),
    line("a" * 129, b"200 x"), line(".hidden", b"200 x"), line("a..b", b"200 x"),
    line("\ufffd\ufffd", b"200 x"), line("na\x00me", b"200 x"), line("a\\b", b"200 x"),
    "VAC-JOBOUTPUT  shutdown_message " + B64(b"200 x").decode(),       # two spaces
    "VAC-JOBOUTPUT\tshutdown_message " + B64(b"200 x").decode(),
    "VAC-JOBOUTPUT shutdown_message " + B64(b"200 x").decode() + " extra",
    "VAC-JOBOUTPUT shutdown_message aGk",                               # bad padding
    "VAC-JOBOUTPUT shutdown_message aG=k",
    "VAC-JOBOUTPUT shutdown_message \u0430Gk=",                         # Cyrillic a
    "VAC-JOBOUTPUT shutdown_message " + "A" * ((jo.MAX_FILE_BYTES + 2) // 3 * 4 + 4),
]


@pytest.mark.parametrize("hostile", HOSTILE_LINES)
def test_each_hostile_console_line_is_rejected(hostile):
    found, rejected = jo.parse_console(["boot noise", hostile, "more noise\r"])
    assert found == {}
    assert len(rejected) == (0 if hostile.startswith("VAC-JOBOUTPUT\t") else 1)  # not framed


def test_console_names_beyond_the_file_bound_are_rejected_and_bodies_are_bounded():
    lines = [line(f"f{i}", b"x" * 10) for i in range(jo.MAX_FILES + 36)]
    lines.append(line("big", b"y" * (jo.MAX_FILE_BYTES + 1)))
    found, rejected = jo.parse_console(lines)
    assert len(found) == jo.MAX_FILES and len(rejected) == 37
    assert "big" not in found


@settings(max_examples=300, deadline=None, database=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate, Phase.shrink],
          suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.one_of(
    st.text(max_size=40).map(lambda t: "VAC-JOBOUTPUT " + t),
    st.tuples(st.text(max_size=12), st.binary(max_size=40)).map(lambda t: line(*t)),
    st.text(max_size=40)), max_size=20))
def test_parsed_console_joboutputs_are_always_safe_names_and_bounded(lines):
    found, rejected = jo.parse_console(lines, max_bytes=30, max_files=5)
    assert len(found) <= 5
    for name, body in found.items():
        assert jo.valid_name(name) and "/" not in name and len(body) <= 30


def test_a_huge_sparse_console_log_is_read_only_at_its_tail(tmp_path):
    path = str(tmp_path / CONSOLE_LOG)
    tail = line("shutdown_message", b"200 Success\n")
    with open(path, "wb") as f:
        f.truncate(4 * 1024 ** 3)                   # 4 GB of NUL bytes, sparse
        f.seek(0, os.SEEK_END)
        f.write(("\n" + tail + "\n").encode())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    lines = read_console_tail(path)
    assert time.monotonic() - started < 5
    assert sum(len(x) for x in lines) <= 8 * 1024 * 1024
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200 * 1024
    assert jo.parse_console(lines)[0] == {"shutdown_message": b"200 Success\n"}


def test_the_console_tail_is_read_across_virtlogd_rollovers(tmp_path):
    """virtlogd rolled console.log over (at 2 MB) into .0 and .1, cutting a line in two."""
    path = str(tmp_path / CONSOLE_LOG)
    message = line("shutdown_message", b"200 Success\n")
    with open(path + ".1", "w") as f:
        f.write("old boot noise\n" + line("early", b"1") + "\n")
    with open(path + ".0", "w") as f:
        f.write("noise\n" + message[:20])
    with open(path, "w") as f:
        f.write(message[20:] + "\n" + line("late", b"2") + "\n")
    found, _ = jo.parse_console(read_console_tail(path))
    assert found == {"early": b"1", "shutdown_message": b"200 Success\n", "late": b"2"}
    limited = read_console_tail(path, limit=len(message) + 30)      # the bound still holds
    assert sum(len(x) + 1 for x in limited) <= len(message) + 30
    assert jo.parse_console(limited)[0] == {"shutdown_message": b"200 Success\n", "late": b"2"}


@pytest.mark.parametrize("kind", ["fifo", "directory", "absent"])
def test_a_console_log_that_is_no_regular_file_gives_nothing_and_never_blocks(tmp_path, kind):
    path = tmp_path / CONSOLE_LOG
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    started = time.monotonic()
    assert read_console_tail(str(path)) == []
    assert time.monotonic() - started < 2


def test_a_console_log_symlink_is_not_followed(tmp_path, outside):
    path = tmp_path / CONSOLE_LOG
    (outside / "shadow").write_text(line("stolen", b"root:secret") + "\n")
    path.symlink_to(outside / "shadow")
    assert read_console_tail(str(path)) == []


# Console lines against what is already in joboutputs ------------------------------------------

def _plant_symlink_shadow(d, outside):
    os.symlink("/etc/shadow", d.file("joboutputs/shutdown_message"))


def _plant_symlink_outside(d, outside):
    os.symlink(str(outside / "shadow"), d.file("joboutputs/shutdown_message"))


def _plant_symlink_relative(d, outside):
    os.symlink("../user_data", d.file("joboutputs/shutdown_message"))


def _plant_symlink_dir(d, outside):
    os.symlink(str(outside / "dir"), d.file("joboutputs/shutdown_message"))


def _plant_fifo(d, outside):
    os.mkfifo(d.file("joboutputs/shutdown_message"))


def _plant_directory(d, outside):
    os.mkdir(d.file("joboutputs/shutdown_message"))


def _plant_deep_tree(d, outside):
    path = d.file("joboutputs/shutdown_message")
    os.mkdir(path)
    fd = os.open(path, os.O_RDONLY)
    for _ in range(300):                 # a tree deeper than any path Vac could name
        os.mkdir("d" * 200, dir_fd=fd)
        new = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = new
    os.close(fd)


PLANTS = {"symlink to /etc/shadow": (_plant_symlink_shadow, "symlink"),
          "symlink outside": (_plant_symlink_outside, "symlink"),
          "relative symlink": (_plant_symlink_relative, "symlink"),
          "symlink to a directory": (_plant_symlink_dir, "symlink"),
          "FIFO": (_plant_fifo, "FIFO"),
          "directory": (_plant_directory, "directory"),
          "deep tree": (_plant_deep_tree, "directory")}


@pytest.fixture
def machine(paths):
    d = make_machine(paths, 3, "11111111-2222-4333-8444-555555555503")
    d.write("user_data", "#!/bin/sh\nsecret user_data\n")
    return d


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_console_joboutputs_never_write_through_what_is_planted(machine, outside, plant):
    PLANTS[plant][0](machine, outside)
    with open(machine.file(CONSOLE_LOG), "w") as f:
        f.write(line("shutdown_message", b"200 Success\n") + "\n"
                + line("heartbeat", b"1\n") + "\n")
    before, shadow = _tree(str(outside)), _digest("/etc/shadow")
    user_data = machine.read("user_data")
    started = time.monotonic()
    stored = LibvirtBackend.console_joboutputs(machine)
    assert time.monotonic() - started < 5                  # nothing opened the FIFO
    assert stored == ["heartbeat"]
    assert _tree(str(outside)) == before and _digest("/etc/shadow") == shadow
    assert machine.read("user_data") == user_data
    assert os.path.lexists(machine.file("joboutputs/shutdown_message"))


def test_console_joboutputs_into_a_symlinked_joboutputs_are_refused(machine, outside):
    os.rename(machine.file("joboutputs"), machine.file("joboutputs.real"))
    os.symlink(str(outside / "dir"), machine.file("joboutputs"))
    with open(machine.file(CONSOLE_LOG), "w") as f:
        f.write(line("shutdown_message", b"200 Success\n") + "\n")
    before = _tree(str(outside))
    assert LibvirtBackend.console_joboutputs(machine) == []
    assert _tree(str(outside)) == before


def test_console_joboutputs_are_read_from_a_bounded_tail(machine):
    """40 files of 1 MB (56 MB of console): only the lines whole in the last 8 MB count."""
    with open(machine.file(CONSOLE_LOG), "w") as f:
        for i in range(40):
            f.write(line(f"part{i}", os.urandom(jo.MAX_FILE_BYTES)) + "\n")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stored = LibvirtBackend.console_joboutputs(machine)
    assert stored == [f"part{i}" for i in range(35, 40)]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200 * 1024
    assert [n for n in os.listdir(machine.file("joboutputs")) if n.startswith(".tmp-")] == []


def test_console_joboutputs_are_bounded_in_count(machine):
    with open(machine.file(CONSOLE_LOG), "w") as f:
        f.write("".join(line(f"f{i}", b"x") + "\n" for i in range(jo.MAX_FILES * 3)))
    assert len(LibvirtBackend.console_joboutputs(machine)) == jo.MAX_FILES
    assert len(os.listdir(machine.file("joboutputs"))) == jo.MAX_FILES


# Metadata PUTs against what is already in joboutputs ------------------------------------------

@pytest.fixture
def put(paths, machine):
    service = metadata.MetadataService(paths, FACTORY,
                                       client_address=lambda peer: "169.254.169.3")
    server = metadata.serve(service, "127.0.0.1", 0)
    port = server.server_address[1]

    def send(name, body: bytes, length=None, wait=10.0) -> int:
        head = (f"PUT /joboutputs/{name} HTTP/1.1\r\n"
                f"Content-Length: {len(body) if length is None else length}\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
            try:
                s.sendall(head.encode("utf-8", errors="surrogateescape") + body)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass            # refused before the body was read: the reply is waiting
            reply = s.recv(4096)
        return int(reply.split(b" ")[1])

    yield send
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("plant", sorted(p for p in PLANTS if PLANTS[p][1] != "directory"))
def test_a_put_replaces_a_planted_link_or_fifo_and_writes_nothing_through_it(
        put, machine, outside, plant):
    PLANTS[plant][0](machine, outside)
    before, shadow = _tree(str(outside)), _digest("/etc/shadow")
    user_data = machine.read("user_data")
    started = time.monotonic()
    assert put("shutdown_message", b"300 Nothing to do\n") == 201
    assert time.monotonic() - started < 5
    assert _tree(str(outside)) == before and _digest("/etc/shadow") == shadow
    assert machine.read("user_data") == user_data
    assert machine.shutdown_message == "300 Nothing to do"
    assert not os.path.islink(machine.file("joboutputs/shutdown_message"))


@pytest.mark.parametrize("plant", ["directory", "deep tree"])
def test_a_put_onto_a_planted_directory_is_refused_and_leaves_no_litter(put, machine, outside,
                                                                         plant):
    PLANTS[plant][0](machine, outside)
    assert put("shutdown_message", b"300 Nothing to do\n") == 403
    assert os.path.isdir(machine.file("joboutputs/shutdown_message"))
    assert [n for n in os.listdir(machine.file("joboutputs")) if n.startswith(".tmp-")] == []


@pytest.mark.parametrize("name", ["..", "%2e%2e", "..%2fuser_data", "a/../../user_data",
                                  "x" * 129, ".hidden", "\udcff", "na%00me", "a\\b"])
def test_traversal_deep_and_non_utf8_put_names_are_refused(put, machine, name):
    before = _tree(machine.path)
    assert put(name, b"200 x\n") == 403
    assert _tree(machine.path) == before


def test_huge_puts_are_refused_unread_and_many_files_are_bounded(put, machine):
    assert put("big", b"x" * 100, length=10 ** 12) == 413
    assert put("big", b"x" * (jo.MAX_FILE_BYTES + 1)) == 413
    for i in range(jo.MAX_FILES):
        assert put(f"f{i}", b"x") == 201
    assert put("one-too-many", b"x") == 403
    assert put("f0", b"replaced") == 201                   # replacing adds nothing
    names = os.listdir(machine.file("joboutputs"))
    assert len(names) == jo.MAX_FILES and "one-too-many" not in names


def test_a_planted_sparse_file_is_counted_not_read(put, machine):
    with open(machine.file("joboutputs/sparse"), "wb") as f:
        f.truncate(2 * 1024 ** 3)
    started = time.monotonic()
    assert put("other", b"x\n") == 403                    # the total bound counts it
    assert put("shutdown_message", b"300 x\n") == 201     # a short message is still kept
    assert time.monotonic() - started < 5


# In a factory cycle: every machine ends with a coded message, the factory keeps going ---------

class ConsoleBackend(FakeBackend):
    """The fake backend with the libvirt backend's console path in collect() and destroy()."""

    def collect(self, name, directory):
        LibvirtBackend.console_joboutputs(directory)
        return super().collect(name, directory)

    def destroy(self, name, directory):
        if directory is not None:
            LibvirtBackend.console_joboutputs(directory)
        super().destroy(name, directory)


def _console(d, *lines):
    with open(d.file(CONSOLE_LOG), "w") as f:
        f.write("".join(x + "\r\n" for x in lines))


SCENARIOS = {
    # name: (planted object, console lines, what the final message must say)
    "hostile names only": (None, [line("../../x", b"200 x"), line("a/b", b"200"),
                                  line("%2e%2e", b"200")], "300 Vac detects fizzle"),
    "symlink to /etc/shadow": (_plant_symlink_shadow, [line("shutdown_message", b"200 ok")],
                               "700 Vac: machine's shutdown_message refused: is a symlink"),
    "FIFO": (_plant_fifo, [line("shutdown_message", b"200 ok")],
             "700 Vac: machine's shutdown_message refused: is a FIFO"),
    "deep tree": (_plant_deep_tree, [line("shutdown_message", b"200 ok")],
                  "700 Vac: machine's shutdown_message refused: is a directory"),
    "oversized message": (None, [line("shutdown_message", b"200 Success\n" + b"x" * 5000)],
                          "700 Vac: machine's shutdown_message refused: is larger than 4096"),
    "oversized base64": (None, ["VAC-JOBOUTPUT shutdown_message " + "QUFB" * 350000],
                         "300 Vac detects fizzle"),
    "non-UTF-8 and NUL": (None, [line("shutdown_message", b"\xff\xfe\x00\x00 garbage")],
                          "300 Vac detects fizzle"),
    "many files": (None, [line("shutdown_message", b"300 No work\n")]
                   + [line(f"f{i}", b"x") for i in range(200)], "300 No work"),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_hostile_guest_ends_with_a_coded_message_and_the_factory_goes_on(
        make_factory, paths, outside, scenario):
    plant, lines, expected = SCENARIOS[scenario]
    factory, backend, clock = make_factory(backend_class=ConsoleBackend)
    assert len(factory.run_cycle().created) == 3
    bad = MachineDir.for_slot(paths, SLOTS[0])
    if plant is not None:
        plant(bad, outside)
    _console(bad, "Booting...", *lines)
    _console(MachineDir.for_slot(paths, SLOTS[1]), line("shutdown_message", b"200 Success\n"))
    shadow, before = _digest("/etc/shadow"), _tree(str(outside))
    for slot in SLOTS[:2]:
        machines = backend._load()
        machines[slot]["run_seconds"] = clock.now - machines[slot]["started"] + 5
        backend._save(machines)
    clock.now += 10
    started = time.monotonic()
    report = factory.run_cycle()
    assert time.monotonic() - started < 10
    assert report.errors == [] and sorted(report.finished) == SLOTS[:2]
    assert bad.finished is not None
    message = bad.shutdown_message
    judged = outcome.outcome_message(message, bad.started, clock.now, 600)
    assert judged.startswith(expected) and outcome.message_code(judged) is not None, judged
    if scenario == "non-UTF-8 and NUL":     # readable: kept as the guest wrote it, judged a fizzle
        assert message == "\ufffd\ufffd\ufffd\ufffd garbage"     # NULs shown as U+FFFD too
    else:
        assert message.startswith(expected), message
    assert _digest("/etc/shadow") == shadow and _tree(str(outside)) == before
    # The factory keeps cycling: past alpha's backoff (1000 s, and 600 s more while the first
    # new machine is before fizzle) both slots have new machines. (Three cycles were enough
    # only while the tie of an abort and a success reported in one cycle hid the abort.)
    for _ in range(6):
        clock.now += 400
        assert factory.run_cycle().errors == []
    for slot in SLOTS:
        d = MachineDir.for_slot(paths, slot)
        assert d.finished is None and d.path != bad.path


def test_a_guest_putting_over_planted_objects_ends_with_its_message(make_factory, paths,
                                                                    outside):
    """The PUT path inside a cycle: the VM in slot 0 (169.254.169.0) PUTs hostile names and
    then its shutdown_message over a planted FIFO; the factory finishes it with that message."""
    factory, backend, clock = make_factory(backend_class=ConsoleBackend)
    factory.run_cycle()
    d = MachineDir.for_slot(paths, SLOTS[0])
    _plant_fifo(d, outside)
    service = metadata.MetadataService(paths, "f1.example.com",
                                       client_address=lambda peer: "169.254.169.0")
    server = metadata.serve(service, "127.0.0.1", 0)
    try:
        def send(path: str, body: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", server.server_address[1]),
                                          timeout=10) as s:
                s.sendall(f"PUT {path} HTTP/1.0\r\nContent-Length: {len(body)}\r\n\r\n"
                          .encode() + body)
                return s.recv(4096).split(b"\r\n")[0]

        for bad in ("/joboutputs/../user_data", "/joboutputs/%2e%2e/finished",
                    "/joboutputs/a/b", "/machinefeatures/total_cpu", "/joboutputs/.x"):
            assert b" 403 " in send(bad, b"200 pwned\n"), bad
        assert b" 201 " in send("/joboutputs/shutdown_message", b"300 Nothing to do\n")
    finally:
        server.shutdown()
        server.server_close()
    machines = backend._load()
    machines[SLOTS[0]]["run_seconds"] = clock.now - machines[SLOTS[0]]["started"] + 5
    backend._save(machines)
    clock.now += 10
    report = factory.run_cycle()
    assert report.errors == [] and report.finished == [SLOTS[0]]
    assert d.shutdown_message == "300 Nothing to do"
    assert d.read("user_data").startswith("#!/bin/sh\n# ")
    assert sorted(os.listdir(d.file("joboutputs"))) == ["shutdown_message"]


ESCAPES = "200 ok \x1b]0;owned\x07\x1b[2J\x9b31m\x00\x7f\u202egnp.exe\u200b end"


def test_control_characters_in_a_guest_message_never_reach_the_terminal(make_factory, paths,
                                                                        tmp_path, capsys):
    """A message with terminal escapes (OSC title, clear screen, C1 CSI, NUL, DEL, a
    right-to-left override) is shown by `vac slots` with each control character replaced."""
    factory, backend, clock = make_factory(backend_class=ConsoleBackend)
    factory.run_cycle()
    d = MachineDir.for_slot(paths, SLOTS[0])
    _console(d, line("shutdown_message", ESCAPES.encode() + b"\n"))
    machines = backend._load()
    machines[SLOTS[0]]["run_seconds"] = clock.now - machines[SLOTS[0]]["started"] + 5
    backend._save(machines)
    clock.now += 10
    assert factory.run_cycle().finished == [SLOTS[0]]
    assert d.shutdown_message.startswith("200 ok ")
    assert d.shutdown_message.endswith(" end")
    capsys.readouterr()
    assert cli.main(["--config", str(tmp_path / "vac.conf"), "slots"]) == 0
    out = capsys.readouterr().out
    assert "200 ok " in out
    shown = [c for c in out if c != "\n" and unicodedata.category(c) in ("Cc", "Cf")]
    assert shown == [], shown


# A payload with many output files still gets its shutdown_message back ------------------------

def test_a_shutdown_message_after_the_file_bound_on_the_console_is_kept(machine):
    """The test guest's /init sends files in name order: 70 logs, then shutdown_message."""
    with open(machine.file(CONSOLE_LOG), "w") as f:
        f.write("".join(line(f"log{i:02d}", b"x") + "\n" for i in range(70)))
        f.write(line("shutdown_message", b"200 Success\n") + "\n")
    stored = LibvirtBackend.console_joboutputs(machine)
    assert len(stored) == jo.MAX_FILES + 1 and "shutdown_message" in stored
    assert machine.shutdown_message == "200 Success"


def test_a_shutdown_message_put_after_the_file_and_size_bounds_is_kept(put, machine):
    for i in range(jo.MAX_TOTAL_BYTES // jo.MAX_FILE_BYTES):
        assert put(f"big{i}", b"x" * jo.MAX_FILE_BYTES) == 201
    assert put("one-more", b"x") == 403                     # the total is reached
    for i in range(jo.MAX_FILES):
        put(f"small{i}", b"")
    assert put("shutdown_message", b"200 Success\n") == 201
    assert machine.shutdown_message == "200 Success"
    assert put("shutdown_message", b"200 " + b"x" * 5000) == 403    # only a short one
    assert len(os.listdir(machine.file("joboutputs"))) == jo.MAX_FILES + 1
