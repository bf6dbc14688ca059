"""upgrade: the state across execve (memfd + $S6IPC_HANDOFF), descriptors and the signal mask kept,
the preflight of the installed code, the command line of the next image."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

from s6ipc.base import execution
from s6ipc.base.errors import Unusable
from s6ipc.base.execution import installed_prefix
from s6ipc.daemon import upgrade
from tests.support.processes import S6IPC, VENV_PYTHON

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(upgrade.__file__))))


@pytest.fixture
def no_handoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(upgrade.HANDOFF_VARIABLE, raising=False)


def _warned() -> Tuple[List[str], Callable[[str], None]]:
    lines: List[str] = []
    return lines, lines.append


def test_state_round_trip_in_process(no_handoff: None) -> None:
    fd = upgrade.write_state({"generation": 3, "children": {"12": [1000, 100]}})
    assert os.environ[upgrade.HANDOFF_VARIABLE] == str(fd)
    assert os.get_inheritable(fd), "the memfd must survive execve"
    assert os.readlink(f"/proc/self/fd/{fd}") == f"/memfd:s6ipc-handoff:{os.getpid()} (deleted)"
    seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
    assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) == seals
    with pytest.raises(PermissionError):
        os.write(fd, b"x")
    lines, warn = _warned()
    assert upgrade.take_state(warn) == {"generation": 3, "children": {"12": [1000, 100]}}
    assert upgrade.HANDOFF_VARIABLE not in os.environ and lines == []
    with pytest.raises(OSError):
        os.fstat(fd)
    assert upgrade.take_state(warn) is None


def test_state_crosses_a_real_execve(no_handoff: None) -> None:
    """Written here, read by a new interpreter exec'd in the same PID (a child execs itself)."""
    script = textwrap.dedent("""
        import os, sys
        from s6ipc.daemon import upgrade
        if len(sys.argv) == 1:
            upgrade.write_state({"pid": os.getpid(), "big": "x" * 200000})
            os.execv(sys.executable, [sys.executable, __file__, "again"])
        state = upgrade.take_state(sys.exit)
        assert state is not None and state["big"] == "x" * 200000, state
        print(state["pid"], os.getpid(), os.environ.get("S6IPC_HANDOFF"), len(os.listdir("/proc/self/fd")))
    """)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"handoff-{os.getpid()}.py")
    with open(path, "w") as f:
        f.write(script)
    try:
        p = subprocess.run([VENV_PYTHON, path], capture_output=True, text=True, timeout=30)
    finally:
        os.unlink(path)
    assert p.returncode == 0, p.stderr
    before, after, variable, _ = p.stdout.split()
    assert before == after and variable == "None"


def _sealed_memfd(name: str, content: bytes, seal: bool = True) -> int:
    fd = os.memfd_create(name, os.MFD_ALLOW_SEALING)
    os.write(fd, content)
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
                    | fcntl.F_SEAL_SEAL)
    return fd


def _signed(**author: object) -> bytes:
    return json.dumps({"generation": 1, "author": {"pid": os.getpid(), "start": upgrade.start_ticks(),
                                                   **author}}).encode()


@pytest.mark.parametrize("make,why", [
    (lambda: None, "not a descriptor number"),
    (lambda: os.open("/etc/hostname", os.O_RDONLY), "is a file, not this process's handoff memfd"),
    (lambda: os.pipe()[0], "is pipe:"),
    (lambda: socket.socket().detach(), "is socket:"),
    (lambda: _sealed_memfd(upgrade.memfd_name(os.getpid()), _signed(), seal=False), "not sealed"),
    (lambda: _sealed_memfd("s6ipc-handoff:1", _signed()), "is /memfd:s6ipc-handoff:1 (deleted), not"),
    (lambda: _sealed_memfd(upgrade.memfd_name(os.getpid()), _signed(pid=1)), "a state written by"),
    (lambda: _sealed_memfd(upgrade.memfd_name(os.getpid()), _signed(start=1)), "a state written by"),
    (lambda: _sealed_memfd(upgrade.memfd_name(os.getpid()), b'{"generation": 1}'), "written by None"),
])
def test_what_this_process_did_not_make_is_ignored_with_one_warning(
        monkeypatch: pytest.MonkeyPatch, make: Callable[[], Optional[int]], why: str) -> None:
    """A regular file, a pipe, a socket, an unsealed memfd, one named or signed for another process:
    one warning, a fresh start, and the descriptor is not ours to close (unless it was our memfd)."""
    fd = make()
    monkeypatch.setenv(upgrade.HANDOFF_VARIABLE, "x" if fd is None else str(fd))
    lines, warn = _warned()
    try:
        assert upgrade.take_state(warn) is None
        assert len(lines) == 1 and lines[0].startswith("ignoring $S6IPC_HANDOFF=")
        assert why in lines[0] and lines[0].endswith("; starting fresh"), lines
        assert upgrade.HANDOFF_VARIABLE not in os.environ
    finally:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.mark.parametrize("value", ["-1", "999"])
