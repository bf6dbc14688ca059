"""serve/standin.py: the stand-in's report, taking a stand-in back whatever it does (answers, dies,
hangs, lies), a real stand-in forked from a running loop, and a forged stand-in in a state.

Everything that forks, reaps or changes the subreaper attribute runs in a forked child
(tests/support/forked.py): pytest's own process stays as it was."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import Any, Dict, List

import pytest

from s6ipc.serve.life import ServerLife
from s6ipc.serve.loop import Server, ServerConfig
from s6ipc.serve.peers import UnixPeers
from s6ipc.serve.standin import StandIn, fork_stand_in, report, take_back
from tests.support.fdholder import Quiet
from tests.support.forked import in_child

GOOD = {"counters": {"accepted": 3, "spawned": 2, "refused": {"access": 1}, "exits": {"ok": 1}},
        "children": {"123": {"uid": 0, "gid": 0}}, "stopped": 12.5}


def test_a_report_is_read_and_checked() -> None:
    got = report(GOOD)
    assert got["counters"] == GOOD["counters"] and got["children"] == {123: {"uid": 0, "gid": 0}}
    assert got["stopped"] == 12.5
    assert report({**GOOD, "stopped": "soon"})["stopped"] is None


@pytest.mark.parametrize("counters", [
    {"accepted": -1, "spawned": 0, "refused": {}, "exits": {}},
    {"accepted": True, "spawned": 0, "refused": {}, "exits": {}},
    {"accepted": "3", "spawned": 0, "refused": {}, "exits": {}},
    {"accepted": 1, "spawned": 0, "refused": {"access": 1.5}, "exits": {}},
])
def test_a_count_that_is_not_a_natural_number_is_refused(counters: Dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        report({**GOOD, "counters": counters})


@pytest.mark.parametrize("broken", [{}, {"counters": GOOD["counters"]}, {"children": {}},
                                    {**GOOD, "children": {"x": {}}}, {**GOOD, "counters": []},
                                    {**GOOD, "children": {"0": {}}}, {**GOOD, "children": {"-5": {}}},
                                    {**GOOD, "children": {"9" * 5000: {}}},
                                    {**GOOD, "children": {"\u0661": {}}}])
def test_a_malformed_report_raises(broken: Dict[str, Any]) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        report(broken)


def _fake(behaviour: str, said: Dict[str, Any] = GOOD) -> StandIn:
    """A child that plays a stand-in: ``answer`` (reads the byte, writes GOOD), ``die`` (exit 3
    without a word), ``hang`` (never answers), ``lie`` (writes what is not JSON)."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the fake stand-in
        ours.close()
        if behaviour == "hang":
            time.sleep(60)
        if behaviour == "die":
            os._exit(3)
        theirs.recv(1)
        theirs.sendall(json.dumps(said).encode() if behaviour == "answer" else b"{not json")
        os._exit(0)
    theirs.close()
    return StandIn(pid, ours.detach(), False)


def _take_back(behaviour: str) -> List[Any]:
    warnings: List[str] = []
    stand_in = _fake(behaviour)
    got = take_back(stand_in, warnings.append, timeout=0.5)
    gone = not os.path.exists(f"/proc/{stand_in.pid}")  # reaped: no zombie left
    return [got, warnings, gone]


def test_a_stand_in_that_answers_is_reaped_and_its_report_returned() -> None:
    got, warnings, gone = in_child(lambda: _take_back("answer"))
    assert got == GOOD and warnings == [] and gone


@pytest.mark.parametrize("behaviour, why", [("die", "it ended without a report"),
                                            ("hang", "no report within 0.5 s"),
                                            ("lie", "its report is unusable")])
def test_a_stand_in_that_does_not_answer_is_one_warning(behaviour: str, why: str) -> None:
    got, warnings, gone = in_child(lambda: _take_back(behaviour))
    assert got is None and gone
    assert len(warnings) == 1 and why in warnings[0] and "the stand-in (pid" in warnings[0], warnings


def test_a_pid_that_is_not_our_child_is_not_waited_for() -> None:
    def work() -> List[Any]:
        ours, theirs = socket.socketpair()
        warnings: List[str] = []
        got = take_back(StandIn(1, ours.detach(), True), warnings.append, timeout=0.2)
        return [got, warnings]

    got, warnings = in_child(work)
    assert got is None and "not a child of this process" in warnings[0]


def _running_server(path: str, verbosity: int = 1) -> Server:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    listener.setblocking(False)
    server = Server(ServerConfig(["sh", "-c", "echo hi; read x"], verbosity=verbosity), Quiet(), Quiet(),
                    listen_fd=listener.detach(), identity=UnixPeers(True))
    server.start()
    return server


def test_a_stand_in_forked_from_a_running_loop_serves_and_reports(tmp_path: str) -> None:
    """In a child: a started server forks its stand-in (its signals blocked, as the lifecycle does);
    a client is served by the stand-in alone (the server's loop does not run); taken back, the
    stand-in's child is this process's, in the table with its peer, the counters added."""
    path = os.path.join(str(tmp_path), "s")

    def work() -> List[Any]:
        server = _running_server(path)
        life = ServerLife(server)
        mask = sorted(signal.pthread_sigmask(signal.SIG_BLOCK, server.signals))
        stand_in = fork_stand_in(server, mask)
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(5)
        client.connect(path)
        said = client.recv(10)
        served = life.take_back(stand_in)
        children = list(server.children.peers)
        parents = []
        for pid in children:
            with open(f"/proc/{pid}/stat") as f:
                parents.append(int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid())
        client.close()
        return [said.decode(), served is not None, server.accepted, server.spawned, len(children), parents,
                os.path.exists(f"/proc/{stand_in.pid}")]

    said, stopped, accepted, spawned, n, parents, stand_in_left = in_child(work)
    assert said == "hi\n" and stopped
    assert (accepted, spawned, n) == (1, 1, 1) and parents == [True]
    assert not stand_in_left


