"""s6ipc.base.execution: the one PATH search (find_program), held against s6's own.

s6's programs search ``PATH`` with skalibs' ``mexec``: empty entries are skipped (never the
current directory), a directory or a file without execute permission is passed over with EACCES,
the first executable regular file wins. ``s6-applyuidgid -u UID -g GID prog`` (no change of
identity: our own ids) execs *prog* exactly that way, so it shows s6's answer for each PATH here.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from typing import Any, Iterator

import pytest

from s6ipc.base.errors import ExecFailure
from s6ipc.base.execution import Spawner, exited_children, find_program, spawn_bounded
from s6ipc.chain.entry import _resolve as entry_resolve

APPLYUIDGID = shutil.which("s6-applyuidgid") or "/usr/bin/s6-applyuidgid"
needs_s6 = pytest.mark.skipif(not os.access(APPLYUIDGID, os.X_OK), reason="s6 not installed")


@pytest.fixture
def tree(tmp_path: os.PathLike[str]) -> Iterator[str]:
    """dir/ (``foo`` a directory), noexec/ (``foo`` not executable), first/ and second/ (``foo``
    scripts saying which they are), cwd/ (a ``foo`` in the current directory)."""
    root = str(tmp_path)
    os.makedirs(f"{root}/dir/foo")
    for name in ("noexec", "first", "second", "cwd"):
        os.makedirs(f"{root}/{name}")
        with open(f"{root}/{name}/foo", "w") as f:
            f.write(f"#!/bin/sh\necho {name}\n")
        os.chmod(f"{root}/{name}/foo", 0o644 if name == "noexec" else 0o755)
    yield root


def s6_runs(root: str, path: str) -> str:
    """What s6 runs for ``foo`` with *path*: the script's word, or s6's error text."""
    result = subprocess.run([APPLYUIDGID, "-u", str(os.getuid()), "-g", str(os.getgid()), "foo"],
                            cwd=f"{root}/cwd", env={"PATH": path}, capture_output=True, timeout=10)
    if result.returncode == 0:
        return result.stdout.decode().strip()
    return result.stderr.decode().strip().rpartition(": ")[2]


def ours(root: str, path: str) -> str:
    try:
        found = find_program("foo", path)
    except ExecFailure as e:
        return os.strerror(e.errno)
    return os.path.basename(os.path.dirname(found))


CASES = [
    ("{r}/first:{r}/second", "first"),            # first match wins
    ("{r}/dir:{r}/noexec:{r}/second", "second"),  # a directory and a non-executable file are passed over
    (":{r}/second", "second"),                    # an empty entry is skipped...
    ("::{r}/dir", "Permission denied"),           # ...never the current directory (cwd/foo exists)
    ("{r}/dir", "Permission denied"),             # what execve says of a directory
    ("{r}/noexec", "Permission denied"),
    ("{r}/missing:{r}/nowhere", "No such file or directory"),
    ("{r}/noexec:{r}/missing", "Permission denied"),  # the EACCES met is remembered past an ENOENT
    ("{r}/first/foo:{r}/second", "second"),           # ENOTDIR (a file as a directory) moves on
]


@pytest.mark.parametrize("path, expected", CASES)
def test_find_program_searches_path_as_s6_does(tree: str, path: str, expected: str) -> None:
    assert ours(tree, path.format(r=tree)) == expected


@needs_s6
@pytest.mark.parametrize("path, expected", CASES)
def test_s6_itself_gives_the_same_answers(tree: str, path: str, expected: str) -> None:
    assert s6_runs(tree, path.format(r=tree)) == expected


def test_a_name_with_a_slash_is_not_searched(tree: str) -> None:
    assert find_program(f"{tree}/second/foo", f"{tree}/first") == f"{tree}/second/foo"
    with pytest.raises(ExecFailure) as info:
        find_program(f"{tree}/dir/foo", f"{tree}/first")
    assert info.value.errno == errno.EACCES


def test_no_path_means_the_default() -> None:
    assert find_program("sh", None) in ("/usr/bin/sh", "/bin/sh")


def test_every_search_is_this_one(tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Spawner, the chain's "is this our program" and spawn_with_sockets search alike."""
    monkeypatch.chdir(f"{tree}/cwd")
    path = f":{tree}/dir:{tree}/noexec:{tree}/second"
    monkeypatch.setenv("PATH", path)
    assert entry_resolve("foo") == f"{tree}/second/foo"
    assert Spawner(["foo"])._resolve({"PATH": path}) == f"{tree}/second/foo"
    monkeypatch.setenv("PATH", f"::{tree}/dir")
    assert entry_resolve("foo") is None  # not ./foo
    with pytest.raises(ExecFailure) as info:
        Spawner(["foo"])._resolve({"PATH": f"::{tree}/dir"})
    assert info.value.errno == errno.EACCES


def test_spawn_with_sockets_does_not_run_a_program_from_the_current_directory(
        tree: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from s6ipc.sockets.give import spawn_with_sockets

    monkeypatch.chdir(f"{tree}/cwd")
    with pytest.raises(ExecFailure) as info:
        spawn_with_sockets(["foo"], [], env={"PATH": f":{tree}/missing"})
    assert info.value.errno == errno.ENOENT
    pid = spawn_with_sockets(["foo"], [], env={"PATH": f":{tree}/second"})
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_spawn_bounded_is_ended_by_the_kernel_and_leaks_no_descriptor(tmp_path: Any) -> None:
    """The alarm set before the exec kills a child that does not end by itself; the child sees
    only its three descriptors (*stdin*, /dev/null, *stderr*), whatever the caller holds open."""
    r, w = os.pipe2(os.O_CLOEXEC)
    leaked = os.open(os.devnull, os.O_RDONLY)  # inheritable: the child must not see it anyway
    started = time.monotonic()
    try:
        with open(os.devnull, "rb") as stdin:
            argv = ["/bin/sh", "-c", "ls /proc/self/fd >&2; exec sleep 30"]
            pid = spawn_bounded(argv, stdin.fileno(), w, 1)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        listed = os.read(r, 4096).split()
    finally:
        os.close(r)
        os.close(leaked)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM
    assert 0.9 < time.monotonic() - started < 10
    assert sorted(int(n) for n in listed) == [0, 1, 2, 3]  # 3: the directory ls reads


def test_spawn_bounded_says_why_an_exec_failed() -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    with open(os.devnull, "rb") as stdin:
        pid = spawn_bounded(["/nonexistent/prog"], stdin.fileno(), w, 5)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    line = os.read(r, 4096)
    os.close(r)
    assert os.WEXITSTATUS(status) == 127
    assert line == b"unable to spawn /nonexistent/prog: No such file or directory\n"


def test_exited_children_reaps_every_exited_child_and_stops() -> None:
    """Each exited child once, with its status; a live child is left alone; none at all is no error."""
    pids = set()
    for code in (0, 3):
        pid = os.fork()
        if pid == 0:
            os._exit(code)
        pids.add(pid)
    alive = subprocess.Popen(["sleep", "30"])
    try:
        seen = {}
        deadline = time.monotonic() + 10
        while set(seen) != pids and time.monotonic() < deadline:
            seen.update(exited_children())
            time.sleep(0.01)
        assert sorted(os.waitstatus_to_exitcode(seen[p]) for p in pids) == [0, 3]
        assert alive.pid not in seen and list(exited_children()) == []
    finally:
        alive.kill()
        alive.wait()
