"""Privilege drop seen from inside the handler: real, effective, saved and fs ids, and groups.

``ipcserver -u/-g/-G/-U`` runs as root, drops privileges in its applyuidgid stage, and the daemon
(a Python process running from the venv, hence a venv built from a world-readable interpreter)
then spawns the handler, which reports /proc/self/status. Same scenario with s6-ipcserver.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Callable, Dict, List

import pytest

import s6ipc
from tests.support.processes import (
    IMPLEMENTATIONS,
    S6IPC,
    RunningServer,
    env_of,
    request,
    requires_root,
    run,
)

WHO = ["ours", "s6"]
NOBODY = 65534

pytestmark = requires_root

CASES = {
    # options, environment, expected Uid, Gid, Groups lines
    "u-g-G": (["-u", str(NOBODY), "-g", str(NOBODY), "-G", "100,200"], {},
              [NOBODY] * 4, [NOBODY] * 4, [100, 200, NOBODY]),
    "U": (["-U"], {"UID": str(NOBODY), "GID": "100", "GIDLIST": "300,100"},
          [NOBODY] * 4, [100] * 4, [100, 300]),
    "g-only": (["-g", str(NOBODY)], {}, [0] * 4, [NOBODY] * 4, None),
    "empty-G": (["-u", str(NOBODY), "-G", ""], {}, [NOBODY] * 4, [0] * 4, [0]),
}


def status_of(output: bytes) -> Dict[str, List[int]]:
    result = {}
    for line in output.decode().splitlines():
        if line.startswith(("Uid:", "Gid:", "Groups:")):
            key, values = line.split(":", 1)
            result[key] = [int(v) for v in values.split()]
    return result


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("who", WHO)
def test_ids_inside_the_handler(who: str, case: str, sockdir: str, handler: str,
                                server_factory: Callable[..., RunningServer]) -> None:
    opts, extra_env, uids, gids, groups = CASES[case]
    path = os.path.join(sockdir, "s")
    env = {"PATH": "/usr/bin:/bin", **extra_env}
    argv = [*IMPLEMENTATIONS[who]("ipcserver"), "-1", *opts, path, handler, "state"]
    server = server_factory(argv, env=env)
    seen = status_of(request(path))
    assert seen["Uid"] == uids  # real, effective, saved, filesystem
    assert seen["Gid"] == gids
    if groups is not None:
        assert seen["Groups"] == groups
    else:  # -g alone leaves the supplementary groups as they were
        assert seen["Groups"] == sorted(os.getgroups())
    with open(f"/proc/{server.proc.pid}/status", "rb") as f:
        daemon = status_of(f.read())
    assert daemon == seen  # the daemon itself runs with the dropped ids


@pytest.mark.parametrize("who", WHO)
def test_uid_variables_removed(who: str, sockdir: str, handler: str,
                               server_factory: Callable[..., RunningServer]) -> None:
    """-U is passed on as applyuidgid -Uz: UID, GID and GIDLIST do not reach the handler."""
    path = os.path.join(sockdir, "s")
    env = {"PATH": "/usr/bin:/bin", "UID": str(NOBODY), "GID": str(NOBODY), "GIDLIST": ""}
    server_factory([*IMPLEMENTATIONS[who]("ipcserver"), "-1", "-U", path, handler, "env"], env=env)
    seen = env_of(request(path))
    assert not {"UID", "GID", "GIDLIST"} & set(seen)
    assert seen["IPCREMOTEEUID"] == "0" and seen["PROTO"] == "IPC"


@pytest.fixture
def unreadable_package(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A copy of the s6ipc package in a 0700 directory: root reads it, nobody cannot."""
    base = str(tmp_path_factory.mktemp("priv0700"))
    shutil.copytree(os.path.dirname(s6ipc.__file__), os.path.join(base, "s6ipc"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    os.chmod(base, 0o700)
    return base


def test_the_stage_after_the_drop_is_imported_before_it(unreadable_package: str, sockdir: str) -> None:
    """fdholder-daemon -u nobody runs fdholderd in-process after applyuidgid; the interpreter's files
    (here: s6ipc's, in a 0700 directory, as a pyenv build in root's home) are imported before the drop
    and it serves. Without that, nobody could not import fdholderd (the one-line error is below)."""
    rules = os.path.join(sockdir, "rules", "uid", "0")
    os.makedirs(os.path.join(rules, "env"))
    open(os.path.join(rules, "allow"), "w").close()
    with open(os.path.join(rules, "env", "S6_FDHOLDER_LIST"), "w") as f:
        f.write("1\n")
    path = os.path.join(sockdir, "holder.sock")
    code = f"import sys; sys.path.insert(0, {unreadable_package!r}); from s6ipc.cli import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "fdholder-daemon", "-u", "65534", "-g", "65534",
                             "-1", "-i", os.path.dirname(os.path.dirname(rules)), path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(1) == b"\n", proc.stderr.read()
        listed = run([S6IPC, "fdholder-list", path])  # answered by the daemon running as nobody
        assert (listed.returncode, listed.stdout, listed.stderr) == (0, b"", b""), listed
        with open(f"/proc/{proc.pid}/status") as f:
            assert "Uid:\t65534\t65534\t65534\t65534" in f.read()
    finally:
        proc.kill()
        proc.wait()


def test_an_import_that_fails_after_the_drop_is_one_line() -> None:
    code = "import sys; sys.modules['resource'] = None; from s6ipc.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code, "fdholderd", "-i", "/nonexistent"], capture_output=True,
                         timeout=30)
    assert out.returncode == 111, out
    assert out.stderr.startswith(b"fdholderd: fatal: unable to import s6ipc.programs.fdholderd: ")
    assert out.stderr.count(b"\n") == 1, out.stderr
