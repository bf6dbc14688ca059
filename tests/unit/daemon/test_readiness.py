"""s6ipc.daemon.readiness: sd_notify messages, fd passing, credentials, the watchdog, the notification fd.

The manager side is a real AF_UNIX datagram socket with SO_PASSCRED, as systemd's is: what it
receives (bytes, SCM_RIGHTS fds, SCM_CREDENTIALS) is compared between the standard-library path and
python-systemd (libsystemd), which must agree.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pwd
import subprocess
import tempfile
from typing import Iterator, List, Optional

import pytest

from s6ipc.base import systemd_backend
from s6ipc.base.errors import BadInput, SystemFailure
from s6ipc.daemon import readiness
from tests.support.peers import Manager, Message
from tests.support.processes import VENV_PYTHON, needs_reachable_interpreter

try:
    import systemd.daemon  # noqa: F401

    HAVE_PYTHON_SYSTEMD = True
except ImportError:  # pragma: no cover
    HAVE_PYTHON_SYSTEMD = False

needs_python_systemd = pytest.mark.skipif(not HAVE_PYTHON_SYSTEMD, reason="python-systemd not installed")
BACKENDS = ["stdlib", pytest.param("python-systemd", marks=needs_python_systemd)]


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest) -> Iterator[Manager]:
    if request.param == "path":
        d = tempfile.mkdtemp(prefix="s6tn", dir="/tmp")
        m = Manager(f"{d}/notify")
    else:
        m = Manager(f"@s6ipc-test-notify-{os.getpid()}")
    try:
        yield m
    finally:
        m.close()
        if request.param == "path":
            os.rmdir(d)


def _inode(fd: int) -> int:
    return os.fstat(fd).st_ino


def exchange(manager: Manager, backend: str) -> List[Message]:
    """Every kind of message the library sends, through *backend*; what the manager received."""
    n = readiness.Notifier(manager.address, backend=backend)
    r, w = os.pipe()
    try:
        assert n.ready("serving h\u00e9llo \u2713") is True
        n.status("status only")
        n.stopping()
        n.reloading("reloading")
        n.mainpid(4242)
        n.watchdog()
        n.store_fds("ipc", [r, w])
        n.store_fds("state", [r], poll=False)
        n.remove_stored("ipc")
        n.send("READY=1", "X_CUSTOM=1")
    finally:
        os.close(r)
        os.close(w)
    return [manager.get() for _ in range(10)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_message_arrives_as_sd_notify_says(manager: Manager, backend: str) -> None:
    got = exchange(manager, backend)
    texts = [m.text for m in got]
    assert texts[:3] == ["READY=1\nSTATUS=serving h\u00e9llo \u2713", "STATUS=status only", "STOPPING=1"]
    reload_fields = texts[3].split("\n")
    assert reload_fields[0] == "RELOADING=1" and reload_fields[2] == "STATUS=reloading"
    usec = int(reload_fields[1].removeprefix("MONOTONIC_USEC="))
    assert 0 <= readiness.monotonic_usec() - usec < 5_000_000
    assert texts[4:] == ["MAINPID=4242", "WATCHDOG=1", "FDSTORE=1\nFDNAME=ipc",
                         "FDSTORE=1\nFDNAME=state\nFDPOLL=0", "FDSTOREREMOVE=1\nFDNAME=ipc",
                         "READY=1\nX_CUSTOM=1"]
    assert [len(m.fds) for m in got] == [0, 0, 0, 0, 0, 0, 2, 1, 0, 0]
    assert all(m.pid == os.getpid() and m.uid == os.getuid() for m in got)
    for m in got:
        for fd in m.fds:
            os.close(fd)


@needs_python_systemd
def test_both_paths_send_the_same_bytes_and_the_same_files(manager: Manager) -> None:
    a, b = exchange(manager, "stdlib"), exchange(manager, "python-systemd")
    def strip(ms: List[Message]) -> List[str]:
        return [m.text.split("\nMONOTONIC_USEC=")[0] for m in ms]

    assert strip(a) == strip(b)
    assert [len(m.fds) for m in a] == [len(m.fds) for m in b]
    for x, y in zip(a, b):
        assert [os.fstat(fd).st_mode for fd in x.fds] == [os.fstat(fd).st_mode for fd in y.fds]
        for fd in x.fds + y.fds:
            os.close(fd)
        assert (x.pid, x.uid) == (y.pid, y.uid)


CLAIM = r"""
import os, sys
from s6ipc.daemon import readiness
readiness.Notifier(sys.argv[1], backend=sys.argv[2]).send("READY=1", pid=int(sys.argv[3]))
print(os.getpid())
"""


def _claim(manager: Manager, backend: str, pid: int, user: Optional[str] = None) -> tuple[int, int]:
    kw = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        kw = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    out = subprocess.run([VENV_PYTHON, "-c", CLAIM, manager.address, backend, str(pid)], capture_output=True,
                         timeout=20, check=True, **kw)  # type: ignore[call-overload]
    return int(out.stdout), manager.get().pid


@pytest.mark.skipif(os.geteuid() != 0, reason="claiming another pid needs root (CAP_SYS_ADMIN)")
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_privileged_sender_speaks_for_the_main_pid(manager: Manager, backend: str) -> None:
    sender, seen = _claim(manager, backend, os.getpid())
    assert seen == os.getpid() != sender


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the sender as nobody")
@pytest.mark.parametrize("backend", BACKENDS)
@needs_reachable_interpreter
def test_an_unprivileged_claim_falls_back_to_the_own_pid(manager: Manager, backend: str) -> None:
    if manager.address.startswith("/"):
        os.chmod(os.path.dirname(manager.address), 0o755)
        os.chmod(manager.address, 0o777)
    sender, seen = _claim(manager, backend, 1, user="nobody")
    assert seen == sender != 1


@pytest.mark.parametrize("address,code", [
    ("x", "EINVAL"), ("@", "EINVAL"), ("/nonexistent-s6ipc/notify", "ENOENT"),
    ("@s6ipc-nobody-listens-here", "ECONNREFUSED"), ("/" + "a" * 107, "ENAMETOOLONG"),
    ("@" + "a" * 107, "EINVAL"),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_send_errors_are_the_same_on_both_paths(address: str, code: str, backend: str) -> None:
    """The same errno whichever backend sends, except where the errno is libsystemd's own: it parses
    the address itself, and libsystemd 257 (Debian 13) answers EPROTO for a relative name where 252
    (Debian 12) and the standard-library path answer EINVAL."""
    with pytest.raises(SystemFailure) as info:
        readiness.Notifier(address, backend=backend).ready()
    accepted = {code, "EPROTO"} if backend == "python-systemd" and address == "x" else {code}
    assert errno.errorcode[info.value.errno] in accepted
    assert str(info.value).startswith(f"unable to notify {address}: ")


def test_no_address_means_nothing_to_do_and_bad_input_is_refused() -> None:
    assert readiness.Notifier(None).ready() is False
    assert readiness.Readiness().ready() is None
    with pytest.raises(BadInput):
        readiness.Notifier("@x").send("STATUS=a\0b")
    for name in ("", "a:b", "a b", "\u00e9", "x" * 256):
        with pytest.raises(BadInput):
            readiness.Notifier("@x").store_fds(name, [0])


def test_from_environment_takes_the_variables_out_of_both_environments(
        monkeypatch: pytest.MonkeyPatch) -> None:
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    monkeypatch.setenv("NOTIFY_SOCKET", "@s6ipc-test")
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    r = readiness.Readiness.from_environment(backend="stdlib")
    assert r.notifier.address == "@s6ipc-test" and r.watchdog_interval == 3.0
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ and libc.getenv(name.encode()) is None


@pytest.mark.parametrize("usec,pid,expected", [
    ("2000000", None, 2.0), ("500", "self", 0.0005), ("2000000", "1", None), (None, None, None),
    ("0", None, "bad"), ("-5", None, "bad"), ("abc", None, "bad"), ("", None, "bad"),
])
def test_watchdog_interval(usec: Optional[str], pid: Optional[str], expected: object) -> None:
    env = {}
    if usec is not None:
        env["WATCHDOG_USEC"] = usec
    if pid is not None:
        env["WATCHDOG_PID"] = str(os.getpid()) if pid == "self" else pid
    if expected == "bad":
        with pytest.raises(BadInput, match="invalid WATCHDOG_USEC"):
            readiness.watchdog_interval(env)
    else:
        assert readiness.watchdog_interval(env) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_event_reaches_every_sink_once(manager: Manager, backend: str) -> None:
    r, w = os.pipe()
    sinks = readiness.Readiness(readiness.Notifier(manager.address, backend=backend), notification_fd=w)
    sinks.ready("up")
    assert os.read(r, 10) == b"\n" and os.read(r, 10) == b""  # the newline, then EOF: fd closed
    assert manager.get().text == "READY=1\nSTATUS=up"
    sinks.ready("again")  # a second READY (after a reload) goes to systemd only
    assert manager.get().text == "READY=1\nSTATUS=again"
    os.close(r)


def test_sdnotify_mangles_non_ascii_status_where_we_send_utf8(manager: Manager) -> None:
    """Why sdnotify is a test peer only (L10): it encodes Latin-1 and swallows what it cannot."""
    sdnotify = pytest.importorskip("sdnotify")
    os.environ["NOTIFY_SOCKET"] = manager.address
    try:
        client = sdnotify.SystemdNotifier()
        client.notify("STATUS=h\u00e9llo")
        client.notify("STATUS=h\u00e9llo \u2713")  # UnicodeEncodeError, silently dropped
    finally:
        del os.environ["NOTIFY_SOCKET"]
    assert manager.get().text.encode("utf-8", "surrogateescape") == b"STATUS=h\xe9llo"
    assert manager.empty()
    readiness.Notifier(manager.address, backend="stdlib").status("h\u00e9llo \u2713")
    assert manager.get().text == "STATUS=h\u00e9llo \u2713"


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S6IPC_SYSTEMD_BACKEND", "stdlib")
    assert systemd_backend.choose() == "stdlib"
    monkeypatch.setenv("S6IPC_SYSTEMD_BACKEND", "nonsense")
    with pytest.raises(BadInput, match="invalid S6IPC_SYSTEMD_BACKEND"):
        systemd_backend.choose()
    monkeypatch.delenv("S6IPC_SYSTEMD_BACKEND")
    assert systemd_backend.choose() == ("python-systemd" if HAVE_PYTHON_SYSTEMD else "stdlib")


def test_spawn_detached_leaves_no_child_and_keeps_only_what_it_is_told(tmp_path: object) -> None:
    r, w = os.pipe()
    extra_r, extra_w = os.pipe()

    def work() -> int:
        alive = sorted(int(n) for n in os.listdir("/proc/self/fd"))
        os.write(w, (" ".join(map(str, alive)) + f" {os.getppid()}").encode())
        return 0

    readiness.spawn_detached(work, keep=(w,))
    os.close(w)
    report = os.read(r, 1000).decode().split()
    os.close(r)
    os.close(extra_r)
    os.close(extra_w)
    fds, parent = [int(x) for x in report[:-1]], int(report[-1])
    assert parent != os.getpid()  # orphaned: not our child, so never our zombie
    assert w in fds and len(set(fds) - {0, 1, 2, w}) == 1  # w, and the fd os.listdir used
    assert extra_r not in fds and extra_w not in fds and r not in fds
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
