"""liveview: the status socket (abstract name, SO_PEERCRED check, one JSON document, never
blocking), the client (find by pid or name, query), the rendering, STATUS= rate limiting."""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List

import pytest

from s6ipc.base.errors import Refused, S6ipcError, SystemFailure
from s6ipc.daemon import liveview
from tests.support.clock import FakeClock
from tests.support.processes import nobody_ids

#: Debian's interpreter: every user can exec it (pyenv's, in root's 0700 home, nobody cannot).
SYSTEM_PYTHON = "/usr/bin/python3"


def _serve_in_thread(status: liveview.StatusSocket, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        poller = select.poll()
        poller.register(status.fileno(), select.POLLIN)
        while not stop.is_set():
            for _, mask in poller.poll(50):
                status.on_event(mask)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def status() -> Any:
    calls: List[int] = []

    def describe() -> Dict[str, Any]:
        calls.append(1)
        return {"program": "testd", "pid": os.getpid(), "version": "9.9", "generation": 2,
                "uptime": 3725.0, "connections": {"total": 1, "per_uid": {"0": 1}},
                "children": [{"pid": 42, "uid": 0, "age": 1.5}], "calls": len(calls)}

    sock = liveview.StatusSocket("testd", describe)
    stop = threading.Event()
    thread = _serve_in_thread(sock, stop)
    yield sock
    stop.set()
    thread.join()
    sock.close()


def test_name_is_abstract_and_listed(status: liveview.StatusSocket) -> None:
    assert status.name == f"s6ipc/status/testd/{os.getpid()}"
    assert os.path.exists("/proc/net/unix")
    assert ("testd", os.getpid()) in liveview.find_daemons()
    assert liveview.find_daemons(program="testd") == [("testd", os.getpid())]
    assert liveview.find_daemons(pid=os.getpid()) == [("testd", os.getpid())]
    assert liveview.find_daemons(program="otherd") == []
    assert not os.get_inheritable(status.fileno())


def test_query_returns_the_document(status: liveview.StatusSocket) -> None:
    first = liveview.query(os.getpid())
    second = liveview.query(os.getpid(), "testd")
    assert first["program"] == "testd" and first["version"] == "9.9"
    assert second["calls"] == first["calls"] + 1, "built when asked, each time"


def test_query_of_a_pid_without_live_view() -> None:
    with pytest.raises(Refused, match=r"unable to find a live view for pid 1: No such process") as caught:
        liveview.query(1)
    assert caught.value.exit_code == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="changing euid to another user needs root")
@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="Debian's python3 is not installed")
def test_another_uid_is_refused(status: liveview.StatusSocket) -> None:
    """A client of another uid (Debian's python3 as nobody: a process of its own, no fork of this
    threaded one) is told why, in one JSON line."""
    uid, gid = nobody_ids()
    client = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.settimeout(5); "
              "s.connect('\\0' + sys.argv[1]); sys.stdout.buffer.write(s.recv(65536))")
    done = subprocess.run([SYSTEM_PYTHON, "-I", "-c", client, status.name], user=uid, group=gid,
                          extra_groups=[], capture_output=True, timeout=20)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer == {"error": f"uid {uid} may not read the live view of testd (only root and uid 0)"}
    assert liveview.may_read(0) and liveview.may_read(os.geteuid()) and not liveview.may_read(uid)


def test_a_client_that_never_reads_does_not_block(status: liveview.StatusSocket) -> None:
    """A large document to a client that reads nothing: the daemon answers others meanwhile."""
    big = {"program": "testd", "pid": os.getpid(), "blob": "x" * 500000}
    status.describe = lambda: big
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect("\0" + status.name)
    try:
        assert liveview.query(os.getpid(), timeout=5)["blob"] == big["blob"]
    finally:
        idle.close()


def test_render_for_humans(status: liveview.StatusSocket) -> None:
    text = liveview.render(liveview.query(os.getpid()))
    lines = text.splitlines()
    assert lines[0] == f"testd pid {os.getpid()}, version 9.9, generation 2, uptime 1h02m05s"
    assert "connections: total 1, per_uid 0 1" in lines
    assert "children: 1" in lines and "  pid 42 uid 0 age 1.5s" in lines


@pytest.mark.parametrize("seconds,text", [(0.04, "0.0s"), (59.96, "60.0s"), (61, "1m01s"),
                                          (7322, "2h02m02s"), (90061, "1d01h01m01s")])
def test_duration(seconds: float, text: str) -> None:
    assert liveview.duration(seconds) == text


