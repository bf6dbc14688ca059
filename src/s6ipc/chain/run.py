"""Chain loading: how one stage hands the process to the rest of its command line.

s6 stages ``execve`` into the next one. When the next stage is one of ours, in any spelling (``s6ipc NAME``,
an ``s6-NAME`` link found through PATH, a path to either: see :mod:`s6ipc.chain.entry`), we run
it *in this process* instead: same PID, same descriptors, same
environment (``os.environ`` is what an exec would pass), same ids — the observable result of an
exec — but without paying for a new Python interpreter at every link (about 20 ms each). What a
stage must do to make this indistinguishable from an exec: close the close-on-exec descriptors it
opened (the socket binder closes its lock file) and leave signal dispositions as it found them.
The only visible difference is ``/proc/PID/cmdline``, which keeps showing the first stage.

One more thing an exec does that running in-process does not: the new image is read from disk with
the ids it had *before* a privilege drop (the kernel opens it at execve). A stage run in-process after
``applyuidgid`` imports its modules with the dropped ids, and an interpreter whose files the new user
cannot read (a pyenv build in root's 0700 home) then fails. ``applyuidgid`` therefore imports the next
stage's module before it drops (:func:`import_stage`), and an import that fails anyway is one line
(``NAME: fatal: unable to import MODULE: …``, 111), never a traceback.

A foreign program (s6's C binaries, the user's program) is exec'd for real, after SIGPIPE and
SIGXFSZ are put back to SIG_DFL (CPython ignores them).
"""

from __future__ import annotations

import errno
import os
import sys

from ..base import environment
from ..base.envdir import merge_env
from ..base.errors import ExecFailure, S6ipcError
from ..base.execution import exec_argv, installed_prefix, restore_default_signals
from ..base.messages import Reporter, flush_stdio
from ..base.options import UsageError, parse_gidlist, parse_uint
from ..base.typeshim import NamedTuple
from .entry import own_program
from .registry import PROGRAMS, program_module, program_name, program_usage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn, Optional, Sequence

    # the access modules are imported only by the programs that use them
    from ..access.fastpath import Outcome


__all__ = [
    "stage", "ProgramCall", "own_program_call", "import_stage", "run_program", "modify_environ", "exec_into",
    "PrivilegeOptions", "conclude",
]


def stage(name: str, style: str) -> List[str]:
    """The argv words naming our program *name*, in the naming *style* of the caller (``s6-`` or ``""``)."""
    return installed_prefix() + [style + name]


class ProgramCall(NamedTuple):
    """argv naming one of our programs: *name* (``ipcserver-access``), the *word* used
    (``s6-ipcserver-access``: the name it logs under), the *args* after it."""

    name: str
    word: str
    args: List[str]


def own_program_call(argv: Sequence[str]) -> Optional[ProgramCall]:
    """What *argv* runs when executing it would run one of our programs, in any spelling
    (:func:`.entry.own_program`); else None. (How the daemons recognise an access program they
    can run in-process.)"""
    found = own_program(argv)
    if found is None:
        return None
    word, args = found
    name = program_name(word)
    return None if name is None else ProgramCall(name, word, args)


def import_stage(argv: Sequence[str]) -> None:
    """Import the module of the program *argv* runs, when it is one of ours (else nothing).

    For a stage about to lose the right to read the interpreter's files (see the module docstring).
    Raises ImportError as the import does.
    """
    found = own_program(argv)
    name = None if found is None else program_name(found[0])
    if name is not None:
        program_module(name)


def run_program(word: str, args: Sequence[str]) -> NoReturn:
    """Run program *word* (a name from :data:`PROGRAMS`, maybe ``s6-``-prefixed) with *args*."""
    name = program_name(word)
    if name is None:
        raise KeyError(word)
    reporter = Reporter(word)
    module_name = f"s6ipc.programs.{PROGRAMS[name]}"
    try:
        module = program_module(name)
    except (ImportError, OSError) as e:  # an installation the current ids cannot read (module docstring)
        reporter.fatal(f"unable to import {module_name}: {e}", 111)
    try:
        module.main(reporter, list(args))
    except ImportError as e:  # the same, for a module a program imports when it needs it
        reporter.fatal(f"unable to import {e.name or 'a module'}: {e}", 111)
    except UsageError:
        reporter.usage(program_usage(name, module))
    except S6ipcError as e:
        reporter.die(e)
    except KeyboardInterrupt:
        os._exit(130)
    raise AssertionError(f"{word} returned")


