"""The fd-holder programs against Debian's s6 2.11.3.2 (wire protocol, programs; docs/fdholderd.md).

Differential: every scenario runs with each daemon (ours, s6-fdholderd) and, where clients are
involved, each client family (ours through s6-NAME links, so that messages carry s6's names, and
Debian's), and the observable results — exit codes, stdout, stderr, wire bytes — must agree.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from s6ipc import FdHolderClient, HeldDescriptor, OperationFailed
from s6ipc.access.cdb import write_cdb
from s6ipc.base import unixmessage
from s6ipc.base.unixmessage import frame
from s6ipc.fdholder import protocol, tai
from s6ipc.fdholder.client import setdump_chunks
from s6ipc.programs.fdholder_daemon import build_chain
from tests.support.fdholder import ALL_RIGHTS, Holder, Impls, Raw, inode, links_for_everyone, make_rules
from tests.support.processes import (
    S6IPC,
    as_installed_s6,
    installed_s6,
    needs_reachable_interpreter,
    nobody_ids,
    ours,
    requires_root,
    run,
    theirs,
    traced_execs,
    wait_until,
)

IMPLS = ["ours", "s6"]
#: IMPLS for a program that runs as nobody: ours needs nobody to reach our interpreter, s6's does not
AS_NOBODY = [pytest.param("ours", marks=needs_reachable_interpreter), "s6"]


@pytest.fixture(scope="module")
def links() -> Iterator[str]:
    """s6-NAME links to our programs in a directory other users can reach (for the nobody tests)."""
    yield from links_for_everyone()


@pytest.fixture
def holders(sockdir: str) -> Iterator[Callable[..., Holder]]:
    started: List[Holder] = []

    def start(daemon: List[str], options: List[str], name: str = "h",
              env: Optional[Dict[str, str]] = None) -> Holder:
        h = Holder(daemon, os.path.join(sockdir, name), options, env=env)
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()


def all_rules(sockdir: str) -> str:
    return make_rules(sockdir, {"uid/0": ALL_RIGHTS})


def c(result: subprocess.CompletedProcess[bytes]) -> Tuple[int, bytes, bytes]:
    return result.returncode, result.stdout, result.stderr


# -- usage and start-up errors -----------------------------------------------------------------
PROGRAMS = ["fdholder-daemon", "fdholderd", "fdholder-store", "fdholder-retrieve", "fdholder-delete",
            "fdholder-list", "fdholder-getdump", "fdholder-setdump", "fdholder-transferdump"]
BAD_ARGS = [[], ["-t"], ["-t", "x"], ["--x", "a", "b"], ["-Z", "a", "b", "c"]]


@pytest.mark.parametrize("name", PROGRAMS)
def test_usage_errors_match(links: str, name: str) -> None:
    impl = Impls("ours", links)
    for args in BAD_ARGS:
        if name == "fdholderd" and not args:
            continue  # no usage error: "no access rights specified!"
        ours_ = run(impl(name) + args)
        theirs_ = run(theirs(name) + args)
        assert c(ours_) == c(theirs_), (name, args)
        assert ours_.returncode == 100


@pytest.mark.parametrize("args", [["-T", "x", "a", "b"], ["-t", "1:x", "a", "b"], ["-t", "", "a", "b"],
                                  ["-t", "x:", "a", "b"], ["-t", "1:2:3", "a", "b"]])
def test_transferdump_timeout_syntax(links: str, args: List[str]) -> None:
    impl = Impls("ours", links)
    assert c(run(impl("fdholder-transferdump") + args)) == c(run(theirs("fdholder-transferdump") + args))


def test_fdholderd_startup_errors_match(links: str, sockdir: str) -> None:
    impl = Impls("ours", links)
    rules = all_rules(sockdir)
    cases: List[Tuple[List[str], Dict[str, object]]] = [
        ([], {"stdin": subprocess.DEVNULL}),                                  # no rights: 100
        (["-i", rules], {"stdin": subprocess.DEVNULL}),                       # stdin not a socket: 100
        (["-x", os.path.join(sockdir, "nope.cdb")], {"stdin": socket.socket(socket.AF_UNIX).detach()}),
    ]
    for args, kw in cases:
        stdin = kw["stdin"]
        a = run(impl("fdholderd") + args, stdin=stdin)
        b = run(theirs("fdholderd") + args, stdin=stdin)
        assert c(a) == c(b), args
        assert a.returncode in (100, 111)
    # fd 0 closed: unable to fstat stdin
    a = run(impl("fdholderd") + ["-i", rules], stdin=None, preexec_fn=lambda: os.close(0))
    b = run(theirs("fdholderd") + ["-i", rules], stdin=None, preexec_fn=lambda: os.close(0))
    assert c(a) == c(b) and a.returncode == 111
    # -1 with fd 1 closed
    a = run(impl("fdholder-daemon") + ["-1", "-i", rules, os.path.join(sockdir, "s1")], stdout=None,
            preexec_fn=lambda: os.close(1))
    b = run(theirs("fdholder-daemon") + ["-1", "-i", rules, os.path.join(sockdir, "s2")], stdout=None,
            preexec_fn=lambda: os.close(1))
    assert c(a) == c(b) and a.returncode == 100


def test_backlog_zero_dies_at_accept(links: str, sockdir: str) -> None:
    """``-b 0`` makes a non-listening socket and fdholderd dies at its first accept."""
    impl = Impls("ours", links)
    rules = all_rules(sockdir)
    results = []
    for prefix, name in ((impl, "a"), (theirs, "b")):
        argv = prefix("fdholder-daemon") + ["-b", "0", "-i", rules, os.path.join(sockdir, name)]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = p.communicate(timeout=10)
        results.append((p.returncode, err))
    assert results[0] == results[1] == (111, b"s6-fdholderd: fatal: unable to accept: Invalid argument\n")


# -- the wrapper's chain ---------------------------------------------------------------------
WRAPPER_ARGS = [
    ["-1", "-v", "2", "-c", "5", "-n", "10", "-t", "1000", "-T", "2000", "-b", "3", "-i", "R"],
    ["-u", "1", "-g", "2", "-G", "3,4", "-D", "-x", "X"],
    ["-c", "0", "-n", "0", "-t", "0", "-T", "0", "-v", "1", "-i", "R"],
    ["-u", "1", "-U", "-g", "2", "-x", "X"],
    ["-U", "-u", "3", "-i", "R", "-x", "X"],
    ["-b", "0", "-d", "-x", "X", "-i", "R"],
    ["-v", "0", "-c", "300", "-n", "5000", "-G", "", "-i", "R"],
]


@pytest.mark.parametrize("args", WRAPPER_ARGS)
def test_wrapper_builds_s6s_chain(sockdir: str, args: List[str]) -> None:
    """The argv s6-fdholder-daemon execs (seen with strace) is ours with /usr/bin/s6-X for our X."""
    path = os.path.join(sockdir, "no", "such", "dir", "s")  # the binder fails: the chain stops there
    _, execs = traced_execs(["/usr/bin/s6-fdholder-daemon", *args, path])
    theirs_chain = execs[1]
    ours_chain = build_chain([*args, path], "s6-")
    prefix = ours("")[:-1]
    mapped = []
    i = 0
    while i < len(ours_chain):
        if ours_chain[i : i + len(prefix)] == prefix:
            mapped.append("/usr/bin/" + ours_chain[i + len(prefix)])
            i += len(prefix) + 1
        else:
            mapped.append(ours_chain[i])
            i += 1
    assert mapped == theirs_chain


# -- test idea 29: the basic life of a held descriptor, all four combinations --------------------
def transcript(client: Impls, holder: str, sockdir: str) -> List[Tuple[int, bytes, bytes]]:
    """Store / list / duplicate / retrieve / retrieve -D / delete: exit codes and output."""
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.bind(os.path.join(sockdir, "held.sock"))
    held.listen(5)
    fd = held.fileno()
    weird = b"weird\\id\x01\x7f\tx"
    steps = [
        run(client("fdholder-store") + ["-d", str(fd), holder, "unix:held"], pass_fds=[fd]),
        run(client("fdholder-store") + [holder, os.fsdecode(weird)], stdin=subprocess.DEVNULL),
        run(client("fdholder-list") + [holder]),
        run(client("fdholder-store") + ["-d", str(fd), holder, "unix:held"], pass_fds=[fd]),
        run(client("fdholder-store") + [holder, ""], stdin=subprocess.DEVNULL),
        run(client("fdholder-store") + [holder, "x" * 256], stdin=subprocess.DEVNULL),
        run(client("fdholder-store") + ["-d", "99", holder, "closedfd"]),
        run(client("fdholder-retrieve") + [holder, "unix:held", "readlink", "/proc/self/fd/0"]),
        run(client("fdholder-retrieve") + [holder, "nope", "true"]),
        run(client("fdholder-retrieve") + ["-D", holder, "unix:held", "true"]),
        run(client("fdholder-list") + [holder]),
        run(client("fdholder-delete") + [holder, "nope"]),
        run(client("fdholder-delete") + [holder, os.fsdecode(weird)]),
        run(client("fdholder-list") + [holder]),
        run(client("fdholder-list") + [os.path.join(sockdir, "absent")]),
    ]
    out = [c(s) for s in steps]
    ino = inode(fd)
    held.close()
    assert out[7] == (0, b"socket:[%d]\n" % ino, b"")
    return [(code, o.replace(b"%d" % ino, b"INODE"), e.replace(os.fsencode(sockdir), b"DIR"))
            for code, o, e in out]


EXPECTED_29 = [
    (0, b"", b""),
    (0, b"", b""),
    (0, b"unix:held\nweird\\\\id\\0x01\\0x7f\\tx\n", b""),
    (1, b"", b"s6-fdholder-store: fatal: unable to store fd: Device or resource busy\n"),
    (1, b"", b"s6-fdholder-store: fatal: unable to store fd: Broken pipe\n"),
    (1, b"", b"s6-fdholder-store: fatal: unable to store fd: File name too long\n"),
    (1, b"", b"s6-fdholder-store: fatal: unable to store fd: Bad file descriptor\n"),
    (0, b"socket:[INODE]\n", b""),
    (1, b"", b"s6-fdholder-retrieve: fatal: unable to retrieve fd for id nope: No such file or directory\n"),
    (0, b"", b""),
    (0, b"weird\\\\id\\0x01\\0x7f\\tx\n", b""),
    (1, b"", b"s6-fdholder-delete: fatal: unable to delete fd for id DIR/h: No such file or directory\n"),
    (0, b"", b""),
    (0, b"", b""),
    (111, b"", b"s6-fdholder-list: fatal: unable to connect to a fd-holder daemon at DIR/absent: "
               b"No such file or directory\n"),
]


@pytest.mark.parametrize("daemon", IMPLS)
@pytest.mark.parametrize("client", IMPLS)
def test_life_of_a_held_descriptor(links: str, sockdir: str, holders: Callable[..., Holder],
                                   daemon: str, client: str) -> None:
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", all_rules(sockdir)])
    assert transcript(Impls(client, links), h.path, sockdir) == EXPECTED_29
    assert h.alive()


# -- test idea 30: raw wire bytes --------------------------------------------------------------
@pytest.mark.parametrize("daemon", IMPLS)
def test_list_reply_bytes_and_rights(links: str, sockdir: str, holders: Callable[..., Holder],
                                     daemon: str) -> None:
    rights = dict(ALL_RIGHTS)
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", all_rules(sockdir)])
    raw = Raw(h.path)
    raw.send_raw(frame(b"L") * 2 + frame(b"?"))
    assert raw.reply() == (bytes.fromhex("0000000000"), [])
    assert raw.reply() == (bytes.fromhex("0000000000"), [])
    assert raw.reply() == (bytes.fromhex("000000000000000000"), [])
    raw.close()
    del rights["S6_FDHOLDER_LIST"]
    h2 = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", make_rules(os.path.join(sockdir, "b"),
                                                                           {"uid/0": rights})], "h2")
    raw = Raw(h2.path)
    raw.send(b"L")
    assert raw.reply() == (b"\x01", [])
    raw.close()


@pytest.mark.parametrize("daemon", IMPLS)
@pytest.mark.parametrize("data", [frame(b"X"), frame(b"Lx"), frame(b""),
                                  frame(b"D\x05ab\0"), frame(b"!\0\0")])
def test_malformed_requests_close_the_connection(links: str, sockdir: str, holders: Callable[..., Holder],
                                                 daemon: str, data: bytes) -> None:
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", all_rules(sockdir)])
    raw = Raw(h.path)
    raw.send_raw(data)
    assert raw.closed()
    raw.close()
    raw = Raw(h.path)
    raw.send(b"L")
    assert raw.reply() == (bytes.fromhex("0000000000"), [])
    raw.close()


# -- test idea 31: setdump on the wire -----------------------------------------------------------
@pytest.mark.parametrize("daemon", IMPLS)
def test_setdump_protocol(links: str, sockdir: str, holders: Callable[..., Holder], daemon: str) -> None:
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-n", "3", "-i", all_rules(sockdir)])
    limit = tai.now().add_ms(60_000)
    r, w = os.pipe()
    try:
        raw = Raw(h.path)
        raw.send(protocol.encode_setdump(2))
        assert raw.reply() == (bytes.fromhex("0000000001"), [])
        for ident, code in ((b"one", b"\x0b"), (b"two", b"\x00")):
            raw.send(b"." + protocol.encode_entries([protocol.DumpEntry(limit, ident)]), [r])
            assert raw.reply() == (code, [])
        raw.send(protocol.encode_setdump(2))
        assert raw.reply() == (b"\x17", [])
        raw.send(protocol.encode_setdump(0))
        assert raw.reply() == (bytes.fromhex("0000000000"), [])
        # getdump gives them back, limits unchanged
        raw.send(b"?")
        header = raw.reply()
        assert header == (bytes.fromhex("00" "00000001" "00000002"), [])
        chunk = raw.reply()
        assert chunk is not None
        assert protocol.parse_entries(chunk[0], 2) == (protocol.DumpEntry(limit, b"one"),
                                                       protocol.DumpEntry(limit, b"two"))
        assert [inode(fd) for fd in chunk[1]] == [inode(r)] * 2
        unixmessage.close_fds(chunk[1])
        # a '.' outside a setdump: dropped
        raw.send(b"." + protocol.encode_entries([protocol.DumpEntry(limit, b"x")]), [r])
        assert raw.closed()
        raw.close()
    finally:
        os.close(r)
        os.close(w)


# -- test idea 32: expiry and getdump's environment -------------------------------------------------
@pytest.mark.parametrize("daemon", IMPLS)
@pytest.mark.parametrize("client", IMPLS)
def test_expiry_and_getdump_env(links: str, sockdir: str, holders: Callable[..., Holder],
                                daemon: str, client: str) -> None:
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", all_rules(sockdir)])
    cl = Impls(client, links)
    # "timed" has a limit but must still be held at the getdump below, three client runs later: on a
    # loaded machine (Python 3.9 and 3.13 beside a second suite) that took over 4 s. Expiry itself
    # is checked on "brief", stored after the getdump, waited for without a deadline to meet (the
    # clock-driven test in tests/unit/fdholder/test_server.py pins it to the millisecond).
    for args in (["-T", "600000", h.path, "timed"], ["-T", "100000", h.path, "long"], [h.path, "forever"]):
        assert run(cl("fdholder-store") + args, stdin=subprocess.DEVNULL).returncode == 0
    before = time.time()
    env_out = run(cl("fdholder-getdump") + [h.path, "env"], env={"S6_FDLIMIT_2": "inherited"}).stdout
    lines = [line for line in env_out.decode().splitlines() if line.startswith("S6_")]
    env = dict(line.split("=", 1) for line in lines)
    assert env["S6_FD#"] == "3" and [env[f"S6_FDID_{i}"] for i in range(3)] == ["timed", "long", "forever"]
    assert "S6_FDLIMIT_2" not in env  # unset, even though inherited
    assert re.fullmatch(r"@[0-9a-f]{24}", env["S6_FDLIMIT_1"])
    label = int(env["S6_FDLIMIT_1"][1:17], 16)
    assert abs(label - (0x4000000000000000 + 37 + 100 + int(before))) <= 2
    assert sorted(int(env[f"S6_FD_{i}"]) for i in range(3)) == [4, 5, 6]
    brief = run(cl("fdholder-store") + ["-T", "300", h.path, "brief"], stdin=subprocess.DEVNULL)
    assert brief.returncode == 0
    wait_until(lambda: run(cl("fdholder-list") + [h.path]).stdout == b"timed\nlong\nforever\n",
               timeout=10, interval=0.2)


# -- test idea 33: permissions ---------------------------------------------------------------------
@requires_root
@pytest.mark.parametrize("daemon", IMPLS)
@pytest.mark.parametrize("client", AS_NOBODY)
def test_permissions(links: str, sockdir: str, holders: Callable[..., Holder], daemon: str,
                     client: str) -> None:
    uid, gid = nobody_ids()
    rules = make_rules(sockdir, {
        "uid/0": ALL_RIGHTS,
        f"uid/{uid}": {"S6_FDHOLDER_RETRIEVE_REGEX": "^pub", "S6_FDHOLDER_STORE_REGEX": "^pub[[:digit:]]"},
    })
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", rules])
    os.chmod(sockdir, 0o755)
    cl = Impls(client, links)
    for ident in ("pubthing", "pub1", "private"):
        assert run(cl("fdholder-store") + [h.path, ident], stdin=subprocess.DEVNULL).returncode == 0
    as_nobody = ["/usr/bin/s6-applyuidgid", "-u", str(uid), "-g", str(gid), "-G", ""]
    results = [c(run(as_nobody + cl(name) + args, stdin=subprocess.DEVNULL)) for name, args in (
        ("fdholder-retrieve", [h.path, "pubthing", "true"]),
        ("fdholder-retrieve", ["-D", h.path, "pubthing", "true"]),
        ("fdholder-retrieve", [h.path, "private", "true"]),
        ("fdholder-retrieve", ["-D", h.path, "pub1", "true"]),
        ("fdholder-store", [h.path, "pub2"]),
        ("fdholder-store", [h.path, "pubx"]),
        ("fdholder-delete", [h.path, "pub2"]),
        ("fdholder-list", [h.path]),
        ("fdholder-getdump", [h.path, "true"]),
    )]
    eperm = b"Operation not permitted\n"
    assert results[0] == (0, b"", b"")
    assert results[1][0] == 1 and results[1][2].endswith(eperm)   # -D needs the store regex too
    assert results[2][0] == 1 and results[2][2].endswith(eperm)
    assert results[3] == (0, b"", b"")                               # both regexes match pub1
    assert results[4] == (0, b"", b"")
    assert results[5][0] == 1 and results[5][2].endswith(eperm)
    assert results[6] == (0, b"", b"")
    assert results[7] == (1, b"", b"s6-fdholder-list: fatal: unable to get fd list: " + eperm)
    assert results[8] == (1, b"", b"s6-fdholder-getdump: fatal: unable to get dump: " + eperm)
    # a uid with no rule at all is hung up on
    deny = make_rules(os.path.join(sockdir, "d"), {"uid/0": ALL_RIGHTS})
    h2 = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", deny], "h2")
    p = run(as_nobody + cl("fdholder-list") + [h2.path])
    assert p.returncode == 1
    assert p.stderr in (b"s6-fdholder-list: fatal: unable to get fd list: Connection reset by peer\n",
                        b"s6-fdholder-list: fatal: unable to get fd list: Broken pipe\n")


# -- test idea 34: exit status and client timeout ------------------------------------------------
@pytest.mark.parametrize("daemon", IMPLS)
def test_exit_status_is_a_bit_mask(links: str, sockdir: str, holders: Callable[..., Holder],
                                   daemon: str) -> None:
    rules = all_rules(sockdir)
    d = Impls(daemon, links)
    h = holders(d("fdholder-daemon"), ["-i", rules], "a")
    assert h.terminate() == 0
    h = holders(d("fdholder-daemon"), ["-i", rules], "b")
    assert run(d("fdholder-store") + [h.path, "x"], stdin=subprocess.DEVNULL).returncode == 0
    assert h.terminate() == 1
    h = holders(d("fdholder-daemon"), ["-i", rules], "c")
    raw = Raw(h.path)
    raw.send(b"L")
    assert raw.reply() is not None
    assert h.terminate() == 2
    raw.close()
    h = holders(d("fdholder-daemon"), ["-i", rules], "d")
    assert run(d("fdholder-store") + [h.path, "x"], stdin=subprocess.DEVNULL).returncode == 0
    raw = Raw(h.path)
    raw.send(b"L")
    assert raw.reply() is not None
    assert h.terminate() == 3
    raw.close()


@pytest.mark.parametrize("daemon", IMPLS)
def test_client_timeout_drops_a_silent_client(links: str, sockdir: str, holders: Callable[..., Holder],
                                              daemon: str) -> None:
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-t", "300", "-i", all_rules(sockdir)])
    raw = Raw(h.path)
    start = time.monotonic()
    assert raw.closed(timeout=5)
    assert 0.25 < time.monotonic() - start < 2
    raw.close()
    # a client that got its reply may stay idle
    raw = Raw(h.path)
    raw.send(b"L")
    assert raw.reply() is not None
    assert not raw.closed(timeout=0.6)
    raw.close()


@pytest.mark.parametrize("daemon", IMPLS)
def test_lameduck_waits_for_pending_io_then_gives_up(links: str, sockdir: str, holders: Callable[..., Holder],
                                                      daemon: str) -> None:
    """In lameduck the daemon exits once no client has pending I/O, or when -T passes: here a client
    asked for replies it does not read (1000 ids of 255 bytes, four times: ~1 MB queued)."""
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-T", "400", "-i", all_rules(sockdir)])
    with FdHolderClient(h.path, timeout=10) as holder:
        base = tai.now().add_ms(600_000)
        holder.setdump([HeldDescriptor(0, b"%03d" % i + b"x" * 252, base) for i in range(1000)])
    raw = Raw(h.path)
    raw.send_raw(frame(b"L") * 4)
    time.sleep(0.2)
    start = time.monotonic()
    assert h.terminate() == 3
    assert 0.3 < time.monotonic() - start < 3
    raw.close()
    # and an idle client does not delay the exit
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-T", "5000", "-i", all_rules(sockdir)], "h2")
    raw = Raw(h.path)
    raw.send(b"L")
    assert raw.reply() is not None
    start = time.monotonic()
    assert h.terminate() == 2
    assert time.monotonic() - start < 1
    raw.close()


# -- test idea 36: client timeouts ----------------------------------------------------------------
@pytest.mark.parametrize("client", IMPLS)
def test_store_times_out_on_a_silent_server(links: str, sockdir: str, client: str) -> None:
    path = os.path.join(sockdir, "silent")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(5)
    start = time.monotonic()
    p = run(Impls(client, links)("fdholder-store") + ["-t", "300", path, "x"], stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    server.close()
    assert c(p) == (1, b"", b"s6-fdholder-store: fatal: unable to store fd: Connection timed out\n")
    assert 0.25 < elapsed < 3


# -- setdump's environment, transferdump both ways ---------------------------------------------------
SETDUMP_ENVS = [
    {},
    {"S6_FD#": "x"},
    {"S6_FD#": "1"},
    {"S6_FD#": "1", "S6_FD_0": "x"},
    {"S6_FD#": "1", "S6_FD_0": "0"},
    {"S6_FD#": "1", "S6_FD_0": "0", "S6_FDID_0": ""},
    {"S6_FD#": "1", "S6_FD_0": "0", "S6_FDID_0": "x" * 256},
    {"S6_FD#": "1", "S6_FD_0": "0", "S6_FDID_0": "z", "S6_FDLIMIT_0": "bad"},
    {"S6_FD#": "1", "S6_FD_0": "77", "S6_FDID_0": "zz"},
    {"S6_FD#": "2", "S6_FD_0": "0", "S6_FDID_0": "zz"},
    {"S6_FD#": "0"},
]


@pytest.mark.parametrize("daemon", IMPLS)
def test_setdump_environment_errors(links: str, sockdir: str, holders: Callable[..., Holder],
                                    daemon: str) -> None:
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", all_rules(sockdir)])
    for env in SETDUMP_ENVS:
        a = run(Impls("ours", links)("fdholder-setdump") + [h.path], env=env, stdin=subprocess.DEVNULL)
        b = run(theirs("fdholder-setdump") + [h.path], env=env, stdin=subprocess.DEVNULL)
        assert c(a) == c(b), env
    assert run(theirs("fdholder-list") + [h.path]).stdout == b""
    a = run(Impls("ours", links)("fdholder-setdump") + [os.path.join(sockdir, "nope")], env={"S6_FD#": "0"})
    b = run(theirs("fdholder-setdump") + [os.path.join(sockdir, "nope")], env={"S6_FD#": "0"})
    assert c(a) == c(b) and a.returncode == 111


@pytest.mark.parametrize(("source", "dest", "tool"), [("s6", "ours", "ours"), ("ours", "s6", "ours"),
                                                      ("s6", "ours", "s6"), ("ours", "s6", "s6"),
                                                      ("ours", "ours", "s6")])
def test_transferdump_moves_descriptors_between_implementations(
        links: str, sockdir: str, holders: Callable[..., Holder], source: str, dest: str, tool: str) -> None:
    rules = all_rules(sockdir)
    a = holders(Impls(source, links)("fdholder-daemon"), ["-i", rules], "a")
    b = holders(Impls(dest, links)("fdholder-daemon"), ["-i", rules], "b")
    r, w = os.pipe()
    try:
        with FdHolderClient(a.path, timeout=5) as holder:
            holder.store(r, "pipe", fd_timeout=100)
            holder.store(r, "forever")
            before = {d.id: d.limit for d in holder.getdump() if not os.close(d.fd)}
        with FdHolderClient(b.path, timeout=5) as holder:
            holder.store(w, "forever")  # replaced by setdump
            holder.store(w, "mine")
        p = run(Impls(tool, links)("fdholder-transferdump") + ["-t", "5000:", a.path, b.path])
        assert c(p) == (0, b"", b"")
        with FdHolderClient(b.path, timeout=5) as holder:
            dump = holder.getdump()
            after = {d.id: (d.limit, inode(d.fd)) for d in dump}
            unixmessage.close_fds([d.fd for d in dump])
        assert after == {b"mine": (after[b"mine"][0], inode(w)), b"pipe": (before[b"pipe"], inode(r)),
                         b"forever": (before[b"forever"], inode(r))}
        # the source still holds its copies
        assert run(theirs("fdholder-list") + [a.path]).stdout == b"pipe\nforever\n"
    finally:
        os.close(r)
        os.close(w)


def test_transferdump_connection_errors(links: str, sockdir: str, holders: Callable[..., Holder]) -> None:
    h = holders(theirs("fdholder-daemon"), ["-i", all_rules(sockdir)])
    nope = os.path.join(sockdir, "nope")
    for args in ([h.path, nope], [nope, h.path], [nope, nope]):
        a = run(Impls("ours", links)("fdholder-transferdump") + args)
        b = run(theirs("fdholder-transferdump") + args)
        assert c(a) == c(b) and a.returncode == 111


# -- rules: regex semantics through the daemon, invalid regexes, exec strings, cdb and SIGHUP -------
@pytest.mark.parametrize("daemon", IMPLS)
def test_posix_regex_semantics_in_the_daemon(links: str, sockdir: str, holders: Callable[..., Holder],
                                             daemon: str) -> None:
    """Rights where Python's re would answer otherwise: classes, \\d, $ before a newline, a**."""
    rules = make_rules(sockdir, {"uid/0": {"S6_FDHOLDER_STORE_REGEX": "^[[:alpha:]]+\\d$|a**z|^x$"}})
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", rules])
    outcomes = {}
    for ident in ("abcd", "abc1", "aaz", "x\n", "x", "é"):
        with FdHolderClient(h.path, timeout=5) as holder:
            try:
                holder.store(0, ident)
                outcomes[ident] = 0
            except OperationFailed as e:
                outcomes[ident] = e.errno
    eperm = errno.EPERM
    assert outcomes == {"abcd": 0, "abc1": eperm, "aaz": 0, "x\n": eperm, "x": 0, "é": eperm}


