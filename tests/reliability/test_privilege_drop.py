"""Privilege drop seen from inside the handler: real, effective, saved and fs ids, and groups.

``ipcserver -u/-g/-G/-U`` runs as root, drops privileges in its applyuidgid stage, and the daemon
(a Python process running from the venv, hence a venv built from a world-readable interpreter)
then spawns the handler, which reports /proc/self/status. Same scenario with s6-ipcserver.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List

import pytest

from tests.support.processes import (
    IMPLEMENTATIONS,
    RunningServer,
    env_of,
    request,
    requires_root,
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
