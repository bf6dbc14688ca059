"""Every spelling of our programs gets the in-process chain and the ipcserver-access fast path.

``s6ipc NAME``, an ``s6-NAME`` (or ``NAME``) link from ``s6ipc links`` found through PATH, a path
to such a link, another path to the ``s6ipc`` script: the server is started once (one interpreter),
every further stage of the chain runs in that process, and a connection spawns only the final
program. Counted with ``strace -f -e trace=execve`` over the whole process tree: the interpreters
started (successful execs of the ``s6ipc`` script or of a Python binary) must be exactly one, the
handler's execs one per connection. The control, ``python -m s6ipc ipcserver-access`` (a
different command, not our entry script), shows that the count does see per-connection interpreters.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
from typing import Dict, Iterator, List, Tuple

import pytest

from tests.support.access import make_rules
from tests.support.processes import S6IPC, VENV_PYTHON, RunningServer, proc_children, request, run, wait_until

CONNECTIONS = 6


@pytest.fixture
def place() -> Iterator[str]:
    """A directory every user can traverse: links (``bin``, ``names``), another path to the script, rules."""
    d = tempfile.mkdtemp(prefix="s6ln", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        assert run([S6IPC, "links", os.path.join(d, "bin")]).returncode == 0
        os.makedirs(os.path.join(d, "names"))
        os.makedirs(os.path.join(d, "other"))
        for name in ("ipcserver", "ipcserver-access", "ipcserverd", "ipcserver-socketbinder"):
            os.symlink(S6IPC, os.path.join(d, "names", name))
        os.symlink(S6IPC, os.path.join(d, "other", "s6ipc"))
        make_rules(os.path.join(d, "rules"), {f"uid/{os.geteuid()}": {"allow": True}})
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def spellings(d: str) -> Dict[str, Tuple[List[str], List[str], str]]:
    """name → (server words, access words, the name the access stage logs under)."""
    other = os.path.join(d, "other", "s6ipc")
    return {
        "s6ipc NAME": ([S6IPC, "ipcserver"], [S6IPC, "ipcserver-access"], "ipcserver-access"),
        "s6ipc s6-NAME": ([S6IPC, "s6-ipcserver"], [S6IPC, "s6-ipcserver-access"], "s6-ipcserver-access"),
        "links on PATH": (["s6-ipcserver"], ["s6-ipcserver-access"], "s6-ipcserver-access"),
        "paths to links": ([f"{d}/bin/s6-ipcserver"], [f"{d}/bin/s6-ipcserver-access"],
                           "s6-ipcserver-access"),
        "NAME links": ([f"{d}/names/ipcserver"], ["ipcserver-access"], "ipcserver-access"),
        "script by another path": ([other, "s6-ipcserver"], [other, "s6-ipcserver-access"],
                                   "s6-ipcserver-access"),
    }


def env_for(d: str) -> Dict[str, str]:
    return {"PATH": f"{d}/bin:{d}/names:/usr/bin:/bin"}


def parse_execs(trace: str) -> List[str]:
    """The files of the successful execve calls in a ``strace -xx`` trace."""
    files = []
    for line in trace.splitlines():
        m = re.search(r'execve\("((?:\\x[0-9a-f]{2})*)", .*\) = 0$', line)
        if m:
            files.append(os.fsdecode(bytes.fromhex(m.group(1).replace("\\x", ""))))
    return files


def is_interpreter(path: str) -> bool:
    real = os.path.realpath(path)
    return real == os.path.realpath(S6IPC) or os.path.basename(real).startswith("python")


def serve_traced(d: str, server: List[str], access: List[str], handler: str) -> Tuple[List[str], str]:
    """Run ``SERVER -v -1 PATH ACCESS -v2 -i RULES handler ok`` under strace for CONNECTIONS clients.

    Returns (files exec'd, the server's log).
    """
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed: apt-get install strace")
    path = os.path.join(d, "s")
    trace = os.path.join(d, "trace")
    argv = ["strace", "-f", "-qq", "-xx", "-e", "trace=execve", "-e", "signal=none", "-o", trace,
            *server, "-v", "-1", path, *access, "-v2", "-i", os.path.join(d, "rules"), handler, "ok"]
    srv = RunningServer(argv, env=env_for(d))
    try:
        for _ in range(CONNECTIONS):
            assert request(path) == b"ok\n"
        daemon = wait_until(lambda: proc_children(srv.proc.pid))[0]
        wait_until(lambda: not proc_children(daemon))
        os.kill(daemon, signal.SIGTERM)
        assert srv.wait() == 0
        log = srv.log()
    finally:
        srv.stop()
    with open(trace) as f:
        return parse_execs(f.read()), log


@pytest.mark.parametrize("spelling", ["s6ipc NAME", "s6ipc s6-NAME", "links on PATH", "paths to links",
                                      "NAME links", "script by another path"])
def test_one_interpreter_whatever_the_spelling(place: str, handler: str, spelling: str) -> None:
    server, access, logs_as = spellings(place)[spelling]
    files, log = serve_traced(place, server, access, handler)
    interpreters = [f for f in files if is_interpreter(f)]
    assert len(interpreters) == 1, files  # the server itself; every stage and every decision in-process
    assert [f for f in files if f == handler] == [handler] * CONNECTIONS, files
    allows = [line for line in log.splitlines() if ": info: allow pid " in line]
    assert len(allows) == CONNECTIONS
    assert all(line.startswith(f"{logs_as}: info: allow pid ") for line in allows), allows
    daemon_name = "s6-ipcserverd" if logs_as.startswith("s6-") else "ipcserverd"
    assert f"\n{daemon_name}: info: end pid " in "\n" + log, log


def test_the_count_sees_per_connection_interpreters(place: str, handler: str) -> None:
    """The control: ``python -m s6ipc ipcserver-access`` is not our entry script: one per connection."""
    files, log = serve_traced(place, ["s6-ipcserver"], [VENV_PYTHON, "-m", "s6ipc", "s6-ipcserver-access"],
                              handler)
    assert len([f for f in files if is_interpreter(f)]) == 1 + CONNECTIONS, files
    assert log.count("s6-ipcserver-access: info: allow pid ") == CONNECTIONS


def test_stages_named_through_links_run_in_process(place: str, handler: str) -> None:
    """An s6 run script's chain, stage by stage (socketbinder → ipcserverd) on links: one interpreter."""
    path = os.path.join(place, "s")
    trace = os.path.join(place, "trace")
    argv = ["strace", "-f", "-qq", "-xx", "-e", "trace=execve", "-e", "signal=none", "-o", trace,
            "sh", "-c", f"exec s6-ipcserver-socketbinder {path} s6-ipcserverd -1 -v2 {handler} ok"]
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed: apt-get install strace")
    srv = RunningServer(argv, env=env_for(place))
    try:
        assert request(path) == b"ok\n"
        daemon = wait_until(lambda: proc_children(srv.proc.pid))[0]
        with open(f"/proc/{daemon}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
        assert cmdline[1] == os.fsencode(f"{place}/bin/s6-ipcserver-socketbinder")  # the first stage, still
        os.kill(daemon, signal.SIGTERM)
        srv.wait()
        assert srv.log().startswith("s6-ipcserverd: info: ")
    finally:
        srv.stop()
    with open(trace) as f:
        files = parse_execs(f.read())
    assert [f for f in files if is_interpreter(f)] == [f"{place}/bin/s6-ipcserver-socketbinder"], files
