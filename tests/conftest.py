"""Shared fixtures. The helpers they stand on live in tests/support/ (imported normally)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable, Iterator, List, Optional, Sequence

import pytest

from tests.support.processes import C_SOURCES, IMPLEMENTATIONS, Client, RunningServer, run, scratch_dir
from tests.support.restart_load import rundir  # noqa: F401  (the restart harness's run directory)
from tests.support.s6 import scan  # noqa: F401  (the s6 supervision tree fixture)
from tests.support.systemd_manager import user_manager  # noqa: F401  (a real systemd manager)
from tests.support.tcp import TcpServer


@pytest.fixture(params=["ours", "s6"])
def impl(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Parametrise a test over both implementations: ``impl("ipcserver")`` gives the argv prefix."""
    return IMPLEMENTATIONS[request.param]



@pytest.fixture
def servers() -> Iterator[List[TcpServer]]:
    """TCP servers a test starts (appended to the list), stopped at its end."""
    started: List[TcpServer] = []
    yield started
    for s in started:
        s.stop()


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short private directory for socket files (sun_path holds 107 bytes), readable by all."""
    with scratch_dir("s6t", mode=0o755) as d:
        yield d



@pytest.fixture
def server_factory() -> Iterator:  # type: ignore[type-arg]
    """Start servers with ``server_factory(argv, ...)``; all are stopped at teardown."""
    started: List[RunningServer] = []

    def start(argv: Sequence[str], **kw) -> RunningServer:  # type: ignore[no-untyped-def]
        s = RunningServer(argv, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()



@pytest.fixture(scope="session")
def cbin() -> Iterator[str]:
    """A world-readable directory with the C test helpers, built once per session with gcc.

    ``handler`` (static; modes in tests/reliability/handler.c) is the per-connection program of the
    server tests, ``client`` the sequential load client. Skips when gcc is missing.
    """
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: apt-get install gcc libc6-dev")
    d = tempfile.mkdtemp(prefix="s6c", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        for name, extra in (("handler", ["-static"]), ("client", [])):
            out = os.path.join(d, name)
            build = run(["gcc", "-O2", *extra, "-o", out, os.path.join(C_SOURCES, name + ".c")], timeout=120)
            if build.returncode != 0:
                raise AssertionError(f"gcc failed on {name}.c: {build.stderr.decode(errors='replace')}")
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)



@pytest.fixture(scope="session")
def handler(cbin: str) -> str:
    """Path of the static C per-connection handler (see tests/reliability/handler.c)."""
    return os.path.join(cbin, "handler")



@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """``clients(path, bind=None)`` connects a :class:`Client`; all are closed at teardown."""
    made: List[Client] = []

    def connect(path: str, bind: Optional[str] = None) -> Client:
        c = Client(path, bind)
        made.append(c)
        return c

    yield connect
    for c in made:
        c.close()
