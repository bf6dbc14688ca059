"""s6ipc.serve.intake: one table of sources, walked for the daemons and the Python API alike.

The walk itself (order, first hit wins, misses, the move into place) runs in this process with
stand-in sources; everything that touches fd 0 or real ``LISTEN_*`` fds runs in a child started
the way systemd starts one (tests/support/passfds.py), with fd 0 chosen by the test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import textwrap
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence

import pytest

from s6ipc.base.errors import BadInput
from s6ipc.serve import intake
from s6ipc.serve.intake import Miss, NoSocket, Source, Want

if TYPE_CHECKING:
    from s6ipc.serve.intake import Taken
from tests.support.processes import SUPPORT, VENV_PYTHON

PASSFDS = os.path.join(SUPPORT, "passfds.py")


# -- the walk, with stand-in sources ---------------------------------------------------------------
class Stub(Source):
    def __init__(self, name: str, result: Any, calls: List[str]) -> None:
        self.name = name
        self.result = result
        self.calls = calls

    def take(self, want: Want) -> Taken:
        self.calls.append(self.name)
        return self.result() if callable(self.result) else self.result


@pytest.fixture
def spare_fd() -> Iterator[int]:
    """A descriptor number of our own to receive a socket (/dev/null until then), closed afterwards."""
    fd = os.open(os.devnull, os.O_RDONLY)
    yield fd
    try:
        os.close(fd)
    except OSError:
        pass


def test_the_table_is_fd0_then_systemd_then_the_fd_holder() -> None:
    assert intake.SOURCE_ORDER == ("fd0", "systemd", "fdholder")
    assert [type(s) for s in intake.SOURCES] == [intake.FdZero, intake.Systemd, intake.FdHolder]


def test_the_first_source_with_a_socket_wins_and_is_moved_into_place(spare_fd: int) -> None:
    calls: List[str] = []
    a, b = socket.socketpair()
    held = b.detach()
    sources = [Stub("one", Miss("one has none"), calls), Stub("two", held, calls),
               Stub("three", lambda: pytest.fail("tried after a hit"), calls)]
    assert intake.take_socket(Want(), spare_fd, sources=sources, inheritable=False) == "two"
    assert calls == ["one", "two"]
    with pytest.raises(OSError):
        os.fstat(held)  # moved, not copied
    assert not os.get_inheritable(spare_fd)
    os.write(spare_fd, b"x")
    assert a.recv(1) == b"x"
    a.close()


def test_a_stage_gets_an_inheritable_fd(spare_fd: int) -> None:
    r, w = os.pipe()
    assert intake.take_socket(Want(), spare_fd, sources=[Stub("s", r, [])]) == "s"
    assert os.get_inheritable(spare_fd)
    os.close(w)


def test_no_socket_names_every_miss_in_order_and_tells_on_miss() -> None:
    seen: List[str] = []
    sources = [Stub("a", Miss("a is empty"), []), Stub("b", Miss("b is stale", intake.STALE), [])]
    with pytest.raises(NoSocket) as info:
        intake.take_socket(Want(), 0, sources=sources, on_miss=lambda name, miss: seen.append(name))
    assert str(info.value) == "no listening socket: a is empty; b is stale"
    assert isinstance(info.value, BadInput) and info.value.exit_code == 100
    assert info.value.miss("b") == Miss("b is stale", "stale") and info.value.miss("zz") is None
    assert seen == ["a", "b"]


def test_a_source_that_fails_stops_the_walk() -> None:
    def broken() -> int:
        raise BadInput("unusable")

    calls: List[str] = []
    with pytest.raises(BadInput, match="^unusable$"):
        intake.take_socket(Want(), 0, sources=[Stub("a", broken, calls), Stub("b", 7, calls)])
    assert calls == ["a"]


# -- the fd-holder source --------------------------------------------------------------------------
def test_the_fd_holder_source_needs_both_holder_and_identifier() -> None:
    source = intake.FdHolder()
    assert source.take(Want()) == Miss("no fd holder given")
    assert source.take(Want(fdholder="/run/h")) == Miss("no fd holder given")
    assert source.take(Want(fdholder_id="unix:web")) == Miss("no fd holder given")


def test_the_fd_holder_source_takes_a_listener_and_refuses_anything_else(
        monkeypatch: pytest.MonkeyPatch, sockdir: str) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.path.join(sockdir, "l"))
    listener.listen()
    held = {"unix:web": listener.detach()}
    asked: List[Any] = []

    def retrieve(holder: str, identifier: str, timeout: Optional[float] = None) -> int:
        asked.append((holder, identifier))
        return held[identifier]

    monkeypatch.setattr(intake, "retrieve_from_fdholder", retrieve)
    want = Want(fdholder="/run/h", fdholder_id="unix:web")
    assert intake.FdHolder().take(want) == held["unix:web"]
    assert asked == [("/run/h", "unix:web")]
    os.close(held["unix:web"])

    a, b = socket.socketpair()
    held["unix:pair"] = a.detach()
    with pytest.raises(BadInput, match="^the fd unix:pair retrieved from /run/h is not listening$"):
        intake.FdHolder().take(want._replace(fdholder_id="unix:pair"))
    with pytest.raises(OSError):
        os.fstat(held["unix:pair"])  # closed, not leaked
    b.close()


# -- fd 0 and systemd, in a child started as systemd starts one ------------------------------------
WALK = r"""
import json, os, sys
from s6ipc.serve import intake
from s6ipc.sockets import unix
from s6ipc.base.errors import S6ipcError
out = {"warnings": []}
try:
    if MODE == "daemon":
        out["family"] = intake.take_daemon_socket(out["warnings"].append)
        out["source"] = "checked"
    else:
        out["source"] = intake.take_listener(**KWARGS)
    out["fd0"] = unix.socket_address(0)
    out["fd0_inheritable"] = os.get_inheritable(0)
