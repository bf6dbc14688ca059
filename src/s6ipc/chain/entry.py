"""Which command lines run one of our own programs: the spellings of "us".

Some facts this module relies on:

* The ``s6ipc`` console script that pip writes (:func:`s6ipc.base.execution.entry_script` finds it)
  is a small Python file whose first line is
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
``s6-NAME`` or ``NAME`` to SCRIPT, a path to any of these; and where there is no console script
(s6ipc runs as ``INTERPRETER -m s6ipc``: :func:`s6ipc.base.execution.installed_prefix`), ``INTERPRETER
-m s6ipc NAME`` with this very interpreter — is recognised by :func:`own_program`. With a console
script, ``python -m s6ipc NAME`` is not "us" (another entry than the script's): the way to force
the real program.
"""

from __future__ import annotations

import os

from ..base.errors import ExecFailure
from ..base.execution import entry_script, find_program, installed_prefix
from .registry import program_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Sequence, Tuple

__all__ = ["own_program"]


def _resolve(word: str) -> Optional[str]:
    """The file an exec of *word* would run (s6's PATH search), or None."""
    try:
        return find_program(word, os.environ.get("PATH"))
    except ExecFailure:
        return None


def own_program(argv: Sequence[str]) -> Optional[Tuple[str, List[str]]]:
    """``(dispatch word, arguments)`` when executing *argv* would run one of our programs, else None.

    The dispatch word is what the entry point would take as the program name (``s6-NAME`` through
    a link of that name, so the program logs under s6's name), with :func:`program_name` not None.
    """
    prefix = installed_prefix()
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