@pytest.mark.parametrize("daemon", IMPLS)
def test_invalid_regex_and_exec_string_warnings(links: str, sockdir: str, holders: Callable[..., Holder],
                                                daemon: str) -> None:
    rules = make_rules(sockdir, {"uid/0": {"S6_FDHOLDER_STORE_REGEX": "(", "S6_FDHOLDER_LIST": ""}})
    with open(os.path.join(rules, "uid/0/exec"), "w") as f:
        f.write("echo hi\n")
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", rules])
    p = run(Impls(daemon, links)("fdholder-list") + [h.path])
    assert p.returncode == 1
    time.sleep(0.1)
    assert h.log() == ("s6-fdholderd: warning: unused exec string in rules for uid 0 gid 0\n"
                       "s6-fdholderd: warning: invalid S6_FDHOLDER_STORE_REGEX value: (: Unmatched ( or \\(\n"
                       "s6-fdholderd: warning: unable to parse_env: Success\n")


def rule_value(env: Dict[str, str]) -> bytes:
    block = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
    return b"A" + len(block).to_bytes(2, "big") + block + b"\0\0"


@pytest.mark.parametrize("daemon", IMPLS)
def test_sighup_reloads_the_cdb(links: str, sockdir: str, holders: Callable[..., Holder],
                                daemon: str) -> None:
    cdb = os.path.join(sockdir, "rules.cdb")
    write_cdb(cdb, [(b"uid/0", rule_value({"S6_FDHOLDER_STORE_REGEX": ""}))])
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-x", cdb])
    lister = Impls(daemon, links)("fdholder-list") + [h.path]
    assert run(lister).returncode == 1
    write_cdb(cdb, [(b"uid/0", rule_value({"S6_FDHOLDER_LIST": ""}))])
    assert run(lister).returncode == 1          # still the old rules
    h.proc.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    assert run(lister).returncode == 0
    os.unlink(cdb)                               # a failed reload keeps the rules in memory
    h.proc.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    assert run(lister).returncode == 0
    assert h.alive()