def test_status_line_is_rate_limited_and_sent_on_change() -> None:
    clock = FakeClock()
    sent: List[str] = []
    text = ["a"]
    line = liveview.StatusLine(sent.append, lambda: text[0], 1.0, clock.monotonic)
    line.tick()
    line.tick()
    assert sent == ["a"]
    text[0] = "b"
    clock.advance(0.5)
    line.tick()
    assert sent == ["a"], "at most once a second"
    clock.advance(0.5)
    line.tick()
    assert sent == ["a", "b"]
    clock.advance(5)
    line.tick()
    assert sent == ["a", "b"], "nothing when nothing changed"
    quiet = liveview.StatusLine(sent.append, lambda: text[0], 1.0, clock.monotonic, quiet_first=True)
    quiet.tick()
    assert sent == ["a", "b"], "quiet_first: the text at start counts as sent"
    text[0] = "c"
    quiet.tick()
    assert sent == ["a", "b", "c"]


def test_every_runs_each_beat_on_its_own_interval() -> None:
    clock = FakeClock()
    calls: List[str] = []
    interval, beat = liveview.every([(1.0, lambda: calls.append("status")),
                                     (5.0, lambda: calls.append("dog"))], clock.monotonic)
    assert interval == 1.0
    for _ in range(11):
        beat()
        clock.advance(1.0)
    assert calls.count("status") == 11 and calls.count("dog") == 3


def test_a_document_beyond_any_send_buffer_arrives_whole(status: liveview.StatusSocket) -> None:
    """Larger than twice this host's net.core.wmem_max (what an AF_UNIX send buffer can grow to):
    it travels in a sealed memfd, the daemon never waits for the reader."""
    with open("/proc/sys/net/core/wmem_max") as f:
        size = 3 * 2 * int(f.read())
    big = {"program": "testd", "pid": os.getpid(), "blob": "z" * size}
    status.describe = lambda: big
    assert liveview.query(os.getpid(), timeout=20)["blob"] == big["blob"]


def _peer(name: str, answer: Callable[[socket.socket], None]) -> Callable[[], None]:
    """A status socket bound by this process (so that it verifies) answering each client with *answer*."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("\0" + name)
    sock.listen(4)
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    answer(conn)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join()
        sock.close()

    return close


def _send_fd(conn: socket.socket, line: bytes, fd: int) -> None:
    conn.sendmsg([line], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))])


@pytest.mark.parametrize("case", ["pipe", "unsealed", "wrong size", "bad line", "inline too large",
                                  "not an object", "another pid", "error"])
def test_a_lying_peer_is_one_line(case: str) -> None:
    """A peer that passes the SO_PEERCRED check and still lies: each lie is one precise failure."""
    def answer(conn: socket.socket) -> None:
        if case == "pipe":
            r, w = os.pipe()
            os.write(w, b"{}")
            _send_fd(conn, b"memfd 2\n", r)
            os.close(r)
            os.close(w)
        elif case in ("unsealed", "wrong size", "bad line"):
            fd = os.memfd_create("x", os.MFD_ALLOW_SEALING)
            os.write(fd, b"{}")
            if case != "unsealed":
                seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            _send_fd(conn, b"memfd 3\n" if case == "wrong size" else b"memfd 2\n" if case != "bad line"
                     else b"mem 2\n", fd)
            os.close(fd)
        elif case == "inline too large":
            conn.sendall(b"[" + b" " * (2 * liveview.INLINE_MAX))
        elif case == "not an object":
            conn.sendall(b"[1, 2]\n")
        elif case == "another pid":
            conn.sendall(json.dumps({"program": "liard", "pid": 1}).encode())
        else:
            conn.sendall(b'{"error": "go away"}')

    close = _peer(liveview.status_name("liard", os.getpid()), answer)
    try:
        with pytest.raises(S6ipcError) as caught:
            liveview.query(os.getpid(), "liard", timeout=2)
    finally:
        close()
    text = str(caught.value)
    expected = {"pipe": "unable to read the document's memfd from @", "unsealed": "memfd",
                "wrong size": "memfd", "bad line": "memfd",
                "inline too large": f"unable to read a document of at most {liveview.INLINE_MAX} bytes",
                "not an object": "unable to read a JSON document",
                "another pid": "(it says it is 'liard' pid 1)",
                "error": "unable to read the live view of pid"}[case]
    assert expected in text and "\n" not in text
    assert caught.value.exit_code == (1 if case == "error" else 111)


def test_a_hung_peer_is_given_up_at_the_timeout() -> None:
    close = _peer(liveview.status_name("hungd", os.getpid()), lambda conn: time.sleep(1.5))
    started = time.monotonic()
    try:
        timed_out = r"unable to read from @s6ipc/status/hungd/\d+: Connection timed out"
        with pytest.raises(SystemFailure, match=timed_out):
            liveview.query(os.getpid(), "hungd", timeout=0.3)
        assert time.monotonic() - started < 1.2
    finally:
        close()


@pytest.mark.skipif(os.geteuid() != 0, reason="changing euid to another user needs root")
def test_a_socket_bound_under_another_uid_is_refused() -> None:
    """What a reused PID looks like: the listener's credentials (taken at listen) are not the
    process's euid now. Here a child listens as root, then becomes nobody."""
    uid, gid = nobody_ids()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("\0" + liveview.status_name("turnd", os.getpid()))
        sock.listen(4)
        os.setgid(gid)
        os.setuid(uid)
        os.write(w, b"x")
        time.sleep(30)
        os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"x"
        with pytest.raises(Refused) as caught:
            liveview.query(pid, "turnd", timeout=2)
        assert str(caught.value) == (f"unable to verify the live view of pid {pid}: "
                                     f"@s6ipc/status/turnd/{pid} is held by pid {pid} uid 0, "
                                     f"not pid {pid} uid {uid}: Operation not permitted")
        assert caught.value.exit_code == 1
        assert liveview.documents("turnd") == []
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(r)


