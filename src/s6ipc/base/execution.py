"""Executing and spawning programs with s6's (skalibs ``mexec``) semantics.

Some facts this module relies on:

* ``execve`` keeps the PID, the open file descriptors that are not close-on-exec, the signal
  mask and every signal disposition that is SIG_IGN; caught signals revert to SIG_DFL.
  CPython ignores SIGPIPE and SIGXFSZ at start-up, so a Python stage that execs a user program
  must put both back to SIG_DFL first, or the program would inherit "ignored".
* s6 searches ``$PATH`` itself (default ``/usr/bin:/bin``): empty components are skipped (never
  the current directory); ENOENT moves on silently; EACCES, EPERM, EISDIR and ENOTDIR are
  remembered and the search moves on; any other error stops it. The error reported is the
  remembered one, else ENOENT. There is no ``/bin/sh`` fallback on ENOEXEC.
* glibc's ``posix_spawn`` creates the child with ``CLONE_VM|CLONE_VFORK`` and reports an
  ``execve`` failure of the child as the return value of ``posix_spawn`` itself, so a failed
  spawn leaves no child to reap.
"""

from __future__ import annotations

import _signal
import errno
import functools
import os
import stat
import sys

from .cstrings import c_environment, c_words, cut
from .environment import entries as environment_entries
from .environment import execve as exact_execve
from .environment import posix_spawn as exact_posix_spawn
from .errors import ExecFailure, SystemFailure
from .signal_state import ignored_for_children, inherited_ignored

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterator, List, Mapping, MutableMapping, NoReturn, Optional, Sequence, Tuple

__all__ = [
    "DEFAULT_PATH", "PYTHON_IGNORED_SIGNALS", "SCRIPT_NAME", "entry_script", "installed_prefix",
    "undo_locale_coercion", "restore_default_signals", "exec_argv", "Spawner", "find_program",
    "spawn_bounded", "exited_children",
]

DEFAULT_PATH = "/usr/bin:/bin"
_REMEMBERED = frozenset({errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR})

#: Signals CPython sets to SIG_IGN at start-up; programs we start must get them at SIG_DFL.
PYTHON_IGNORED_SIGNALS = tuple(
    s for s in (getattr(_signal, "SIGPIPE", None), getattr(_signal, "SIGXFSZ", None)) if s is not None
)


def _candidates(name: str, path: Optional[str]) -> List[str]:
    """The files an exec of *name* tries, in order: *name* itself when it has a ``/``, else
    ``DIR/name`` for each non-empty ``DIR`` of *path* (``DEFAULT_PATH`` when None)."""
    if "/" in name:
        return [name]
    search = DEFAULT_PATH if path is None else path
    return [f"{d}/{name}" for d in search.split(":") if d]


def find_program(name: str, path: Optional[str] = None) -> str:
    """The file an exec of *name* would run, found as s6 searches *path* (``DEFAULT_PATH`` when
    None): the first candidate that exists, is not a directory and is executable.

    The one PATH search of s6ipc besides exec itself (:func:`exec_argv` lets ``execve`` judge the
    same candidates). Empty ``PATH`` entries are skipped, never the current directory (unlike
    ``shutil.which`` and a shell). A directory or a file without execute permission is skipped
    with EACCES, as ``execve`` refuses it (``PATH=/dir-with-foo-dir:/bin s6-applyuidgid … foo``
    runs ``/bin/foo``; with only the directory it fails ``unable to exec foo: Permission
    denied``). Raises :class:`ExecFailure` with the errno an exec would report: the last
    EACCES/EPERM/EISDIR/ENOTDIR met, else ENOENT; any other error stops the search.
    """
    remembered = 0
    for candidate in _candidates(name, path):
        try:
            st = os.stat(candidate)
        except OSError as e:
            go_on, remembered = _search_step(e.errno or errno.EINVAL, remembered)
            if not go_on:
                raise ExecFailure(name, remembered) from None
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
        remembered = errno.EACCES  # what execve says of a directory or a file without x
    raise ExecFailure(name, remembered or errno.ENOENT)


def _path_of(env: Optional[Mapping[str, str]]) -> Optional[str]:
    source = os.environ if env is None else env
    path = source.get("PATH")
    return None if path is None else cut(path)


#: What CPython's locale coercion (PEP 538) puts in LC_CTYPE when it starts under the C locale.
_COERCED_LOCALES = frozenset({"C.UTF-8", "C.utf8", "UTF-8"})