@pytest.mark.parametrize("named, why", [
    ({"pid": 1, "fd": "SOCKET", "subreaper": False}, "pid 1 is not a child of this process"),
    ({"pid": "PID", "fd": 0, "subreaper": False}, "is not a socket"),
    ({"pid": "PID", "fd": 987, "subreaper": False}, "Bad file descriptor"),
    ({"pid": "PID"}, "'fd'"),
    ("nonsense", ""),
])
def test_a_stand_in_the_state_names_is_checked_before_anything_is_said_to_it(named: Any, why: str) -> None:
    """A forged state (or a stale one) naming another process or another descriptor: one warning,
    nothing written on the descriptor, nothing adopted, no subreaper change."""
    def work() -> List[Any]:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        forged = named
        if isinstance(named, dict):
            forged = {k: (ours.fileno() if v == "SOCKET" else os.getpid() if v == "PID" else v)
                      for k, v in named.items()}
        server = Server(ServerConfig(["true"]), Quiet(), Quiet(), identity=UnixPeers(True))
        got = ServerLife(server).released({"stand_in": forged})
        try:
            heard = theirs.recv(10)
        except BlockingIOError:
            heard = b""
        return [got, server.log.lines, heard.decode(), len(server.children)]  # type: ignore[attr-defined]

    got, lines, heard, adopted = in_child(work)
    assert got is None and heard == "" and adopted == 0
    assert len(lines) == 1 and lines[0].startswith("warning: ignoring the stand-in the handoff state"), lines
    assert why in lines[0]


@pytest.mark.parametrize("how", ["limit", "eof", "told", "sigterm"])
def test_a_stand_in_loop_ends_at_its_limit_at_eof_when_told_or_on_sigterm(tmp_path: str, how: str) -> None:
    """Server.stand_in, in this process (forked child of the test): the loop it sets up ends
    when its time is up, when the daemon's end is closed, when one byte arrives, or on SIGTERM —
    and hears no other signal of the daemon's (SIGHUP is ignored: no handler runs, nothing dies)."""
    path = os.path.join(str(tmp_path), "s")

    def work() -> List[Any]:
        server = _running_server(path, verbosity=2)  # the daemon's own lines would show
        ours, theirs = socket.socketpair()
        server.stand_in(theirs.detach(), 0.3 if how == "limit" else 30.0,
                        (signal.SIGCHLD, signal.SIGTERM), (signal.SIGHUP,))
        os.kill(os.getpid(), signal.SIGHUP)
        if how == "eof":
            ours.close()
        elif how == "told":
            ours.send(b"s")
        elif how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        started = time.monotonic()
        ending = server.serve()
        return [time.monotonic() - started, ending.code, ending.exec_argv, server.log.lines]  # type: ignore[attr-defined]

    took, code, argv, lines = in_child(work)
    assert (code, argv) == (0, None) and took < (2.0 if how == "limit" else 0.5), took
    assert took >= (0.25 if how == "limit" else 0.0)
    assert not any("exiting" in line or "SIGTERM" in line for line in lines), lines


def test_what_a_stand_in_did_is_added_to_the_counters_the_table_and_the_admission_counts() -> None:
    """ServerLife.take_back: the stand-in's counters are added to the server's (unknown reasons
    ignored), its children go into the table with their peers and into -A's per-gid live counts,
    so a gidconn= limit counts the connections the stand-in accepted."""
    from s6ipc.serve.admission import Admission, UidSources, parse_limits
    from s6ipc.serve.peers import UnixPeer

    said = {"counters": {"accepted": 3, "spawned": 2, "refused": {"access": 1, "nonsense": 9},
                         "exits": {"ok": 1}},
            "children": {"4242": [1000, 100]}, "stopped": 5.0}

    def work() -> List[Any]:
        server = Server(ServerConfig(["true"]), Quiet(), Quiet(), identity=UnixPeers(True))
        server.admission = Admission(parse_limits(["gidconn=1"], False), UidSources(),  # type: ignore[arg-type]
                                     Quiet(), lambda: 50.0)
        server.accepted, server.spawned = 10, 9
        server.refusals["access"] = 1
        stopped = ServerLife(server, ours=list).take_back(_fake("answer", said))
        return [stopped, server.accepted, server.spawned, server.refusals, server.exits["ok"],
                {str(k): v.to_state() for k, v in server.children.peers.items()},
                server.admission.admit(UnixPeer(1001, 100, True)), server.log.lines]  # type: ignore[attr-defined]

    stopped, accepted, spawned, refusals, ok, children, admitted, lines = in_child(work)
    assert (stopped, accepted, spawned, ok) == (5.0, 13, 11, 1)
    assert refusals["access"] == 2 and "nonsense" not in refusals
    assert children == {"4242": [1000, 100]}
    assert admitted == "prefix", "gid 100 is at its gidconn=1 with the stand-in's connection"
    assert lines == []