def test_a_squatted_name_is_replaced_by_a_random_one() -> None:
    squat = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squat.bind("\0" + liveview.status_name("squatd", os.getpid()))
    squat.listen(1)
    sock = liveview.StatusSocket("squatd", lambda: {"program": "squatd", "pid": os.getpid()})
    try:
        assert sock.squatted and sock.name.startswith(liveview.status_name("squatd", os.getpid()) + ".")
        adopted = liveview.StatusSocket("squatd", sock.describe, os.dup(sock.fileno()))
        assert adopted.name == sock.name and not adopted.squatted, "an upgrade keeps the name it had"
        adopted.close()
        names = liveview.candidates("squatd")[("squatd", os.getpid())]
        assert names == [liveview.status_name("squatd", os.getpid()), sock.name]
    finally:
        sock.close()
        squat.close()


def test_a_listing_is_not_held_up_or_blanked_by_a_hung_daemon(status: liveview.StatusSocket) -> None:
    """Daemons are asked at once: a hung one costs one timeout and is reported, the others answer."""
    close = _peer(liveview.status_name("hungd", os.getpid()), lambda conn: time.sleep(1.5))
    started = time.monotonic()
    failures: List[SystemFailure] = []
    try:
        found = liveview.documents(timeout=0.5, failures=failures)
        assert time.monotonic() - started < 1.2
    finally:
        close()
    assert [d["program"] for d in found if d.get("pid") == os.getpid()] == ["testd"]
    assert [str(f) for f in failures if f"hungd/{os.getpid()}" in str(f)] == [
        f"unable to read from @s6ipc/status/hungd/{os.getpid()}: Connection timed out"]


@pytest.mark.parametrize("last", ["9" * 80, "4194305", "12.", "+12", "\u0661\u0662"])
def test_names_no_pid_can_have_are_not_candidates(last: str) -> None:
    """Anyone may bind any abstract name: a pid no process can have, or not a pid, is ignored."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(("\0" + liveview.NAME_PREFIX + "oddd/" + last).encode())
        sock.listen(1)
        assert liveview.candidates("oddd") == {}


def test_a_name_merely_bound_is_no_candidate() -> None:
    """/proc/net/unix shows state 01 for a bound socket too: only a listener (ACCEPTCON) counts."""
    name = f"{liveview.NAME_PREFIX}boundd/{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(("\0" + name).encode())
        assert liveview.candidates(program="boundd") == {}
        sock.listen(1)
        assert liveview.candidates(program="boundd") == {("boundd", os.getpid()): [name]}


def test_out_of_descriptors_is_a_local_failure_not_a_forgery() -> None:
    """The client's own EMFILE while it checks the peer's owner is a system failure (111)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        while True:
            try:
                spare.append(os.open("/dev/null", os.O_RDONLY))
            except OSError:
                break
        with pytest.raises(SystemFailure, match=r"read /proc/\d+/status") as caught:
            liveview.process_euid(os.getpid())
        assert caught.value.exit_code == 111
    finally:
        for fd in spare:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert liveview.process_euid(os.getpid()) == os.geteuid()


def test_render_shows_no_python_none_and_no_blank_value() -> None:
    text = liveview.render({"program": "testd", "pid": 1, "name": "",
                            "last_upgrade": {"result": "ok", "reason": None}})
    assert "None" not in text and "name: -\n" in text and "reason -" in text