# -- maxconn and the Python API against both daemons ----------------------------------------------
@pytest.mark.parametrize("daemon", IMPLS)
def test_maxconn_makes_clients_wait_not_fail(links: str, sockdir: str, holders: Callable[..., Holder],
                                             daemon: str) -> None:
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-c", "1", "-i", all_rules(sockdir)])
    first = Raw(h.path)
    first.send(b"L")
    assert first.reply() is not None
    second = Raw(h.path)                       # connected (backlog) but not accepted
    second.send(b"L")
    assert not second.closed(timeout=0.3)
    first.close()
    assert second.reply() == (bytes.fromhex("0000000000"), [])
    second.close()


@pytest.mark.parametrize("daemon", IMPLS)
def test_python_api_round_trip(links: str, sockdir: str, holders: Callable[..., Holder], daemon: str) -> None:
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", all_rules(sockdir)])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(sockdir, "app"))
    listener.listen(5)
    with FdHolderClient(h.path, timeout=5) as holder:
        holder.store(listener.fileno(), "unix:app")
        holder.store(listener.fileno(), b"bytes\xffid", fd_timeout=60)
        assert holder.list() == [b"unix:app", b"bytes\xffid"]
        back = holder.retrieve_socket("unix:app")
        assert back.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert inode(back.fileno()) == inode(listener.fileno())
        assert not os.get_inheritable(back.fileno())
        back.close()
        dump = holder.getdump()
        assert [d.id for d in dump] == [b"unix:app", b"bytes\xffid"]
        holder.delete("unix:app")
        with pytest.raises(OperationFailed) as info:
            holder.retrieve("unix:app")
        assert info.value.errno == errno.ENOENT
        assert str(info.value) == "unable to retrieve fd for id unix:app: No such file or directory"
        holder.setdump([HeldDescriptor(d.fd, d.id + b"2", d.limit) for d in dump])
        unixmessage.close_fds([d.fd for d in dump])
        assert holder.list() == [b"unix:app2", b"bytes\xffid", b"bytes\xffid2"]
    listener.close()
    with pytest.raises(OperationFailed):
        FdHolderClient(h.path, timeout=0.5).retrieve("x" * 256)


