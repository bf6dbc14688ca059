"""s6ipc.base.environment: entries CPython cannot hold in os.environ are passed on exactly.

The cases that need such an environment start a fresh interpreter with it through the module's own
libc ``posix_spawn`` (``subprocess`` cannot pass ``=x`` or a name twice), and read back what the
child would give to its own exec.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, List

from s6ipc.base import environment

BASE = [b"PATH=/usr/bin:/bin", b"LC_ALL=C.UTF-8"]


def _spawn_python(code: str, env: List[bytes]) -> Any:
    r, w = os.pipe()
    try:
        pid = environment.posix_spawn(sys.executable, [sys.executable, "-c", code], env, [(w, 1)], [])
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(out)


ADOPT = """
import json, os
from s6ipc.base import environment
before = sorted(os.environ)
environment.adopt(os.environ)
keys = list(os.environ)
raw = environment.entries(dict(os.environ))
print(json.dumps({"before": before, "placeholders": [k for k in keys if environment.is_placeholder(k)],
                  "entries": None if raw is None else [e.decode("latin-1") for e in raw]}))
"""


def test_the_exact_array_survives_adopt_and_entries() -> None:
    env = [b"=empty-name", *BASE, b"NOEQUALS", b"DUP=first", b"DUP=second", b"LATIN=\xe9"]
    got = _spawn_python(ADOPT, env)
    assert "NOEQUALS" not in got["before"] and got["before"].count("DUP") == 1  # what CPython kept
    assert len(got["placeholders"]) == 3   # =empty-name, NOEQUALS, the second DUP
    assert [e.encode("latin-1") for e in got["entries"]] == env


def test_a_representable_environment_needs_no_array() -> None:
    got = _spawn_python(ADOPT, [*BASE, b"A=1"])
    assert got["placeholders"] == [] and got["entries"] is None


def test_modifications_keep_the_placeholders_in_place() -> None:
    code = ADOPT.replace("raw = environment.entries(dict(os.environ))",
                         "env = dict(os.environ); env['NEW'] = 'v'; del env['A']; env['DUP'] = 'changed'\n"
                         "raw = environment.entries(env)")
    got = _spawn_python(code, [b"A=1", *BASE, b"DUP=x", b"DUP=y"])
    assert [e.encode("latin-1") for e in got["entries"]] == [*BASE, b"DUP=changed", b"DUP=y", b"NEW=v"]


def test_execve_with_the_exact_array() -> None:
    code = ("import os\nfrom s6ipc.base import environment\n"
            "environment.execve('/bin/sh', ['sh', '-c', 'tr \"\\\\0\" \"\\\\n\" < /proc/$$/environ'], "
            "[b'=x', b'PATH=/bin', b'ODD'])\n")
    r, w = os.pipe()
    pid = environment.posix_spawn(sys.executable, [sys.executable, "-c", code], [*BASE], [(w, 1)], [])
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    os.waitpid(pid, 0)
    assert out.split(b"\n")[:3] == [b"=x", b"PATH=/bin", b"ODD"]


def test_execve_failure_is_an_oserror() -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            environment.execve("/nonexistent/prog", ["prog"], [b"A=1"])
        except OSError as e:
            os._exit(e.errno or 99)
        os._exit(98)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2  # ENOENT


def test_posix_spawn_failure_is_an_oserror() -> None:
    try:
        environment.posix_spawn("/nonexistent/prog", ["prog"], [b"A=1"], [], [])
    except OSError as e:
        assert e.errno == 2
    else:  # pragma: no cover
        raise AssertionError("spawned a missing program")


def test_entries_without_placeholders() -> None:
    assert environment.entries({"A": "1", "B": "2"}) is None
    # a key no exec can pass ("") is left out of the array, the rest kept in order
    assert environment.entries({"A": "1", "": "x", "B": "2"}) == [b"A=1", b"B=2"]


def test_placeholder_keys() -> None:
    assert environment.is_placeholder("\0" + "3")
    assert not environment.is_placeholder("PATH")
    assert not environment.is_placeholder("")


def test_replace_makes_os_environ_exactly_the_mapping() -> None:
    saved = dict(os.environ)
    try:
        wanted = {k: v for k, v in saved.items() if k != "HOME"}
        wanted["S6IPC_TEST_NEW"] = "1"
        environment.replace(os.environ, wanted)
        assert list(os.environ.items()) == list(wanted.items())
        assert os.getenv("HOME") is None and os.environ["S6IPC_TEST_NEW"] == "1"
    finally:
        environment.replace(os.environ, saved)
    assert dict(os.environ) == saved