def modify_environ(modifs: Sequence[str]) -> None:
    """Apply s6 environment modifications (``NAME=value`` sets, ``NAME`` unsets) to ``os.environ``.

    The order the next program sees is skalibs' ``env_merge`` order (see :func:`s6ipc.base.envdir.merge_env`):
    a removed variable's place is taken by the last one, a set variable goes to the end.
    """
    environment.replace(os.environ, merge_env(os.environ, modifs))


def exec_into(reporter: Reporter, argv: Sequence[str]) -> NoReturn:
    """Hand the process to *argv*: in-process for our own stages, ``execve`` for anything else.

    Never returns; an exec failure is reported as ``unable to exec NAME`` (exit 126/127).
    """
    flush_stdio()
    ours = own_program(argv)
    if ours is not None:
        sys.argv = list(argv)
        run_program(*ours)
    restore_default_signals()
    try:
        exec_argv(argv)
    except S6ipcError as e:
        reporter.die(e)


class PrivilegeOptions:
    """``-u -g -G -U`` of s6-ipcserver and s6-fdholder-daemon, and the applyuidgid stage they become.

    As s6: a uid or gid of 0 means "no change"; ``-U`` takes the ids from the environment at
    applyuidgid time (``-Uz``) and resets any earlier ``-u``/``-g``/``-G``; later options still apply.
    """

    LETTERS = "ugGU"

    def __init__(self) -> None:
        self.uid = 0
        self.gid = 0
        self.groups: Optional[List[int]] = None
        self.from_env = False

    def take(self, letter: str, value: str) -> None:
        """Record one of :attr:`LETTERS`. Raises :class:`UsageError` for a bad number or list."""
        if letter == "u":
            self.uid = parse_uint(value)
        elif letter == "g":
            self.gid = parse_uint(value)
        elif letter == "G":
            groups = parse_gidlist(value)
            if groups is None:
                raise UsageError(letter)
            self.groups = groups
        elif letter == "U":
            self.from_env, self.uid, self.gid, self.groups = True, 0, 0, None

    def stage(self, style: str) -> List[str]:
        """The applyuidgid words of the chain, ``--`` included; empty when no drop was asked."""
        if not (self.from_env or self.uid or self.gid or self.groups is not None):
            return []
        argv = stage("applyuidgid", style)
        if self.from_env:
            argv.append("-Uz")
        if self.uid:
            argv += ["-u", str(self.uid)]
        if self.gid:
            argv += ["-g", str(self.gid)]
        if self.groups is not None:
            argv += ["-G", ",".join(str(g) for g in self.groups)]
        return argv + ["--"]


def conclude(reporter: Reporter, outcome: Outcome) -> NoReturn:
    """End an access program (ipcserver-access, tcpserver-access) as its *outcome* says: log its
    lines with our pid, then die of its error, exit with its refusal code, or exec its command
    (an exec rule runs through execline)."""
    from ..access.fastpath import EXECLINE_MISSING, emit
    from ..access.rules import EXECLINEB

    emit(reporter, outcome.lines, os.getpid())
    if outcome.error is not None:
        reporter.die(outcome.error)
    flush_stdio()
    if not outcome.allowed:
        os._exit(outcome.exit_code)
    restore_default_signals()
    try:
        exec_argv(outcome.argv, outcome.env, path_env=outcome.search_path_env)
    except ExecFailure as e:
        if outcome.argv[0] == EXECLINEB and e.errno == errno.ENOENT:
            reporter.warn(EXECLINE_MISSING)
        reporter.die(e)
