"""s6ipc.base.systemd_backend: choosing the path, and the python-systemd (libsystemd) calls when it
is installed (the test venv installs it where libsystemd's headers are there to build it).

The python-systemd cases run in a child: libsystemd reads the C environment, which the test process
leaves alone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from s6ipc.base import systemd_backend as backend
from s6ipc.base.errors import BadInput

installed = pytest.mark.skipif(not backend.available(), reason="python-systemd is not installed")


def test_the_names() -> None:
    assert (backend.STDLIB, backend.LIBSYSTEMD, backend.BACKEND_VARIABLE) == (
        "stdlib", "python-systemd", "S6IPC_SYSTEMD_BACKEND")


def test_stdlib_is_always_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(backend.BACKEND_VARIABLE, raising=False)
    assert backend.choose("stdlib") == "stdlib"
    monkeypatch.setenv(backend.BACKEND_VARIABLE, "stdlib")
    assert backend.choose() == "stdlib"


def test_auto_takes_python_systemd_when_it_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(backend.BACKEND_VARIABLE, raising=False)
    expected = "python-systemd" if backend.available() else "stdlib"
    assert backend.choose() == expected
    assert backend.choose("auto") == expected
    monkeypatch.setenv(backend.BACKEND_VARIABLE, "")   # empty: the default
    assert backend.choose() == expected


def test_the_argument_wins_over_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backend.BACKEND_VARIABLE, "bogus")
    assert backend.choose("stdlib") == "stdlib"
    with pytest.raises(BadInput) as e:
        backend.choose()
    assert str(e.value) == "invalid S6IPC_SYSTEMD_BACKEND: bogus (stdlib, python-systemd or auto)"
    assert e.value.exit_code == 100


def test_python_systemd_without_it_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "_module", None)   # as if the import had failed
    assert backend.available() is False
    assert backend.choose("auto") == "stdlib"
    with pytest.raises(BadInput) as refused:
        backend.choose("python-systemd")
    assert str(refused.value) == "python-systemd is not installed (pip install 's6ipc[systemd]')"
    with pytest.raises(OSError) as e:
        backend.listen_fds_with_names()
    assert e.value.errno == 38
    with pytest.raises(OSError):
        backend.notify("/run/x", "READY=1")


def _child(code: str, **kw: Any) -> Any:
    prelude = "import json, os, socket\nfrom s6ipc.base import systemd_backend as b\n"
    out = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=20, **kw)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@installed
def test_python_systemd_is_chosen_by_name() -> None:
    assert backend.choose("python-systemd") == "python-systemd"


@installed
def test_listen_fds_with_names_reads_without_unsetting() -> None:
    got = _child("""
        a, c = socket.socketpair()
        os.dup2(a.fileno(), 3); os.dup2(c.fileno(), 4)
        os.environ.update(LISTEN_FDS="2", LISTEN_FDNAMES="web:admin", LISTEN_PID=str(os.getpid()))
        os.putenv("LISTEN_PID", str(os.getpid()))
        print(json.dumps([b.listen_fds_with_names(), os.environ.get("LISTEN_FDS"),
                          os.getenv("LISTEN_FDNAMES")]))
    """, env={**os.environ, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:admin", "LISTEN_PID": "1"})
    assert got == [[[3, "web"], [4, "admin"]], "2", "web:admin"]


@installed
def test_listen_fds_for_another_pid_are_not_ours() -> None:
    got = _child("print(json.dumps(b.listen_fds_with_names()))",
                 env={**os.environ, "LISTEN_FDS": "1", "LISTEN_PID": "1"})
    assert got == []


@installed
def test_notify_sends_to_the_address_and_leaves_the_c_environment_as_it_was(sockdir: str) -> None:
    path = os.path.join(sockdir, "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(5)
    try:
        got = _child(f"""
            import ctypes
            getenv = ctypes.CDLL(None).getenv
            getenv.restype = ctypes.c_char_p
            r, w = os.pipe()
            sent = b.notify({path!r}, "READY=1\\nSTATUS=up", fds=[r])
            print(json.dumps([sent, getenv(b"NOTIFY_SOCKET") is None, "NOTIFY_SOCKET" in os.environ]))
        """, env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"})
        data, ancillary, _, _ = receiver.recvmsg(4096, socket.CMSG_SPACE(64))
    finally:
        receiver.close()
    assert got == [True, True, False]
    assert data == b"READY=1\nSTATUS=up"
    assert [(level, kind) for level, kind, _ in ancillary] == [(socket.SOL_SOCKET, socket.SCM_RIGHTS)]
    for _, _, payload in ancillary:
        for i in range(0, len(payload) - len(payload) % 4, 4):
            os.close(int.from_bytes(payload[i:i + 4], sys.byteorder))


@installed
def test_notify_puts_back_a_previous_c_value(sockdir: str) -> None:
    path = os.path.join(sockdir, "n2")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    try:
        got = _child(f"""
            import ctypes
            getenv = ctypes.CDLL(None).getenv
            getenv.restype = ctypes.c_char_p
            sent = b.notify({path!r}, "WATCHDOG=1")
            print(json.dumps([sent, getenv(b"NOTIFY_SOCKET").decode()]))
        """, env={**os.environ, "NOTIFY_SOCKET": "/run/elsewhere"})
        assert receiver.recv(100) == b"WATCHDOG=1"
    finally:
        receiver.close()
    assert got == [True, "/run/elsewhere"]


@installed
def test_notify_to_nowhere_raises() -> None:
    got = _child("""
        try:
            b.notify("/nonexistent/notify", "READY=1")
            print(json.dumps(None))
        except OSError as e:
            print(json.dumps(e.errno))
    """)
    assert got == 2  # ENOENT, made positive