def test_a_number_that_is_no_descriptor_is_ignored(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(upgrade.HANDOFF_VARIABLE, value)
    lines, warn = _warned()
    assert upgrade.take_state(warn) is None and len(lines) == 1, lines


@pytest.mark.parametrize("content,why", [(b"not json", "not JSON"), (b"[1, 2]", "not a JSON object"),
                                         (b"\xff\xfe", "not JSON")])
def test_our_memfd_with_garbage_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, content: bytes,
                                                 why: str) -> None:
    fd = _sealed_memfd(upgrade.memfd_name(os.getpid()), content)
    monkeypatch.setenv(upgrade.HANDOFF_VARIABLE, str(fd))
    with pytest.raises(Unusable, match=why) as caught:
        upgrade.take_state(_warned()[1])
    assert caught.value.exit_code == 111
    with pytest.raises(OSError):
        os.fstat(fd)


def test_discard_state(no_handoff: None) -> None:
    fd = upgrade.write_state({})
    upgrade.discard_state(fd)
    assert upgrade.HANDOFF_VARIABLE not in os.environ
    with pytest.raises(OSError):
        os.fstat(fd)


def test_keep_across_exec() -> None:
    r, w = os.pipe()
    try:
        assert not os.get_inheritable(r)
        upgrade.keep_across_exec([r, w])
        assert os.get_inheritable(r) and os.get_inheritable(w)
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(Exception, match=f"unable to keep fd {r} across exec: Bad file descriptor"):
        upgrade.keep_across_exec([r])


def test_blocked_signals_stay_pending_until_restored() -> None:
    got = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: got.append(1))
    try:
        mask = upgrade.block_signals([signal.SIGUSR1, signal.SIGTERM])
        assert signal.SIGUSR1 not in mask
        os.kill(os.getpid(), signal.SIGUSR1)
        assert got == [] and signal.SIGUSR1 in signal.sigpending()
        upgrade.restore_mask(mask)
        assert got == [1]
        assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_reexec_argv_is_the_installed_console_script() -> None:
    assert installed_prefix() == [S6IPC]
    argv = upgrade.reexec_argv("s6-ipcserverd", ["-v2", "--", "cat"])
    assert argv == [S6IPC, "s6-ipcserverd", "-v2", "--", "cat"]


def _no_console_script(monkeypatch: pytest.MonkeyPatch, tmp_path: str) -> None:
    """This interpreter as if it lived in *tmp_path*, with no ``s6ipc`` script beside it or in its
    scripts directories (the lookup is cached: cleared here and after the test)."""
    monkeypatch.setattr(sys, "executable", os.path.join(str(tmp_path), "python3"))
    monkeypatch.setattr(sysconfig, "get_path", lambda *a, **k: str(tmp_path))
    execution.entry_script.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_entry_script() -> Iterator[None]:
    yield
    execution.entry_script.cache_clear()


def test_reexec_argv_without_console_script(monkeypatch: pytest.MonkeyPatch, tmp_path: str) -> None:
    _no_console_script(monkeypatch, tmp_path)
    assert upgrade.reexec_argv("ipcserverd", ["x"]) == [sys.executable, "-m", "s6ipc", "ipcserverd", "x"]


