"""Environments CPython cannot represent — an entry with an empty name (``=x``), entries without
``=``, a name given twice, bytes that are not UTF-8 — passed on exactly, side by side with s6,
at every spawn (ipcserverd, its access fast path) and every exec (the chain stages)."""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Callable, Iterator, List

import pytest

from tests.support import hostile
from tests.support.processes import S6IPC, installed_s6, stop_process, theirs, wait_for_ready

BINDER = "/usr/bin/s6-ipcserver-socketbinder"
ODD = [b"=x", b"NOEQ", b"A=1", b"A=2", b"B=\xff\xfe", b"\xff=1", b"C=a=b", b"==", b"=y=z"]
BASE = [b"PATH=/usr/bin:/bin"]
ENTRIES = BASE + ODD


def ours(name: str) -> List[str]:
    return [S6IPC, name]


IMPLS = {"ours": ours, "s6": lambda name: theirs(name)}


@pytest.fixture
def serve(sockdir: str) -> Iterator[Callable[..., bytes]]:
    """Start ``BINDER path <stage argv>`` with the odd environment, connect once, return the output.
    Both sides get ``S6IPC_S6`` (first) naming the installed s6's line, so that ours counts
    IPCCONNNUM as the s6 it is compared with."""
    procs: List[subprocess.Popen[bytes]] = []

    def go(name: str, argv: List[str]) -> bytes:
        path = os.path.join(sockdir, name)
        r, w = os.pipe()
        line = b"S6IPC_S6=" + installed_s6().name.encode()
        proc = hostile.popen([BINDER, path, *argv], [line, *ENTRIES], stdout=w, stdin=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        procs.append(proc)
        os.close(w)
        try:
            wait_for_ready(r)
        finally:
            os.close(r)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(path)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert proc.poll() is None, "the daemon died serving the client"
        return data

    yield go
    for proc in procs:
        stop_process(proc)


def entries_of(output: bytes) -> List[bytes]:
    return output.split(b"\n")[:-1]


def test_ipcserverd_spawns_with_the_exact_environment(serve) -> None:  # type: ignore[no-untyped-def]
    seen = {impl: serve(impl, [*IMPLS[impl]("ipcserverd"), "-1", "/usr/bin/env"]) for impl in IMPLS}
    assert seen["ours"] == seen["s6"]
    for entry in ODD:
        assert entry in entries_of(seen["ours"])


def test_access_fast_path_merges_rule_env_as_env_merge(serve, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """env_merge's rules, on the exact array: a rule setting A removes the *first* A entry only
    (the last entry takes its place) and appends A=new; an entry without ``=`` is never matched
    by a name; the -E removals then move entries again. Same bytes, same order as s6."""
    rules = tmp_path / "rules"
    (rules / "uid" / str(os.getuid()) / "env").mkdir(parents=True)
    (rules / "uid" / str(os.getuid()) / "allow").touch()
    (rules / "uid" / str(os.getuid()) / "env" / "A").write_bytes(b"new\n")
    (rules / "uid" / str(os.getuid()) / "env" / "NOEQ").write_bytes(b"set\n")
    seen = {}
    for impl in IMPLS:
        stage = IMPLS[impl]
        seen[impl] = serve(impl, [*stage("ipcserverd"), "-1", *stage("ipcserver-access"), "-v0", "-E",
                                  "-i", str(rules), "/usr/bin/env"])
    assert seen["ours"] == seen["s6"]
    got = entries_of(seen["ours"])
    assert b"A=new" in got and b"A=1" not in got and b"A=2" in got
    assert b"NOEQ=set" in got and b"NOEQ" in got and b"=x" in got


@pytest.mark.parametrize("argv", [
    ["applyuidgid", "-u", "0", "-g", "0"],
    ["ipcserver-access", "-E"],
    ["ipcserver-socketbinder", "SOCKET"],
], ids=["applyuidgid", "ipcserver-access", "ipcserver-socketbinder"])
def test_exec_stages_pass_the_exact_environment(argv: List[str], sockdir: str) -> None:
    env = ENTRIES + [b"PROTO=IPC", b"IPCREMOTEEUID=0", b"IPCREMOTEEGID=0"]
    seen = {}
    for impl in IMPLS:
        args = [os.path.join(sockdir, impl) if a == "SOCKET" else a for a in argv[1:]]
        result = hostile.run([*IMPLS[impl](argv[0]), *args, "/usr/bin/env"], env)
        assert result.returncode == 0, result.stderr
        assert b"Traceback" not in result.stderr
        seen[impl] = result.stdout
    assert seen["ours"] == seen["s6"]
    for entry in ODD:
        assert entry in entries_of(seen["ours"])


def test_python_stages_in_one_process_then_a_foreign_exec() -> None:
    """Our chain runs its own stages in one process and execs only the foreign program: the
    environment must still arrive exactly, through applyuidgid then ipcserver-access."""
    env = ENTRIES + [b"PROTO=IPC", b"IPCREMOTEEUID=0", b"IPCREMOTEEGID=0"]
    result = hostile.run([S6IPC, "applyuidgid", "-u", "0", "s6-ipcserver-access", "-E", "/usr/bin/env"],
                         env)
    assert result.returncode == 0, result.stderr
    reference = hostile.run(["/usr/bin/s6-applyuidgid", "-u", "0", "s6-ipcserver-access", "-E",
                             "/usr/bin/env"], env)
    assert result.stdout == reference.stdout
