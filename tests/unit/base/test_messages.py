"""s6ipc.base.messages: the Reporter's one-line messages and exit codes, and stdout writes.

What exits runs in a child process (the Reporter ends with ``os._exit``); the lines that do not
exit are read from fd 2 here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Tuple

import pytest

from s6ipc.base.messages import Reporter, write_stdout


def _child(code: str, **kw) -> Tuple[int, str, str]:  # type: ignore[no-untyped-def]
    prelude = ("import errno, os, sys\n"
               "from s6ipc.base.errors import *\n"
               "from s6ipc.base.messages import Reporter, write_stdout, flush_stdio\n")
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("env", {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})  # buffered stdout
    out = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], text=True, timeout=20, **kw)
    return out.returncode, out.stdout, out.stderr


def test_lines_are_named_and_kinded(capfd) -> None:  # type: ignore[no-untyped-def]
    r = Reporter("s6-ipcserverd")
    r.info("starting")
    r.warn("unable to spawn x: y")
    r.error("unable to exec prog: No such file or directory")
    assert capfd.readouterr().err == (
        "s6-ipcserverd: info: starting\n"
        "s6-ipcserverd: warning: unable to spawn x: y\n"
        "s6-ipcserverd: fatal: unable to exec prog: No such file or directory\n"
    )


def test_bytes_that_are_not_utf8_go_out_as_they_came(capfdbinary) -> None:  # type: ignore[no-untyped-def]
    Reporter("x").info("path /tmp/\udcff")
    assert capfdbinary.readouterr().err == b"x: info: path /tmp/\xff\n"


@pytest.mark.parametrize("error, line, code", [
    ("SystemFailure('bind to /run/x', errno.EACCES)", "unable to bind to /run/x: Permission denied", 111),
    ("BadInput('invalid $IPCREMOTEEUID')", "invalid $IPCREMOTEEUID", 100),
    ("Unusable('stdin is not a listening socket')", "stdin is not a listening socket", 111),
    ("Refused('store fd', errno.EBUSY)", "unable to store fd: Device or resource busy", 1),
    ("ExecFailure('prog', errno.ENOENT)", "unable to exec prog: No such file or directory", 127),
    ("ExecFailure('prog', errno.EACCES)", "unable to exec prog: Permission denied", 126),
])
def test_die_writes_one_fatal_line_and_exits_with_the_kinds_code(error: str, line: str, code: int) -> None:
    rc, out, err = _child(f"Reporter('s6-ipcserver').die({error})\nprint('not reached')")
    assert (rc, out, err) == (code, "", f"s6-ipcserver: fatal: {line}\n")


def test_fatal_exits_with_the_code_given() -> None:
    got = _child("Reporter('p').fatal('unable to do it: Success', 42)")
    assert got == (42, "", "p: fatal: unable to do it: Success\n")


def test_usage_is_one_line_and_exit_100() -> None:
    rc, out, err = _child("Reporter('s6-ipcclient').usage('[ -p bindpath ] path prog...')")
    assert (rc, out, err) == (100, "", "s6-ipcclient: usage: s6-ipcclient [ -p bindpath ] path prog...\n")
    assert _child("Reporter('s6-x').usage('')") == (100, "", "s6-x: usage: s6-x\n")


def test_a_closed_stderr_does_not_stop_the_exit() -> None:
    rc, out, err = _child("os.close(2)\nReporter('p').die(BadInput('bad'))", stderr=subprocess.DEVNULL)
    assert rc == 100


def test_write_stdout_writes_everything(capfdbinary) -> None:  # type: ignore[no-untyped-def]
    data = bytes(range(256)) * 1000
    write_stdout(data)
    assert capfdbinary.readouterr().out == data


def test_write_stdout_to_a_closed_stdout_is_a_system_failure() -> None:
    rc, out, err = _child("""
        os.close(1)
        try:
            write_stdout(b'x')
        except SystemFailure as e:
            sys.stderr.write(f'{e}|{e.exit_code}')
    """)
    assert (rc, err) == (0, "unable to write to stdout: Bad file descriptor|111")


def test_flush_stdio_keeps_buffered_output_from_os_exit() -> None:
    assert _child("print('buffered', end='')\nflush_stdio()\nos._exit(3)") == (3, "buffered", "")
    assert _child("print('lost', end='')\nos._exit(3)") == (3, "", "")


def test_flush_stdio_with_stdout_closed_at_start() -> None:
    # ``prog >&-``: Python starts with sys.stdout None
    rc, out, err = _child("print(sys.stdout is None, file=sys.stderr)\nflush_stdio()\nos._exit(5)",
                          stdout=None, preexec_fn=lambda: os.close(1))
    assert (rc, err) == (5, "True\n")
