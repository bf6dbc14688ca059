"""Which command lines run one of our own programs: the spellings of "us".

Some facts this module relies on:

* The ``s6ipc`` console script that pip writes is a small Python file whose first line is
  ``#!INTERPRETER``; running it runs ``s6ipc.cli:main`` under that interpreter. In a venv (pipx
  included) it sits next to the venv's interpreter; a system-wide install (``pip install
  --break-system-packages``, a wheel installed as root) puts it in the interpreter's ``scripts``
  directory — ``/usr/local/bin`` for Debian's ``/usr/bin/python3`` — and a ``--user`` install in
  the user scheme's (``~/.local/bin``).
* ``s6ipc links DIR`` makes ``DIR/s6-NAME`` symbolic links to that script; the entry point then
  takes the program name from the basename of ``argv[0]`` (what the caller wrote, not what the
  link points to). So a word such as ``s6-ipcserverd``, found through ``PATH`` as ``execve``
  would find it, runs our program when the file it resolves to *is* our script.
* Running one of our programs in this process instead of executing it is indistinguishable from
  the exec only when the exec would have run the same code: the same script file, hence the
  same interpreter line, hence the same interpreter and ``sys.path``. This module therefore
  compares files (``realpath``), never names.

Every spelling that names our program — ``SCRIPT NAME``, ``SCRIPT s6-NAME``, a link named
``s6-NAME`` or ``NAME`` to SCRIPT, a path to any of these, ``INTERPRETER -m s6ipc NAME`` with
this very interpreter — is recognised by :func:`own_program`.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
from typing import List, Optional, Sequence, Tuple

from ..execution import DEFAULT_PATH
from . import PROGRAMS

SCRIPT_NAME = "s6ipc"


def program_name(word: str) -> Optional[str]:
    """The program a dispatch word names (``ipcserverd`` or ``s6-ipcserverd``), or None."""
    if word in PROGRAMS:
        return word
    if word.startswith("s6-") and word[3:] in PROGRAMS:
        return word[3:]
    return None


def _interpreter_line(path: str) -> Optional[str]:
    """The interpreter named by the ``#!`` line of *path*, or None (unreadable, not a script)."""
    try:
        with open(path, "rb") as f:
            head = f.readline(4096)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split()
    return os.fsdecode(words[0]) if words else None


def _runs_this_interpreter(script: str) -> bool:
    interpreter = _interpreter_line(script)
    if interpreter is None:
        return False
    if interpreter == sys.executable:
        return True
    # Outside a venv, another spelling of the same interpreter file loads the same sys.path.
    # Inside one, /usr/bin/python3 and the venv's python resolve to one file but not to one sys.path.
    return sys.prefix == sys.base_prefix and os.path.realpath(interpreter) == os.path.realpath(sys.executable)


@functools.cache
def entry_script() -> Optional[str]:
    """The ``s6ipc`` console script that runs this interpreter, or None when there is none.

    Looked for next to the interpreter (a venv), then in the interpreter's ``scripts`` directory
    and its user scheme's (system-wide and ``--user`` installs), where it must name this
    interpreter on its ``#!`` line.
    """
    beside = os.path.join(os.path.dirname(sys.executable), SCRIPT_NAME)
    if os.access(beside, os.X_OK):
        return beside
    for directory in (sysconfig.get_path("scripts"), sysconfig.get_path("scripts", f"{os.name}_user")):
        script = os.path.join(directory, SCRIPT_NAME)
        if os.access(script, os.X_OK) and _runs_this_interpreter(script):
            return script
    return None


def own_prefix() -> List[str]:
    """The argv prefix that names this toolkit's stages in a chain, usable without activating a venv.

    It is :func:`entry_script` when there is one, else ``python -m s6ipc`` with the running
    interpreter's absolute path.
    """
    script = entry_script()
    return [script] if script is not None else [sys.executable, "-m", "s6ipc"]


def _resolve(word: str) -> Optional[str]:
    """The file an exec of *word* would run (s6's PATH search: first executable regular file)."""
    if "/" in word:
        candidates = [word]
    else:
        candidates = [f"{d}/{word}" for d in os.environ.get("PATH", DEFAULT_PATH).split(":") if d]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def own_program(argv: Sequence[str]) -> Optional[Tuple[str, List[str]]]:
    """``(dispatch word, arguments)`` when executing *argv* would run one of our programs, else None.

    The dispatch word is what the entry point would take as the program name (``s6-NAME`` through
    a link of that name, so the program logs under s6's name), with :func:`program_name` not None.
    """
    prefix = own_prefix()
    n = len(prefix)
    if len(argv) > n and list(argv[:n]) == prefix and program_name(argv[n]) is not None:
        return argv[n], list(argv[n + 1 :])
    script = entry_script()
    if not argv or script is None:
        return None
    found = _resolve(argv[0])
    if found is None or os.path.realpath(found) != os.path.realpath(script):
        return None
    invoked = os.path.basename(argv[0])
    if program_name(invoked) is not None:
        return invoked, list(argv[1:])
    if len(argv) > 1 and program_name(argv[1]) is not None:
        return argv[1], list(argv[2:])
    return None