def test_retrieve_puts_the_descriptor_on_fd0_and_execs(links: str, sockdir: str,
                                                        holders: Callable[..., Holder]) -> None:
    """The retrieved fd keeps its flags (O_NONBLOCK from the binder), is fd 0 and inheritable."""
    h = holders(theirs("fdholder-daemon"), ["-i", all_rules(sockdir)])
    p = run(["/usr/bin/s6-ipcserver-socketbinder", os.path.join(sockdir, "l"), "/usr/bin/s6-fdholder-store",
             h.path, "l"])
    assert p.returncode == 0
    script = "cat /proc/self/fdinfo/0 | grep flags; ls /proc/self/fd | sort -n | tr '\\n' ' '"
    a = run(Impls("ours", links)("fdholder-retrieve") + [h.path, "l", "sh", "-c", script])
    b = run(theirs("fdholder-retrieve") + [h.path, "l", "sh", "-c", script])
    assert c(a) == c(b)
    assert b"flags:\t04002" in a.stdout
    # ours execs our stages in-process: the same PID runs ipcserverd on the retrieved socket
    argv = [S6IPC, "fdholder-retrieve", h.path, "l", S6IPC, "ipcserverd", "-1", "--", "echo", "hi"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    assert p.stdout.readline() == b"\n"
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(os.path.join(sockdir, "l"))
        assert s.makefile("rb").read() == b"hi\n"
    p.terminate()
    assert p.wait(5) == 0


@requires_root
@pytest.mark.parametrize("daemon", AS_NOBODY)
def test_daemon_drops_privileges(links: str, sockdir: str, holders: Callable[..., Holder],
                                 daemon: str) -> None:
    """``-u/-g``: the socket is bound as root, then the holder runs as nobody (applyuidgid stage)."""
    uid, gid = nobody_ids()
    rules = make_rules(sockdir, {"uid/0": ALL_RIGHTS})
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-u", str(uid), "-g", str(gid), "-i", rules])
    with open(f"/proc/{h.pid}/status") as f:
        ids = {line.split(":")[0]: line.split()[1:] for line in f if line.startswith(("Uid", "Gid"))}
    assert ids == {"Uid": [str(uid)] * 4, "Gid": [str(gid)] * 4}
    assert os.stat(h.path).st_uid == 0
    with FdHolderClient(h.path, timeout=5) as holder:
        holder.store(0, "x")
        assert holder.list() == [b"x"]


def test_getdump_beyond_253_descriptors(links: str, sockdir: str, holders: Callable[..., Holder]) -> None:
    """Linux passes at most 253 descriptors per sendmsg; s6-fdholderd 2.11.3.2 sends getdump chunks
    of 255 in one, so a dump of 254 or more fails there. Ours (on the installed s6's line) splits
    such a chunk over two writes, which s6's own getdump client reassembles; s6 2.12+ sends 253."""
    rules = all_rules(sockdir)
    results = {}
    for daemon in IMPLS:
        h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", rules], daemon,
                    env=as_installed_s6(dict(os.environ)))
        with FdHolderClient(h.path, timeout=10) as holder:
            base = tai.now().add_ms(60_000)
            holder.setdump([HeldDescriptor(0, b"id%03d" % i, base.add_ms(i)) for i in range(300)])
        p = run(theirs("fdholder-getdump") + [h.path, "sh", "-c", 'echo "$S6_FD_299 $S6_FDID_299"'])
        results[daemon] = c(p)
    assert results["ours"] == (0, b"303 id299\n", b"")
    if installed_s6().unixmessage_maxfds > unixmessage.KERNEL_MAX_FDS:  # s6 2.11
        assert results["s6"] == (1, b"", b"s6-fdholder-getdump: fatal: unable to get dump: Broken pipe\n")
    else:
        assert results["s6"] == results["ours"]