SCRIPT_NAME = "s6ipc"


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
    import sysconfig  # only without a venv: not on a venv's start path

    for directory in (sysconfig.get_path("scripts"), sysconfig.get_path("scripts", f"{os.name}_user")):
        script = os.path.join(directory, SCRIPT_NAME)
        if os.access(script, os.X_OK) and _runs_this_interpreter(script):
            return script
    return None


def installed_prefix() -> List[str]:
    """The argv prefix that starts the installed s6ipc, usable without activating a venv:
    :func:`entry_script` when there is one (a venv, a system-wide or ``--user`` install), else
    ``python -m s6ipc`` with the running interpreter's absolute path.

    A new interpreter started with it imports s6ipc from disk: what is installed *now*.
    """
    script = entry_script()
    return [script] if script is not None else [sys.executable, "-m", "s6ipc"]


def undo_locale_coercion(environ: MutableMapping[str, str]) -> None:
    """Give *environ* (``os.environ``) back the LC_CTYPE the process was executed with.

    Started under the C or POSIX locale, CPython sets ``LC_CTYPE=C.UTF-8`` in its own
    environment (PEP 538), so every program started from it would inherit a variable that s6's C
    programs never add. ``/proc/self/environ`` still shows the environment given to ``execve``:
    restore that value, or remove the variable when it was not there.
    """
    if environ.get("LC_CTYPE") not in _COERCED_LOCALES:
        return
    try:
        with open("/proc/self/environ", "rb") as f:
            original = f.read().split(b"\0")
    except OSError:
        return
    for entry in original:
        if entry.startswith(b"LC_CTYPE="):
            environ["LC_CTYPE"] = os.fsdecode(entry[len(b"LC_CTYPE="):])
            return
    del environ["LC_CTYPE"]


def _search_step(code: int, remembered: int) -> Tuple[bool, int]:
    """s6's rule for a candidate that failed with *code*: (search on?, errno to report so far)."""
    if code == errno.ENOENT:
        return True, remembered
    if code in _REMEMBERED:
        return True, code
    return False, code


def restore_default_signals() -> None:
    """Put back SIG_DFL for the signals CPython ignores, before an exec into a foreign program."""
    for sig in PYTHON_IGNORED_SIGNALS:
        _signal.signal(sig, _signal.SIG_DFL)


def exec_argv(argv: Sequence[str], env: Optional[Mapping[str, str]] = None,
              path_env: Optional[Mapping[str, str]] = None) -> NoReturn:
    """Replace the process image by *argv* (s6 PATH search), with *env* or ``os.environ``.

    The search uses the PATH of *path_env* when given (s6's ``mexec`` with modifications searches
    the caller's PATH, not the modified one), else that of *env*.
    Raises :class:`ExecFailure` naming ``argv[0]`` when every candidate failed.
    """
    argv = c_words(argv)
    if not argv:
        raise ExecFailure("", errno.ENOENT)
    environment = c_environment(os.environ if env is None else env)
    remembered = 0
    # CPython refuses an empty argv[0]; s6 execs "DIR/" for an empty name, which can only fail
    # (EACCES on a directory), so the stand-in argv[0] never reaches a running program.
    args = argv if argv[0] else ["-", *argv[1:]]
    exact = environment_entries(environment)
    for candidate in _candidates(argv[0], _path_of(env if path_env is None else path_env)):
        try:
            if exact is None:
                os.execve(candidate, args, environment)
            else:
                exact_execve(candidate, args, exact)
        except OSError as e:
            go_on, remembered = _search_step(e.errno or errno.EINVAL, remembered)
            if not go_on:
                break
    raise ExecFailure(argv[0], remembered or errno.ENOENT)


