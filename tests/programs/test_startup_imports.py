"""What our programs import before they are ready (issue 17, point 5: start-up).

Some facts this test relies on:

* ``python -X importtime`` writes one line per module to stderr (fd 2) the first time the module
  is imported, unbuffered, before the importing code goes on. With stdout and stderr on one
  pipe, every module imported before the program's first output line (the ``-1`` readiness line,
  or the line of the program it execs) comes before that line in the pipe.
* pip's console script (the ``s6ipc`` file) itself starts with ``import re`` (pip's template, not
  ours), and a module is listed only at its first import, so under the script an ``import re``
  of ours would be invisible. The test therefore runs ``python -X importtime -m s6ipc NAME …``
  with the venv's interpreter: a spelling of our entry point that the in-process chain
  recognises (:func:`s6ipc.chain.entry.own_program`), which imports nothing that we forbid.
* ``-X importtime`` times the ``import`` statement (the C import path): a module loaded through
  :func:`importlib.import_module` (which s6ipc uses only for its own modules: the program
  modules, the lazy ``s6ipc.X`` names) is not listed itself, but everything *it* imports is.
  Which program ran is therefore seen in a module only that program imports.
* A bare ``python -X importtime -c pass`` with the same interpreter lists what the interpreter
  imports at every start (``site``, ``encodings``, …): we judge only what a program adds to it.

For each program: none of ``typing``, ``dataclasses``, ``inspect``, ``re``, ``ctypes`` and no
optional dependency (``systemd``, ``uvicorn``) — nothing outside the standard library but s6ipc —
is imported before it is ready. Those cost milliseconds at every ``s6ipc NAME`` call and at every
in-place upgrade's pause (bench/run.py ``--case startup`` measures the whole start).

The super-servers' chains (``ipcserver``, ``tcpserver``: binder, ids, daemon) and the programs that
only pass descriptors (``applyuidgid``, ``listen-fds``) do not import ``enum`` either: ``socket.py``
and ``signal.py`` build IntEnums at import (``IntEnum._convert_`` over the C module's constants) and
import ``enum`` for them, which with ``selectors`` costs about as much as the interpreter's own start;
those programs use the C halves ``_socket`` and ``_signal`` (plain ints, the same calls) instead.
``socket.socket`` is created only by Python APIs that hand one out (``connect_unix``,
``listening_socket``) and by clients, so ``ipcclient`` (:func:`s6ipc.sockets.unix.connect_unix`)
and ``fdholder-daemon`` (whose server keeps ``socket.socket`` objects) still import it.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Set

import pytest

from tests.support.processes import scratch_dir

FORBIDDEN = {"typing", "dataclasses", "inspect", "re", "ctypes", "systemd", "uvicorn"}
#: What the chains and descriptor-passing programs leave out besides (see the module docstring).
NO_ENUM = FORBIDDEN | {"enum", "socket", "signal", "selectors"}
TIMEOUT = 30.0


def _modules(lines: Sequence[str]) -> List[str]:
    """The module names of ``-X importtime`` lines, in import order."""
    names = []
    for line in lines:
        if not line.startswith("import time:"):
            continue
        name = line.rsplit("|", 1)[1].strip()
        if name != "imported package":  # the header line
            names.append(name)
    return names


def imports_before_output(argv: Sequence[str], env: Optional[Dict[str, str]] = None,
                          stdin: int = subprocess.DEVNULL) -> List[str]:
    """Modules imported by ``python -X importtime -m s6ipc *argv*`` before its first output line
    (which must come within TIMEOUT seconds); the process is then stopped."""
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "s6ipc", *argv], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    lines: List[str] = []
    data = b""
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            while b"\n" in data:
                line, data = data.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                if not text.startswith("import time:"):
                    return _modules(lines)
                lines.append(text)
            left = deadline - time.monotonic()
            assert left > 0, f"no output line from {list(argv)} in {TIMEOUT} s"
            if select.select([proc.stdout], [], [], left)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"{list(argv)} exited without an output line: {data!r}"
                data += chunk
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.fixture(scope="module")
def bare_start() -> Set[str]:
    """What the interpreter imports at any start (``-c pass``)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True,
                         text=True, check=True)
    modules = set(_modules(out.stderr.splitlines()))
    if modules & FORBIDDEN:  # a sitecustomize, a .pth file: nothing of ours could be judged
        pytest.skip(f"this interpreter imports {sorted(modules & FORBIDDEN)} at every start")
    return modules


@pytest.fixture(scope="module")
def interpreter_start(bare_start: Set[str]) -> Set[str]:
    """:func:`bare_start` and what ``-m`` itself imports (runpy and its own imports: on Python 3.9
    these include typing, re and enum, through importlib.util, so there only the console script's
    start could show ours; the rest is judged all the same)."""
    run_m = subprocess.run([sys.executable, "-X", "importtime", "-m", "__hello__"], capture_output=True,
                           text=True, check=True)  # a frozen module of every CPython: runpy's cost alone
    return bare_start | set(_modules(run_m.stderr.splitlines()))


@pytest.fixture
def workdir() -> Iterator[str]:
    with scratch_dir("s6st") as d:
        yield d


