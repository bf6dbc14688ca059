"""Values from outside as C strings, and the finder of the places that exec or set an environment
without going through :mod:`s6ipc.base.cstrings`."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys
from typing import Dict, Iterator, Tuple

import pytest

import s6ipc
from s6ipc.base import cstrings, execution
from s6ipc.base.errors import ExecFailure


def test_cut_and_bounds() -> None:
    assert cstrings.cut("al\0ice") == "al"
    assert cstrings.cut("\0x") == ""
    assert cstrings.cut("plain") == "plain"
    assert cstrings.cut_bytes(b"abc\0def", 2) == b"ab"
    assert cstrings.cut_bytes(b"abcdef", 4) == b"abcd"
    assert cstrings.peer_text(b"a\xff\r\n\x01\0rest") == "a\udcff\r\n\x01"
    assert os.fsencode(cstrings.peer_text(b"\xc3(\x80")) == b"\xc3(\x80"  # any byte survives


def test_c_environment_and_words() -> None:
    env = {"A": "1", "B": "x\0y"}
    assert cstrings.c_environment({"A": "1"}) is not None
    plain = {"A": "1"}
    assert cstrings.c_environment(plain) is plain  # the per-connection case allocates nothing
    assert cstrings.c_environment(env) == {"A": "1", "B": "x"}
    assert cstrings.c_environment({"N\0AME": "v", "N": "w"}) == {"N": "v"}  # the first of a name
    placeholder = {"\x000": "raw entry"}
    assert cstrings.c_environment(dict(placeholder, B="\0")) == dict(placeholder, B="")
    assert cstrings.c_words(["prog", "a\0b", ""]) == ["prog", "a", ""]
    target: Dict[str, str] = {}
    cstrings.assign(target, [("X", "1\0two"), ("\0Y", "skipped")])
    assert target == {"X": "1"}


def test_exec_with_nuls_runs_the_cut_values() -> None:
    code = ("from s6ipc.base.execution import exec_argv; "
            "exec_argv(['/usr/bin/env\\0ignored', '-0\\0x'], {'V': 'peer\\0tail', 'PATH': '/bin\\0x'})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == b"V=peer\0PATH=/bin\0"


def test_exec_of_a_name_empty_after_the_cut_fails_as_s6_does() -> None:
    with pytest.raises(ExecFailure):
        execution.exec_argv(["\0/bin/true"], {"PATH": "/nonexistent"})


def test_spawner_cuts_argv_and_environment(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        pid = execution.Spawner(["/usr/bin/env\0x", "-0"]).spawn(fd, {"V": "a\0b"})
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.read_bytes() == b"V=a\0"


# -- the finder ----------------------------------------------------------------------------------

SRC = pathlib.Path(s6ipc.__file__).parent
_SINKS = {"execve", "execv", "execvp", "execvpe", "execl", "execle", "execlp", "posix_spawn",
          "posix_spawnp", "putenv", "spawnv", "spawnve", "system", "popen"}

#: Every place that sets an environment variable or starts a program without the base layer's
#: C-string boundary, and why its values cannot come from outside. A new place fails the test:
#: route it through s6ipc.base.cstrings (assign, c_environment, c_words) or add it here with a reason.
REVIEWED = {
    ("base/cstrings.py", "assign", "environ[]="): "the boundary itself",
    ("base/environment.py", "replace", "environ[]="): "values went through c_environment above",
    ("base/execution.py", "undo_locale_coercion", "environ[]="): "a value read from /proc/self/environ: "
                                                                  "a C string already",
    ("base/execution.py", "_spawn_now", "os.posix_spawn"): "Spawner.spawn applied c_environment, "
                                                            "argv cut at construction",
    ("base/execution.py", "exec_argv", "os.execve"): "exec_argv applied c_environment and c_words",
    ("base/systemd_backend.py", "notify", "os.putenv"): "our own socket address",
    ("daemon/upgrade.py", "write_state", "environ[]="): "a descriptor number",
    ("base/execution.py", "spawn_bounded", "os.execve"): "the preflight: our own argv (installed_prefix "
                                                          "and the daemon's own arguments) and os.environ",
    ("programs/listen_pid.py", "main", "environ[]="): "a pid",
    ("programs/sdnotify_bridge.py", "main", "environ[]="): "an address this program made",
    ("sockets/give.py", "set_listen_pid", "environ[]="): "a pid and a pidfd inode number",
    ("sockets/give.py", "describe", "environ[]="): "a count (the names go through assign)",
    ("sockets/give.py", "spawn_with_sockets", "os.posix_spawn"): "c_environment and c_words applied "
                                                                  "in the call",
}


def _sites() -> Iterator[Tuple[str, str, str]]:
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        rel = str(path.relative_to(SRC))
        owner: Dict[int, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    owner.setdefault(id(sub), node.name)
        for node in ast.walk(tree):
            kind = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                func, base = node.func, node.func.value
                if isinstance(base, ast.Name) and (base.id == "subprocess" or
                                                   (base.id == "os" and func.attr in _SINKS)):
                    kind = f"{base.id}.{func.attr}"
                elif func.attr == "update" and "environ" in ast.unparse(base):
                    kind = "environ.update"
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Subscript) and "environ" in ast.unparse(t.value) for t in node.targets):
                kind = "environ[]="
            if kind:
                yield rel, owner.get(id(node), "<module>"), kind


def test_every_exec_and_environment_write_goes_through_the_boundary_or_is_reviewed() -> None:
    found = set(_sites())
    assert found - set(REVIEWED) == set(), "new places that exec or set the environment: see REVIEWED"
    assert set(REVIEWED) - found == set(), "REVIEWED names places that are gone"


def test_the_finder_finds() -> None:
    tree_sites = list(_sites())
    assert ("base/execution.py", "exec_argv", "os.execve") in tree_sites