def test_a_request_split_over_two_writes(links: str, sockdir: str, holders: Callable[..., Holder]) -> None:
    """s6-fdholderd 2.11.3.2 drops a client whose message is not all there when it wakes (EOF, the
    request unanswered); ours waits for the rest, as its -t documents (docs/fdholderd.md)."""
    rules = all_rules(sockdir)
    answers = {}
    for daemon in IMPLS:
        h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", rules], daemon)
        for split in (3, 6):  # in the header; after the header, before the payload
            raw = Raw(h.path)
            message = frame(protocol.LIST_REQUEST)
            raw.send_raw(message[:split])
            time.sleep(0.2)
            try:
                raw.send_raw(message[split:])
            except BrokenPipeError:
                pass
            answers[daemon, split] = raw.reply()
            raw.close()
    assert answers["ours", 3] == answers["ours", 6] == (b"\0" + bytes(4), [])
    assert answers["s6", 3] is None and answers["s6", 6] is None


@pytest.mark.parametrize("daemon", IMPLS)
def test_setdump_messages_arrive_whole(links: str, sockdir: str, holders: Callable[..., Holder],
                                       daemon: str) -> None:
    """A setdump chunk of 253 entries with 255-byte ids is 68 KiB: the kernel queues it as several
    buffers and a daemon on the other core could wake between them, which s6-fdholderd does not
    survive (the test above). The client keeps every message within one buffer
    (unixmessage.ATOMIC_MESSAGE_SIZE), so six dumps of 1000 such entries all land, on a busy
    machine too (each failed 7-20 % of the time against s6's daemon before)."""
    rules = all_rules(sockdir)
    base = tai.now().add_ms(600_000)
    entries = [HeldDescriptor(0, b"%03d" % i + b"x" * 252, base) for i in range(1000)]
    chunks = setdump_chunks(entries)
    assert sum(len(chunk) for chunk in chunks) == 1000 and len(chunks) == 9
    assert max(len(frame(b"." + protocol.encode_entries([protocol.DumpEntry(e.limit, e.id) for e in chunk])))
               for chunk in chunks) <= unixmessage.ATOMIC_MESSAGE_SIZE
    assert [len(chunk) for chunk in setdump_chunks(entries[:600])][:2] == [121, 121]
    short = [HeldDescriptor(0, b"%d" % i, base) for i in range(600)]
    assert [len(chunk) for chunk in setdump_chunks(short)] == [253, 253, 94]
    for round_ in range(6):  # a daemon each: 1000 is its default limit
        h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", rules], f"h{round_}")
        with FdHolderClient(h.path, timeout=10) as holder:
            holder.setdump(entries)
            assert len(holder.list()) == 1000
        h.stop()


