"""liveview: the status socket (abstract name, SO_PEERCRED check, one JSON document, never
blocking), the client (find by pid or name, query), the rendering, STATUS= rate limiting."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from typing import Any, Dict, List

import pytest

from s6ipc.base.errors import Refused
from s6ipc.daemon import liveview
from tests.support.clock import FakeClock
from tests.support.processes import nobody_ids


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
def test_another_uid_is_refused(status: liveview.StatusSocket) -> None:
    uid, gid = nobody_ids()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setgid(gid)
        os.setuid(uid)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect("\0" + status.name)
            data = sock.recv(65536)
        os.write(w, data)
        os._exit(0)
    os.close(w)
    _, code = os.waitpid(pid, 0)
    answer = json.loads(os.read(r, 65536))
    os.close(r)
    assert code == 0
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
