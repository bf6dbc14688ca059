"""The ``s6ipc`` multi-call entry point.

``s6ipc NAME args…`` runs program NAME (an s6 program name without ``s6-``); invoked through a
link whose name is ``s6-NAME`` (or ``NAME``), the entry point acts as that program, so unchanged
s6 run scripts work with the link directory first in ``PATH``. ``s6ipc links DIR`` creates
those links.
"""

from __future__ import annotations

import os
import sys
from typing import List, NoReturn, Optional

from .errors import S6ipcError
from .execution import undo_locale_coercion
from .programs import PROGRAMS
from .programs.chain import run_program
from .programs.entry import entry_script, program_name

USAGE = "s6ipc: usage: s6ipc NAME args... | s6ipc links DIR | s6ipc list | s6ipc --version"


def _links(directory: str) -> int:
    target = entry_script()
    if target is None:
        os.write(2, b"s6ipc: fatal: no s6ipc console script runs this interpreter: install the package\n")
        return 111
    try:
        os.makedirs(directory, exist_ok=True)
        for name in sorted(PROGRAMS):
            link = os.path.join(directory, "s6-" + name)
            tmp = link + ".new"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(target, tmp)
            os.replace(tmp, link)
    except OSError as e:
        message = f"s6ipc: fatal: unable to create links in {directory}: {os.strerror(e.errno or 0)}\n"
        os.write(2, message.encode("utf-8", "surrogateescape"))
        return 111
    return 0


def _version() -> str:
    """What ``--version`` prints: version, interpreter, entry script, systemd backend."""
    from . import __version__, systemd_backend

    try:
        backend = systemd_backend.choose()
    except S6ipcError as e:
        backend = f"none ({e})"
    script = entry_script() or f"none ({sys.executable} -m s6ipc)"
    return (f"s6ipc {__version__} (Python implementation)\n"
            f"python: {sys.executable} {sys.version.split()[0]}\n"
            f"entry script: {script}\n"
            f"systemd backend: {backend}\n")


def _write(text: str) -> int:
    data = text.encode("utf-8", "surrogateescape")
    try:
        while data:
            data = data[os.write(1, data) :]
    except OSError as e:
        os.write(2, f"s6ipc: fatal: unable to write to stdout: {os.strerror(e.errno or 0)}\n".encode())
        return 111
    return 0


def main(argv: Optional[List[str]] = None) -> NoReturn:
    undo_locale_coercion(os.environ)
    args = list(sys.argv if argv is None else argv)
    invoked = os.path.basename(args[0]) if args else "s6ipc"
    if program_name(invoked) is not None:
        run_program(invoked, args[1:])
    if len(args) < 2:
        os.write(2, (USAGE + "\n").encode())
        os._exit(100)
    word = args[1]
    if word == "links" and len(args) == 3:
        os._exit(_links(args[2]))
    if word == "list" and len(args) == 2:
        os._exit(_write("".join(f"{n}\n" for n in sorted(PROGRAMS))))
    if word == "--version" and len(args) == 2:
        os._exit(_write(_version()))
    if program_name(word) is None:
        unknown = word and not word.startswith("-") and word not in ("links", "list")
        message = f"s6ipc: fatal: no such program: {word}: s6ipc list lists them" if unknown else USAGE
        os.write(2, (message + "\n").encode("utf-8", "surrogateescape"))
        os._exit(100)
    run_program(word, args[2:])
