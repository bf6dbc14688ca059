"""Mixing stages of the two implementations: every link of the chain can be s6's or ours.

The listening socket reaches the daemon as fd 0 whoever bound it, the privilege stage only changes
ids before exec'ing the rest, and the client speaks nothing but connect(2): so every combination
must give the handler the same view of the world.
"""

from __future__ import annotations

import os
import stat
from typing import Callable, Dict, List

import pytest

from tests.support.processes import (
    IMPLEMENTATIONS,
    SOCKETBINDER,
    RunningServer,
    as_installed_s6,
    env_of,
    installed_s6,
    ours,
    requires_root,
    run,
    theirs,
)

WHO = ["ours", "s6"]
ENV = {"PATH": "/usr/bin:/bin", "FOO": "bar"}
CONNECTION_VARIABLES = ("PROTO", "IPCREMOTEEUID", "IPCREMOTEEGID", "IPCCONNNUM", "IPCREMOTEPATH")

Factory = Callable[..., RunningServer]


def handler_state(output: bytes) -> Dict[str, str]:
    """``handler state`` output as {"fd0": "socket:[…] 02", …, "Uid": "…"} (see handler.c)."""
    result = {}
    for line in output.decode().splitlines():
        if line.startswith("fd "):
            _, n, rest = line.split(" ", 2)
            result["fd" + n] = rest
        else:
            key, value = line.split(":", 1)
            result[key] = " ".join(value.split())
    return result


@pytest.mark.parametrize("binder", WHO)
@pytest.mark.parametrize("daemon", WHO)
def test_binder_and_daemon_combinations(binder: str, daemon: str, sockdir: str, handler: str,
                                        server_factory: Factory) -> None:
    """Each socket binder feeds each daemon: socket mode, child fds and environment are the same."""
    path = os.path.join(sockdir, "s")
    argv = [*IMPLEMENTATIONS[binder]("ipcserver-socketbinder"), "-a", "0700", path,
            *IMPLEMENTATIONS[daemon]("ipcserverd"), "-1", handler, "state"]
    server_factory(argv, env=ENV)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700 and stat.S_ISSOCK(os.stat(path).st_mode)
    state = handler_state(client_output(["/usr/bin/s6-ipcclient", path, "sh", "-c", "cat <&6"]))
    assert state["fd0"] == state["fd1"]
    assert state["fd0"].startswith("socket:[") and state["fd0"].endswith(" 02")
    assert sorted(k for k in state if k.startswith("fd")) == ["fd0", "fd1", "fd2"]


def client_output(argv: List[str]) -> bytes:
    r = run(argv, env=ENV)
    assert r.returncode == 0, r.stderr
    return bytes(r.stdout)


@pytest.mark.parametrize("client", WHO)
@pytest.mark.parametrize("server", WHO)
def test_client_and_server_combinations(client: str, server: str, sockdir: str, handler: str,
                                        server_factory: Factory) -> None:
    """s6-ipcclient and ours against s6-ipcserver and ours: same server-side and client-side env (our
    server on the installed s6's line, S6IPC_S6)."""
    path = os.path.join(sockdir, "s")
    bound = os.path.join(sockdir, "c")
    server_factory([*IMPLEMENTATIONS[server]("ipcserver"), "-1", path, handler, "env"],
                   env=as_installed_s6(ENV))
    script = 'cat <&6; echo "client PROTO=$PROTO IPCLOCALPATH=$IPCLOCALPATH"'
    out = client_output([*IMPLEMENTATIONS[client]("ipcclient"), "-p", bound, path, "sh", "-c", script])
    served = env_of(out)
    assert {k: served[k] for k in CONNECTION_VARIABLES} == {
        "PROTO": "IPC", "IPCREMOTEEUID": str(os.geteuid()), "IPCREMOTEEGID": str(os.getegid()),
        "IPCCONNNUM": str(installed_s6().connnum(0)), "IPCREMOTEPATH": bound}
    assert served["FOO"] == "bar" and "IPCLOCALPATH" not in served
    assert out.decode().splitlines()[-1] == f"client PROTO=IPC IPCLOCALPATH={bound}"


@requires_root
@pytest.mark.parametrize("middle", WHO)
def test_applyuidgid_between_s6_stages(middle: str, sockdir: str, handler: str,
                                       server_factory: Factory) -> None:
    """s6 socketbinder → (our | s6's) applyuidgid → s6-ipcserverd: the child runs with the new ids."""
    path = os.path.join(sockdir, "s")
    argv = [SOCKETBINDER, path, *IMPLEMENTATIONS[middle]("applyuidgid"), "-u", "65534", "-g", "65534",
            "-G", "100,200", "/usr/bin/s6-ipcserverd", "-1", handler, "state"]
    server = server_factory(argv, env=ENV)
    state = handler_state(client_output(["/usr/bin/s6-ipcclient", path, "sh", "-c", "cat <&6"]))
    assert state["Uid"] == "65534 65534 65534 65534"
    assert state["Gid"] == "65534 65534 65534 65534"
    assert state["Groups"] == "100 200 65534"
    with open(f"/proc/{server.proc.pid}/status") as f:
        assert any(line.split()[:2] == ["Uid:", "65534"] for line in f)  # the daemon itself dropped


def test_implementations_are_distinct() -> None:
    """Guard: the differential tests really compare two different programs."""
    assert ours("ipcserverd")[0] != theirs("ipcserverd")[0]
