"""The ``s6ipc`` multi-call entry point.

``s6ipc NAME args…`` runs program NAME (an s6 program name without ``s6-``); invoked through a
link whose name is ``s6-NAME`` (or ``NAME``), the entry point acts as that program, so unchanged
s6 run scripts work with the link directory first in ``PATH``. ``s6ipc links DIR`` creates
those links. ``s6ipc preflight NAME args…`` is what a running daemon asks of the code installed
on disk before an in-place upgrade (:func:`s6ipc.daemon.upgrade.preflight`): import every module but the
integrations, let NAME validate *args*, exit 0 silently — or one line and 111 (100 for bad options).
"""

from __future__ import annotations

import os
import sys

from .base import environment
from .base.errors import S6ipcError
from .base.execution import entry_script, undo_locale_coercion
from .chain.registry import PROGRAMS, program_module, program_name
from .chain.run import run_program

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn, Optional

USAGE = ("s6ipc: usage: s6ipc NAME args... | s6ipc links DIR | s6ipc list | s6ipc --version"
         " | s6ipc preflight NAME args...")


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
    from . import __version__
    from .base import systemd_backend

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


#: The integrations a user's application imports (uvicorn's, asyncio's), never a daemon.
_INTEGRATIONS = ("s6ipc.integrations", "s6ipc.uvicorn_drain")


def _import_all(path: List[str], prefix: str) -> None:
    """Import every module under *path* (a package's ``__path__``, names starting with *prefix*),
    subpackages included, but the integrations and ``__main__`` (importing it runs the entry point)."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(path, prefix):
        if info.name in _INTEGRATIONS or info.name == "s6ipc.__main__":
            continue
        module = importlib.import_module(info.name)
        if info.ispkg:
            _import_all(list(module.__path__), info.name + ".")


def _check_program(program: str, args: List[str]) -> None:
    """The preflight itself, in the child: import every module of the package but the integrations
    (no daemon uses them: an upgrade never depends on an extra, installed or not, nor pays for
    importing one), then let *program* validate *args* (its module's ``preflight(args)``, when it
    has one).

    Raises whatever the import or the validation raises: :func:`_preflight` turns it into one line.
    """
    from . import __path__ as package_path

    _import_all(list(package_path), "s6ipc.")
    name = program_name(program)
    if name is None:
        raise LookupError(f"no program {program} in the installed s6ipc")
    check = getattr(program_module(name), "preflight", None)
    if check is not None:
        check(list(args))


def _preflight(program: str, args: List[str]) -> int:
    """``s6ipc preflight``: can the installed code run *program* with *args*? (see the docstring)"""
    try:
        _check_program(program, args)
    except BaseException as e:  # the point is to catch anything the new code can throw
        from .base.options import UsageError

        if isinstance(e, UsageError):
            what, code = f"invalid options for {program}", 100
        else:
            from .base.errors import S6ipcError

            what, code = type(e).__name__, e.exit_code if isinstance(e, S6ipcError) else 111
        text = " ".join(str(e).split()) or "no reason given"
        message = f"s6ipc preflight: fatal: unable to start {program}: {what}: {text}\n"
        os.write(2, message.encode("utf-8", "surrogateescape"))
        return code
    return 0


def main(argv: Optional[List[str]] = None) -> NoReturn:
    undo_locale_coercion(os.environ)
    environment.adopt(os.environ)
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
    if word == "preflight" and len(args) >= 3:
        os._exit(_preflight(args[2], args[3:]))
    if program_name(word) is None:
        unknown = word and not word.startswith("-") and word not in ("links", "list")
        message = f"s6ipc: fatal: no such program: {word}: s6ipc list lists them" if unknown else USAGE
        os.write(2, (message + "\n").encode("utf-8", "surrogateescape"))
        os._exit(100)
    run_program(word, args[2:])


def uvicorn_main() -> None:
    """The console script ``s6ipc-uvicorn`` (:func:`s6ipc.integrations.uvicorn_drain.main`): one
    line, exit 111, when uvicorn cannot be imported (the script is installed with s6ipc, uvicorn
    with its extra)."""
    try:
        from .integrations.uvicorn_drain import main as drained_uvicorn
    except ImportError as e:
        os.write(2, f"s6ipc-uvicorn: fatal: unable to import uvicorn: {e} (pip install 's6ipc[uvicorn]')\n"
                 .encode("utf-8", "replace"))
        os._exit(111)
    drained_uvicorn()
