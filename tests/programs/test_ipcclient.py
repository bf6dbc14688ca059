"""ipcclient against /usr/bin/s6-ipcclient, each against both servers (s6's chain and ours).

The program the client execs reports what it got: fds 6 and 7 (same socket? status flags), PROTO,
IPCLOCALPATH and the whole environment in order, and what the server's child wrote back (its
IPCREMOTEPATH), so each case shows both ends of the connection.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from tests.support.processes import RunningServer, ours, run, scratch_dir, theirs

CLIENTS = {"ours": ours, "s6": theirs}
HANDLER = ["sh", "-c", 'echo "remote=${IPCREMOTEPATH-unset}"']
PROBE = r"""
import json, os
# /proc/self/environ: the environment as exec'd, before Python's own locale coercion adds LC_CTYPE
def flags(fd):
    with open("/proc/self/fdinfo/%d" % fd) as f:
        return [line.split()[1] for line in f if line.startswith("flags:")][0]
r = {"fd6": os.readlink("/proc/self/fd/6").split(":")[0], "flags6": flags(6), "flags7": flags(7),
     "same": os.readlink("/proc/self/fd/6") == os.readlink("/proc/self/fd/7"),
     "PROTO": os.environ.get("PROTO"), "IPCLOCALPATH": os.environ.get("IPCLOCALPATH", "unset"),
     "env": [v.split(b"=")[0].decode() for v in open("/proc/self/environ", "rb").read().split(b"\0") if v]}
data = b""
while True:
    chunk = os.read(6, 4096)
    if not chunk:
        break
    data += chunk
r["got"] = data.decode()
print(json.dumps(r))
"""
PROG = ["/usr/bin/python3", "-I", "-S", "-c", PROBE]
BASE_ENV = {"PATH": "/usr/bin:/bin"}

Outcome = Tuple[int, Optional[dict], str]  # type: ignore[type-arg]


@pytest.fixture(scope="module")
def servers() -> Iterator[Dict[str, str]]:
    """One listening server per implementation: {"s6": path, "ours": path}."""
    d = tempfile.mkdtemp(prefix="s6c", dir="/tmp")
    os.chmod(d, 0o755)
    started = []
    paths = {}
    try:
        for who, argv in (("s6", theirs("ipcserver")), ("ours", ours("ipcserver"))):
            paths[who] = os.path.join(d, who)
            started.append(RunningServer(argv + ["-1", paths[who], *HANDLER], env=BASE_ENV))
        yield paths
    finally:
        for s in started:
            s.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[str]:
    with scratch_dir("s6w") as d:
        yield d


def client(who: str, args: List[str], prog: Optional[List[str]] = None, env: Optional[Dict[str, str]] = None,
           shell_redirections: str = "") -> Outcome:
    argv = CLIENTS[who]("ipcclient") + args + (PROG if prog is None else prog)
    if shell_redirections:
        argv = ["sh", "-c", f'exec "$@" {shell_redirections}', "sh", *argv]
    p = run(argv, env={**BASE_ENV, **(env or {})})
    out = p.stdout.decode()
    name = "s6-ipcclient" if who == "s6" else "ipcclient"
    err = p.stderr.decode().replace(name, "NAME")
    return p.returncode, json.loads(out) if out.startswith("{") else None, err


def both_clients(args: List[str], left: Optional[str] = None, **kw) -> Outcome:  # type: ignore[no-untyped-def]
    """Run s6's client then ours; *left*: a file each run must leave behind (removed in between)."""
    outcomes = []
    for who in ("s6", "ours"):
        outcomes.append(client(who, args, **kw))
        if left is not None:
            assert os.path.exists(left), who
            os.unlink(left)
    assert outcomes[1] == outcomes[0]
    return outcomes[0]


@pytest.mark.parametrize("server", ["s6", "ours"])
def test_fds_and_environment(servers: Dict[str, str], server: str) -> None:
    env = {"PROTO": "x", "A": "1", "IPCLOCALPATH": "z", "B": "2"}
    code, probe, err = both_clients([servers[server]], env=env)
    assert (code, err) == (0, "")
    assert probe is not None
    assert probe["fd6"] == "socket" and probe["same"]
    assert probe["flags6"] == probe["flags7"] == "02"  # blocking, not close-on-exec
    assert probe["PROTO"] == "IPC"
    assert probe["IPCLOCALPATH"] == ""
    assert probe["got"] == "remote=\n"
    # s6's env_merge order: the last variable takes a removed one's place, new ones go to the end
    assert probe["env"] == ["PATH", "B", "A", "PROTO", "IPCLOCALPATH"]


