"""Starting a program in a hostile process state: an environment array CPython cannot build, a
blocked signal mask, ignored signals, closed fds 0/1/2.

``subprocess`` cannot pass an entry such as ``=x`` (CPython refuses it), so the child's
``preexec_fn`` sets the state up and calls libc's ``execve`` itself with the exact array: the
program is executed exactly as a C supervisor would execute it.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
from typing import Any, Dict, Iterable, List, Optional, Sequence

_LIBC = ctypes.CDLL(None, use_errno=True)


def _array(items: Iterable[bytes]) -> Any:
    values: List[Optional[bytes]] = [*items, None]
    return (ctypes.c_char_p * len(values))(*values)


def popen(argv: Sequence[str], entries: Sequence[bytes], *, blocked: Iterable[int] = (),
          ignored: Iterable[int] = (), closed: Iterable[int] = (), **kw: Any) -> subprocess.Popen[bytes]:
    """Start *argv* (argv[0] an absolute path) with exactly the environment *entries*, the
    signals *blocked* blocked, *ignored* at SIG_IGN and the fds *closed* closed."""
    path = os.fsencode(argv[0])
    c_argv = _array(os.fsencode(a) for a in argv)
    c_env = _array(entries)
    blocked, ignored, closed = list(blocked), list(ignored), list(closed)

    def setup() -> None:
        for sig in ignored:
            signal.signal(sig, signal.SIG_IGN)
        for fd in closed:
            try:
                os.close(fd)
            except OSError:
                pass
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        _LIBC.execve(path, c_argv, c_env)
        os._exit(127)

    return subprocess.Popen(list(argv), preexec_fn=setup, **kw)


def run(argv: Sequence[str], entries: Sequence[bytes], *, timeout: float = 20, input: bytes = b"",
        **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """Run to completion (see :func:`popen`), capturing stdout and stderr."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("stdin", subprocess.PIPE)
    with popen(argv, entries, **kw) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def environ_entries(extra: Sequence[bytes] = ()) -> List[bytes]:
    """This process's environment as entries (PATH kept), then *extra*."""
    return [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in os.environ.items()] + list(extra)


def status_masks(text: str) -> dict:  # type: ignore[type-arg]
    """``SigBlk``/``SigIgn`` of a /proc/PID/status text as ints, glibc's internal signals 32 and 33
    left out (posix_spawn children get them ignored; no program of the tests uses them)."""
    found = {}
    for name in ("SigBlk", "SigIgn"):
        m = re.search(rf"^{name}:\s*([0-9a-f]+)$", text, re.M)
        assert m, text
        found[name] = int(m.group(1), 16) & ~(0b11 << 31)
    return found


def sigmask(*sigs: int) -> int:
    """The /proc bit mask of *sigs*."""
    return sum(1 << (s - 1) for s in sigs)


def serves_hi_then_stops(argv: Sequence[str], env: Dict[str, str], path: str) -> bytes:
    """Start a server *argv* (``-1`` given, prog ``echo hi``) with *env*; once ready, one client
    at *path* must read ``hi``; SIGTERM must make it exit 0. Returns its stderr."""
    from tests.support.processes import stop_process, wait_for_ready

    r, w = os.pipe()
    proc = subprocess.Popen(list(argv), env=env, stdout=w, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    os.close(w)
    try:
        wait_for_ready(r)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(path)
            assert s.recv(10) == b"hi\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert proc.stderr is not None
        return proc.stderr.read()
    finally:
        os.close(r)
        stop_process(proc)