def outside_stdlib(modules: Sequence[str]) -> List[str]:
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:  # Python 3.9: only the explicit list is checked
        return []
    return [m for m in modules if m.split(".")[0] not in stdlib and m.split(".")[0] != "s6ipc"]


def check(added: List[str], forbidden: Set[str] = NO_ENUM) -> None:
    bad = [m for m in added if m.split(".")[0] in forbidden]
    assert not bad, f"imported before ready: {bad}"
    foreign = outside_stdlib(added)
    assert not foreign, f"imported before ready, not in the standard library: {foreign}"


def added_by(argv: Sequence[str], start: Set[str], env: Optional[Dict[str, str]] = None,
             stdin: int = subprocess.DEVNULL) -> List[str]:
    return [m for m in imports_before_output(argv, env, stdin) if m not in start]


def other_gid() -> int:
    """A group to change to (root only: 0 means "unchanged" to s6, and others cannot change)."""
    if os.geteuid() != 0:
        pytest.skip("changing ids needs root")
    return 65534


def without_ctypes(modules: List[str]) -> List[str]:
    """*modules* but ctypes: imported, before the ids change, for the dumpable flag
    (:func:`s6ipc.base.privileges.dumpable_as_after_exec`) — only when ids change."""
    assert "ctypes" in modules
    return [m for m in modules if m.split(".")[0] not in ("ctypes", "_ctypes")]


def test_ipcserver_chain(interpreter_start: Set[str], workdir: str) -> None:
    added = added_by(["ipcserver", "-1", os.path.join(workdir, "s"), "cat"], interpreter_start)
    # the whole chain ran in this process, up to the daemon's readiness line
    assert {"s6ipc.sockets.unix", "s6ipc.serve.loop"} <= set(added)  # the binder's and ipcserverd's
    check(added)


def test_ipcserver_chain_with_ids(interpreter_start: Set[str], workdir: str) -> None:
    gid = str(other_gid())
    os.chmod(workdir, 0o755)
    added = added_by(["ipcserver", "-1", "-g", gid, os.path.join(workdir, "s"), "cat"], interpreter_start)
    assert {"s6ipc.base.privileges", "s6ipc.serve.loop"} <= set(added)  # applyuidgid's and ipcserverd's
    check(without_ctypes(added))


def test_tcpserver_chain(interpreter_start: Set[str]) -> None:
    added = added_by(["tcpserver", "-1", "127.0.0.1", "0", "cat"], interpreter_start)
    assert {"s6ipc.sockets.tcp", "s6ipc.serve.tcppeer"} <= set(added)  # the binder's and tcpserverd's
    check(added)


def test_fdholder_daemon(interpreter_start: Set[str], workdir: str) -> None:
    rules = os.path.join(workdir, "rules", "uid", "default")
    os.makedirs(rules)
    open(os.path.join(rules, "allow"), "w").close()
    argv = ["fdholder-daemon", "-1", "-i", os.path.join(workdir, "rules"), os.path.join(workdir, "f")]
    added = added_by(argv, interpreter_start)
    assert "s6ipc.fdholder.server" in added  # fdholderd's
    check(added, FORBIDDEN)


def test_ipcclient(interpreter_start: Set[str], workdir: str) -> None:
    path = os.path.join(workdir, "s")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        added = added_by(["ipcclient", path, "sh", "-c", "echo connected"], interpreter_start)
    assert "s6ipc.sockets.unix" in added  # ipcclient's
    check(added, FORBIDDEN)


def test_applyuidgid(interpreter_start: Set[str]) -> None:
    added = added_by(["applyuidgid", "-g", str(other_gid()), "sh", "-c", "echo changed"], interpreter_start)
    assert "s6ipc.base.privileges" in added  # applyuidgid's
    check(without_ctypes(added))


def test_applyuidgid_unchanged_ids(interpreter_start: Set[str]) -> None:
    added = added_by(["applyuidgid", "sh", "-c", "echo unchanged"], interpreter_start)
    assert "s6ipc.base.privileges" in added  # applyuidgid's
    check(added)  # no id to change: not even ctypes


def test_listen_fds(interpreter_start: Set[str], workdir: str) -> None:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(os.path.join(workdir, "s"))
        listener.listen(1)
        argv = ["listen-fds", "sh", "-c", "echo passed"]
        added = added_by(argv, interpreter_start, stdin=listener.fileno())
    assert "s6ipc.sockets.give" in added  # listen-fds'
    check(added)


def test_the_check_sees_a_forbidden_import(bare_start: Set[str]) -> None:
    """The parse is not blind: a run that does import dataclasses is caught."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import dataclasses; print('ready')"],
                          capture_output=True, text=True, check=True)
    added = [m for m in _modules(proc.stderr.splitlines()) if m not in bare_start]
    with pytest.raises(AssertionError, match="dataclasses"):
        check(added)


def test_the_check_sees_enum(bare_start: Set[str]) -> None:
    """``import socket`` brings enum (and is itself refused for the chains), which the check sees."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import socket; print('ready')"],
                          capture_output=True, text=True, check=True)
    added = [m for m in _modules(proc.stderr.splitlines()) if m not in bare_start]
    assert "enum" in added
    with pytest.raises(AssertionError, match="enum"):
        check(added)
    check(added, FORBIDDEN)  # the programs that may still import socket