def test_fds_6_and_7_replace_open_ones(servers: Dict[str, str]) -> None:
    code, probe, _ = both_clients([servers["ours"]], shell_redirections="3</dev/null 4</dev/null 5</dev/null "
                                                                          "6</dev/null 7</dev/null")
    assert code == 0 and probe is not None
    assert probe["fd6"] == "socket" and probe["same"] and probe["flags7"] == "02"
    code, probe, _ = both_clients([servers["ours"]], shell_redirections="3</dev/null 4</dev/null 5</dev/null")
    assert code == 0 and probe is not None
    assert probe["fd6"] == "socket" and probe["same"] and probe["flags7"] == "02"


@pytest.mark.parametrize("server", ["s6", "ours"])
@pytest.mark.parametrize(
    "local, expected", [("name", "name"), ("", ""), ("é" * 60, ("é" * 60).encode()[:107])]
)
def test_local_name(servers: Dict[str, str], server: str, local: str, expected: object) -> None:
    code, probe, _ = both_clients(["-l", local, servers[server]])
    assert code == 0 and probe is not None
    if isinstance(expected, bytes):  # truncated to 107 bytes, even inside a UTF-8 sequence
        assert os.fsencode(probe["IPCLOCALPATH"]) == expected
    else:
        assert probe["IPCLOCALPATH"] == expected
    assert probe["got"] == "remote=\n"


@pytest.mark.parametrize("server", ["s6", "ours"])
def test_bind_path(servers: Dict[str, str], server: str, workdir: str) -> None:
    bindpath = os.path.join(workdir, "c")
    code, probe, err = both_clients(["-p", bindpath, servers[server]], left=bindpath)
    assert (code, err) == (0, "") and probe is not None
    assert probe["IPCLOCALPATH"] == bindpath
    assert probe["got"] == f"remote={bindpath}\n"
    # -l wins over the bound path for IPCLOCALPATH, not for the server's IPCREMOTEPATH
    code, probe, err = both_clients(["-l", "L", "-p", bindpath, servers[server]], left=bindpath)
    assert probe is not None and probe["IPCLOCALPATH"] == "L"
    assert probe["got"] == f"remote={bindpath}\n"


def test_bind_path_exists(servers: Dict[str, str], workdir: str) -> None:
    bindpath = os.path.join(workdir, "c")
    with open(bindpath, "w"):
        pass
    got = both_clients(["-p", bindpath, servers["ours"]])
    assert got == (111, None, f"NAME: fatal: unable to bind socket to {bindpath}: Address already in use\n")


@pytest.mark.parametrize(
    "opts, lines",
    [([], 0), (["-v"], 1), (["-q", "-v"], 0), (["-v", "-q"], 0), (["-vv"], 1), (["-v", "-Q"], 0),
     (["-Q", "-v"], 1), (["-qqv"], 0), (["-q"], 0)],
)
def test_verbosity(servers: Dict[str, str], opts: List[str], lines: int) -> None:
    path = servers["ours"]
    code, probe, err = both_clients([*opts, path])
    assert code == 0 and probe is not None
    assert err == f"NAME: info: NAME: connected to {path}\n" * lines


def test_connect_failures(workdir: str) -> None:
    missing = os.path.join(workdir, "missing")
    assert both_clients([missing], prog=["true"]) == (
        111, None, f"NAME: fatal: unable to connect to {missing}: No such file or directory\n")
    stale = os.path.join(workdir, "stale")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(stale)  # bound, never listening
        assert both_clients([stale], prog=["true"]) == (
            111, None, f"NAME: fatal: unable to connect to {stale}: Connection refused\n")
    long108 = os.path.join(workdir, "x" * (108 - len(workdir) - 1))
    assert both_clients([long108], prog=["true"]) == (
        111, None, f"NAME: fatal: unable to connect to {long108}: Protocol error\n")
    assert both_clients(["-p", long108, missing], prog=["true"]) == (
        111, None, f"NAME: fatal: unable to bind socket to {long108}: Protocol error\n")
    assert not os.path.exists(long108)


def test_exec_failure(servers: Dict[str, str]) -> None:
    assert both_clients([servers["ours"]], prog=["nope-no-such"]) == (
        127, None, "NAME: fatal: unable to exec nope-no-such: No such file or directory\n")


@pytest.mark.parametrize(
    "args", [[], ["P"], ["-x", "P", "true"], ["-p"], ["-l"], ["--", "P"], ["--verbose", "P", "true"]],
)
def test_usage(args: List[str], workdir: str) -> None:
    argv = [os.path.join(workdir, "s") if a == "P" else a for a in args]
    assert both_clients(argv, prog=[]) == (
        100, None, "NAME: usage: NAME [ -q | -Q | -v ] [ -p bindpath ] [ -l localname ] path prog...\n")