except S6ipcError as e:
    out["error"] = "%s %d: %s" % (type(e).__name__, e.exit_code, e)
out["environ"] = sorted(k for k in os.environ if k.startswith("LISTEN_"))
open_fds = []
for fd in range(3, 8):
    try:
        os.fstat(fd)
        open_fds.append(fd)
    except OSError:
        pass
out["open"] = open_fds
out["pid"] = os.getpid()
print(json.dumps(out))
"""


def walk(mode: str, specs: Sequence[str] = (), *, stdin: Any = subprocess.DEVNULL,
         options: Sequence[str] = (), kwargs: Optional[Dict[str, Any]] = None,
         systemd: bool = True) -> Dict[str, Any]:
    code = WALK.replace("MODE", repr(mode)).replace("KWARGS", repr(kwargs or {}))
    argv = [VENV_PYTHON, "-c", textwrap.dedent(code)]
    if systemd:
        argv = [VENV_PYTHON, PASSFDS, *specs, *options, "--", *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    result = subprocess.run(argv, stdin=stdin, capture_output=True, timeout=30, env=env)
    assert result.returncode == 0, result.stderr.decode()
    out: Dict[str, Any] = json.loads(result.stdout)
    return out


def unix_socket(path: str, kind: int = socket.SOCK_STREAM, listen: bool = True) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(path)
    if listen:
        s.listen()
    return s


def test_fd0_wins_over_systemd_and_its_fds_are_dropped(sockdir: str) -> None:
    zero = unix_socket(f"{sockdir}/zero")
    for mode in ("api", "daemon"):
        out = walk(mode, [f"listen:{sockdir}/sd"], stdin=zero)
        assert out["fd0"] == f"{sockdir}/zero" and out["environ"] == [], out
        assert out["fd0_inheritable"] is (mode == "api")  # a stage hands it on; a daemon keeps it
    zero.close()


def test_the_api_skips_an_unusable_fd0_where_the_daemon_takes_any_socket_and_checks_it(sockdir: str) -> None:
    """A datagram socket on fd 0: the API goes on to systemd; a daemon takes it (any socket is
    fd 0's, as in s6) and refuses it with s6's own start-up message."""
    dgram = unix_socket(f"{sockdir}/dg", socket.SOCK_DGRAM, listen=False)
    api = walk("api", [f"listen:{sockdir}/sd"], stdin=dgram)
    assert api["source"] == "systemd" and api["fd0"] == f"{sockdir}/sd"
    daemon = walk("daemon", [f"listen:{sockdir}/sd"], stdin=dgram)
    assert daemon["error"] == "Unusable 111: stdin is not a stream socket"
    assert daemon["environ"] == [] and daemon["warnings"] == []
    dgram.close()


def test_a_daemon_takes_systemds_socket_when_fd0_is_no_socket(sockdir: str) -> None:
    out = walk("daemon", ["tcp", f"listen:{sockdir}/sd"])
    assert out["source"] == "checked" and out["family"] == socket.AF_UNIX
    assert out["fd0"] == f"{sockdir}/sd" and out["fd0_inheritable"] is False
    assert out["open"] == [] and out["environ"] == []  # the other passed fd is closed


def test_a_daemon_reports_stale_listen_fds_then_fails_as_s6_does() -> None:
    out = walk("daemon", ["tcp"], options=["--pid", "1"])
    assert out["warnings"] == [
        f"ignoring LISTEN_FDS: the sockets passed by systemd are for another process (LISTEN_PID=1, "
        f"this is {out['pid']}): was this started through a wrapper that did not exec?"]
    assert out["error"] == "BadInput 100: stdin is not a socket"
    assert out["environ"] == []
    bad_pid = walk("daemon", ["tcp"], options=["--pid", "x"])
    assert bad_pid["warnings"] == ["ignoring LISTEN_FDS: invalid LISTEN_PID: 'x'"]
    quiet = walk("daemon", systemd=False)
    assert quiet["warnings"] == [] and quiet["error"] == "BadInput 100: stdin is not a socket"


def test_a_daemon_refuses_garbage_meant_for_it() -> None:
    out = walk("daemon", ["tcp"], options=["--fds", "1x"])
    assert out["error"] == "BadInput 100: invalid LISTEN_FDS: '1x'" and out["environ"] == []


def test_the_api_says_why_each_source_had_nothing(sockdir: str) -> None:
    zero = unix_socket(f"{sockdir}/zero")
    named = walk("api", [f"listen:{sockdir}/sd"], stdin=zero, options=["--pid", "1"],
                 kwargs={"name": "web"})
    assert named["error"] == (
        "NoSocket 100: no listening socket: fd 0 has no name (asked for web); the sockets passed by "
        f"systemd are for another process (LISTEN_PID=1, this is {named['pid']}): was this started "
        "through a wrapper that did not exec?; no fd holder given")
    elsewhere = walk("api", stdin=zero, systemd=False, kwargs={"path": f"{sockdir}/other"})
    assert elsewhere["error"] == (
        f"NoSocket 100: no listening socket: fd 0 is not bound to {sockdir}/other; no socket passed "
        "by systemd (LISTEN_FDS is not set); no fd holder given")
    zero.close()
    pipe = walk("api", systemd=False, stdin=subprocess.PIPE)
    assert pipe["error"].startswith("NoSocket 100: no listening socket: fd 0 is not a socket; ")


def test_the_api_chooses_among_systemds_sockets_by_name_and_closes_the_others(sockdir: str) -> None:
    out = walk("api", [f"listen:{sockdir}/a", f"listen:{sockdir}/b"], options=["--names", "a:b"],
               kwargs={"name": "b"})
    assert out["source"] == "systemd" and out["fd0"] == f"{sockdir}/b" and out["fd0_inheritable"]
    assert out["open"] == [] and out["environ"] == []
    ambiguous = walk("api", [f"listen:{sockdir}/a", f"listen:{sockdir}/b"])
    assert ambiguous["error"].startswith("BadInput 100: 2 listening Unix stream sockets were passed")


START = r"""
import os
from s6ipc.base.messages import Reporter
from s6ipc.serve import intake, loop

def refuse(*args):
    raise SystemExit("Server.start checked fd 0 again")

intake.take_daemon_socket(print)
loop.check_listening_stream = refuse
server = loop.Server(loop.ServerConfig(["true"]), Reporter("t"), Reporter("t (child)"))
server.start(checked=True)
os.write(2, b"started %r\n" % os.get_inheritable(0))  # fd 1 is /dev/null now (no -1)
"""


def test_the_loop_does_not_repeat_the_intakes_check(sockdir: str) -> None:
    result = subprocess.run([VENV_PYTHON, PASSFDS, f"listen:{sockdir}/sd", "--", VENV_PYTHON, "-c", START],
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert result.stderr.decode() == "started False\n"