class Spawner:
    """Spawns one fixed program many times, as cheaply as Python allows (``posix_spawn``).

    The PATH search is done once, at construction; it is redone (with exec's error rules) only
    when the cached path stops working. Each spawned child gets *fd* on its fds 0 and 1 (the
    ``dup2`` file actions clear close-on-exec on the copies), an empty signal mask, and SIG_DFL
    for SIGPIPE and SIGXFSZ. Any other descriptor of the caller reaches the child only if it is
    not close-on-exec: keeping that true is the caller's job.
    """

    def __init__(self, argv: Sequence[str], path_env: Optional[Mapping[str, str]] = None) -> None:
        self.argv = c_words(argv)
        if not self.argv or not self.argv[0]:
            raise ExecFailure(self.argv[0] if self.argv else "", errno.ENOENT)
        self.name = self.argv[0]
        self._path: Optional[str] = None
        self._sigdef = PYTHON_IGNORED_SIGNALS
        #: When set, the PATH searched (else the PATH of the env given to :meth:`spawn`).
        self.path_env = path_env

    def _resolve(self, env: Mapping[str, str]) -> str:
        search = env if self.path_env is None else self.path_env
        return find_program(self.name, search.get("PATH"))

    def spawn(self, fd: int, env: Dict[str, str]) -> int:
        """Start the program with *fd* as its stdin and stdout; return its pid.

        Raises :class:`ExecFailure` (program not executable) or :class:`OSError` (no resources:
        EAGAIN, ENOMEM...).
        """
        path = self._path
        if path is None:
            path = self._path = self._resolve(env)
        env = c_environment(env)  # type: ignore[assignment]
        exact = environment_entries(env)
        try:
            return self._spawn(path, fd, env, exact)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR, errno.EISDIR):
                raise
            self._path = None
            if "/" in self.name or e.errno == errno.ENOEXEC:
                raise ExecFailure(self.name, e.errno) from None
        path = self._path = self._resolve(env)
        try:
            return self._spawn(path, fd, env, exact)
        except OSError as e:
            self._path = None
            if e.errno in (errno.EAGAIN, errno.ENOMEM):
                raise
            raise ExecFailure(self.name, e.errno or errno.EINVAL) from None

    def _spawn(self, path: str, fd: int, env: Dict[str, str], exact: Optional[List[bytes]]) -> int:
        if not inherited_ignored():
            return self._spawn_now(path, fd, env, exact)
        with ignored_for_children():
            return self._spawn_now(path, fd, env, exact)

    def _spawn_now(self, path: str, fd: int, env: Dict[str, str], exact: Optional[List[bytes]]) -> int:
        if exact is not None:
            return exact_posix_spawn(path, self.argv, exact, ((fd, 0), (fd, 1)), self._sigdef)
        actions = [(os.POSIX_SPAWN_DUP2, fd, 0), (os.POSIX_SPAWN_DUP2, fd, 1)]
        return os.posix_spawn(
            path, self.argv, env, file_actions=actions, setsigmask=(), setsigdef=self._sigdef
        )


def spawn_bounded(argv: Sequence[str], stdin: int, stderr: int, seconds: int) -> int:
    """Start *argv* (an absolute path first, no search) as a child that the kernel kills with
    SIGALRM after *seconds* (``alarm(2)`` set in the child before ``execve``, which keeps it), so
    that the caller never has to watch a clock for it; returns its pid.

    The child gets *stdin* on fd 0, /dev/null on fd 1, *stderr* on fd 2, no other descriptor of
    the caller, an empty signal mask, SIG_DFL for the signals CPython ignores, ``os.environ``.
    A ``fork`` (not ``posix_spawn``: the alarm must be set between the two) of a single-threaded
    caller. Raises OSError when the fork fails; an exec that fails is the child's exit code 127,
    after one line on *stderr* (``unable to spawn PATH: reason``).
    """
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = os.fork()
        if pid == 0:  # the child: only system calls until the exec, then _exit whatever happens
            try:
                try:
                    _signal.set_wakeup_fd(-1)  # the caller's self-pipe is not the child's
                except ValueError:  # not the main thread: it has none
                    pass
                for fd, target in ((stdin, 0), (null, 1), (stderr, 2)):
                    os.dup2(fd, target)
                try:
                    names = os.listdir("/proc/self/fd")
                except OSError:  # no /proc (a chroot)
                    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                    names = []
                for name in names:
                    if int(name) > 2:
                        try:
                            os.close(int(name))
                        except OSError:
                            pass
                restore_default_signals()
                _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
                _signal.alarm(max(1, seconds))
                try:
                    os.execve(argv[0], list(argv), os.environ)
                except OSError as e:
                    os.write(2, f"unable to spawn {argv[0]}: {os.strerror(e.errno or errno.EIO)}\n".encode())
            finally:
                os._exit(127)
        return pid
    finally:
        os.close(null)


def exited_children() -> Iterator[Tuple[int, int]]:
    """``(pid, status)`` of every child that has exited, reaped one by one (``waitpid(-1,
    WNOHANG)``) until none is left to reap. Raises :class:`SystemFailure` ``wait_nohang`` for an
    error other than having no child at all."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except OSError as e:
            raise SystemFailure("wait_nohang", e.errno or errno.EIO) from None
        if pid == 0:
            return
        yield pid, status