def test_python_recipe_of_the_guide(sockdir: str, holders: Callable[..., Holder]) -> None:
    """The Python example of docs/zero-downtime-restarts.md, run as written (paths substituted):
    the first call binds and parks the socket, the second gets the same socket back."""
    guide = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "docs", "zero-downtime-restarts.md")
    with open(guide) as f:
        code = f.read().split("```python\n", 1)[1].split("```", 1)[0]
    h = holders(ours("fdholder-daemon"), ["-i", make_rules(sockdir, {"uid/0": {
        "S6_FDHOLDER_STORE_REGEX": "^unix:", "S6_FDHOLDER_RETRIEVE_REGEX": "^unix:"}})])
    app = os.path.join(sockdir, "app.sock")
    code = code.replace('"/run/fdholder/s"', repr(h.path)).replace("/run/app.sock", app)
    namespace: Dict[str, object] = {}
    exec(compile(code, guide, "exec"), namespace)
    first = namespace["listening_socket"]()  # type: ignore[operator]
    second = namespace["listening_socket"]()  # type: ignore[operator]
    assert inode(first.fileno()) == inode(second.fileno())
    assert second.getsockname() == app
    first.close()
    second.close()


@pytest.mark.parametrize("daemon", IMPLS)
@pytest.mark.parametrize("client", IMPLS)
def test_getdump_ids_of_any_bytes_reach_the_environment_as_s6s(links: str, sockdir: str,
                                                               holders: Callable[..., Holder], daemon: str,
                                                               client: str) -> None:
    """Ids are a client's bytes (any but NUL, at most 255): getdump puts them in S6_FDID_n as they
    are — invalid UTF-8, control characters, a newline — as s6-fdholder-getdump does. (s6's
    getdump 2.11.3.2 dies of SIGSEGV on an id of 80 bytes or more — observed: 70 works, 80 does
    not — so the longest ids are checked on ours only.)"""
    h = holders(Impls(daemon, links)("fdholder-daemon"), ["-i", all_rules(sockdir)])
    cl = Impls(client, links)
    ids = [b"id\xff\x01\x1b[2J\nline", b"L" * 70]
    for ident in ids:
        p = run(cl("fdholder-store") + [h.path, os.fsdecode(ident)], stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr

    def dumped(getdump: List[str]) -> List[bytes]:
        out = run(getdump + [h.path, "/usr/bin/env", "-0"]).stdout
        env = dict(entry.split(b"=", 1) for entry in out.split(b"\0") if b"=" in entry)
        return sorted(env[f"S6_FDID_{i}".encode()] for i in range(int(env[b"S6_FD#"])))

    assert dumped(cl("fdholder-getdump")) == sorted(ids)
    longest = b"\xfe" * 255
    stored = run(cl("fdholder-store") + [h.path, os.fsdecode(longest)], stdin=subprocess.DEVNULL)
    assert stored.returncode == 0
    assert dumped(Impls("ours", links)("fdholder-getdump")) == sorted([*ids, longest])
    too_long = run(cl("fdholder-store") + [h.path, "L" * 256], stdin=subprocess.DEVNULL)
    assert too_long.returncode != 0 and too_long.stderr.count(b"\n") == 1
    assert b"Traceback" not in too_long.stderr