def test_preflight_passes_for_good_code_and_options() -> None:
    assert upgrade.preflight("ipcserverd", ["-v2", "-c", "10", "--", "cat"]) is None
    assert upgrade.preflight("s6-ipcserverd", ["cat"]) is None


def test_preflight_rejects_bad_options_in_one_line() -> None:
    reason = upgrade.preflight("ipcserverd", ["-c", "nope", "cat"])
    assert reason is not None and "\n" not in reason
    assert reason.startswith("s6ipc preflight: fatal: unable to start ipcserverd: invalid options")
    assert reason.endswith("(exit code 100)")
    reason = upgrade.preflight("nosuchprogram", [])
    assert reason is not None and "no program nosuchprogram in the installed s6ipc" in reason


def _copy_package(tmp_path: str) -> str:
    top = os.path.join(str(tmp_path), "pkg")
    shutil.copytree(os.path.join(SRC, "s6ipc"), os.path.join(top, "s6ipc"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    return top


@pytest.mark.parametrize("module,breakage,why", [
    ("access/cdb.py", "def broken(:\n", "SyntaxError"),  # a module ipcserverd itself never imports
    ("serve/loop.py", "import s6ipc_missing_dependency\n",
     "ModuleNotFoundError: No module named 's6ipc_missing_dependency'"),
    ("cli.py", "def broken(:\n", "SyntaxError"),  # the entry point itself: a traceback, its last line
])
def test_preflight_rejects_a_broken_installed_version(monkeypatch: pytest.MonkeyPatch, tmp_path: str,
                                                      module: str, breakage: str, why: str) -> None:
    top = _copy_package(tmp_path)
    monkeypatch.setenv("PYTHONPATH", top)
    assert upgrade.preflight("ipcserverd", ["cat"]) is None, "the intact copy must pass"
    with open(os.path.join(top, "s6ipc", module), "a") as f:
        f.write(breakage)
    reason = upgrade.preflight("ipcserverd", ["cat"])
    assert reason is not None and why in reason and "\n" not in reason, reason


def test_preflight_of_a_missing_interpreter(monkeypatch: pytest.MonkeyPatch, tmp_path: str) -> None:
    _no_console_script(monkeypatch, tmp_path)
    reason = upgrade.preflight("ipcserverd", ["cat"])
    assert reason is not None and reason.startswith(f"unable to spawn {sys.executable}: No such file")


def test_a_preflight_that_hangs_is_given_up_at_its_timeout(tmp_path: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A preflight whose start blocks (here a sitecustomize that sleeps, first on PYTHONPATH) is
    killed by the kernel at its timeout: one reason, no wait beyond it."""
    with open(os.path.join(str(tmp_path), "sitecustomize.py"), "w") as f:
        f.write("import time\ntime.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    started = time.monotonic()
    reason = upgrade.preflight("ipcserverd", ["cat"], timeout=1)
    assert reason is not None and reason.endswith("preflight ipcserverd did not finish within 1 s"), reason
    assert time.monotonic() - started < 10


def test_the_preflight_never_imports_the_integrations(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18, point 1: no daemon uses the integrations, so the preflight imports none of them,
    whether their extra is installed (this venv has uvicorn) or not — an upgrade never depends on
    an extra. A sitecustomize (first on PYTHONPATH) makes importing one fail loudly."""
    import importlib.util

    assert importlib.util.find_spec("uvicorn") is not None, "this test needs the uvicorn extra installed"
    with open(os.path.join(str(tmp_path), "sitecustomize.py"), "w") as f:
        f.write("import sys\n"
                "class Tripwire:\n"
                "    def find_spec(self, name, path=None, target=None):\n"
                "        if name.split('.')[0] == 'uvicorn' or name.startswith(('s6ipc.integrations',\n"
                "                                                                's6ipc.uvicorn_drain')):\n"
                "            raise RuntimeError('the preflight imported ' + name)\n"
                "sys.meta_path.insert(0, Tripwire())\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    for program, args in (("ipcserverd", ["cat"]), ("tcpserver4d", ["cat"]), ("fdholderd", ["-i", "rules"])):
        assert upgrade.preflight(program, args) is None, program
