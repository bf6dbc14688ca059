"""ipcserver, the wrapper: the chain it builds is s6-ipcserver's, and that chain runs.

s6-ipcserver's chain is read from the real binary: run under ``strace -f -e trace=execve`` on a
path whose directory does not exist, it execs ``/usr/bin/s6-ipcserver-socketbinder`` with the whole
chain as arguments and the binder then fails at once. Our ``build_chain`` must give the same argv
word for word, with each ``/usr/bin/s6-X`` replaced by our stage words (``chain.stage``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Sequence

import pytest

from s6ipc.chain.run import stage
from s6ipc.programs import ipcserver
from tests.support.processes import (
    RunningServer,
    env_of,
    needs_reachable_interpreter,
    nobody_ids,
    ours,
    request,
    requires_root,
    run,
    theirs,
    traced_execs,
    wait_for_ready,
)

NOWHERE = "/nonexistent-s6ipc-dir/s"  # binding fails at once: the chain stops after its first exec
S6_PREFIX = "/usr/bin/s6-"
CLEAN_ENV = {"PATH": "/usr/bin:/bin"}  # no venv on PATH, no VIRTUAL_ENV: the chain must not need them

Factory = Callable[..., RunningServer]


def s6_chain(args: Sequence[str]) -> List[str]:
    """The argv s6-ipcserver execs for *args* (read with strace)."""
    proc, execs = traced_execs(theirs("ipcserver") + list(args))
    assert proc.returncode == 111, proc.stderr
    assert len(execs) >= 2, execs
    return execs[1]


def our_words(s6_argv: Sequence[str], style: str) -> List[str]:
    """s6's chain with each /usr/bin/s6-X replaced by our stage words for X."""
    result: List[str] = []
    for word in s6_argv:
        if word.startswith(S6_PREFIX):
            result += stage(word[len(S6_PREFIX):], style)
        else:
            result.append(word)
    return result


def our_chain(args: Sequence[str], style: str = "") -> List[str]:
    o, rest = ipcserver.parse(list(args))
    return ipcserver.build_chain(o, rest[0], rest[1:], style)


OPTION_SETS = [
    [],
    ["-q", "-D", "-P", "-1", "-c", "5", "-C", "3", "-b", "0", "-a", "0700"],
    ["-v", "-u", "1000", "-g", "100", "-G", "5,6:7"],
    ["-U"],
    ["-U", "-u", "5"],
    ["-u", "5", "-U"],
    ["-u", "5", "-g", "6", "-G", "7", "-U", "-g", "8"],
    ["-G", ""],
    ["-G", "0"],
    ["-U", "-G", ""],
    ["-u", "0", "-g", "0"],
    ["-u", "0"],
    ["-g", "7"],
    ["-u", "7"],
    ["-c", "0", "-C", "0", "-b", "5", "-a", "777"],
    ["-a", "1777", "-b", "99999", "-c", "5000"],
    ["-a", "0"],
    ["-a", "00000777"],
    ["-a", "7777"],
    ["-a", "17777777"],
    ["-a", "640"],
    ["-Q", "-q", "-v", "-Q", "-p", "-P", "-p"],
    ["-v", "-q"],
    ["-q", "-v"],
    ["-qv"],
    ["-vQ"],
    ["-P"],
    ["-p", "-P"],
    ["-1", "--"],
    ["-d", "-D", "-d"],
    ["-D", "-d", "-D"],
    ["-c5", "-C0", "-b0", "-a0640", "-u1", "-g2", "-G3,4"],
    ["-b", "4294967295", "-c", "4294967295", "-C", "4294967295"],
    ["-b", "00", "-c", "007"],
    ["-G", "42949672951"],
    ["-G", "1,2,abc"],
    ["-G", "5,,x,6"],
    ["-G", "1 2\t3;4:5"],
    ["-u", "4294967295", "-g", "4294967295"],
    ["-1qDPc1"],
    ["-c", "0" * 5000 + "7", "-a", "0" * 5000 + "640"],
]


@pytest.mark.parametrize("opts", OPTION_SETS, ids=lambda o: " ".join(o)[:60] or "none")
def test_chain_is_s6_ipcservers(opts: List[str]) -> None:
    args = [*opts, NOWHERE, "prog", "-x", "--", "arg"]
    expected = s6_chain(args)
    assert expected[0] == "/usr/bin/s6-ipcserver-socketbinder"
    assert expected[-5:] == ["--", "prog", "-x", "--", "arg"]
    assert our_chain(args) == our_words(expected, "")
    assert our_chain(args, "s6-") == our_words(expected, "s6-")


def test_chain_examples_written_out() -> None:
    """The chain s6-ipcserver execs, written out: the strace comparison above must not be vacuous."""
    s = our_words(["/usr/bin/s6-ipcserver-socketbinder"], "")
    a = our_words(["/usr/bin/s6-applyuidgid"], "")
    d = our_words(["/usr/bin/s6-ipcserverd"], "")
    assert our_chain(["/tmp/s1", "true"]) == [*s, "--", "/tmp/s1", *d, "--", "true"]
    args = ["-q", "-D", "-P", "-1", "-c", "5", "-C", "3", "-b", "0", "-a", "0700", "/tmp/s2", "echo", "hi"]
    assert our_chain(args) == [*s, "-D", "-b", "1", "-a", "0700", "--", "/tmp/s2",
                               *d, "-v0", "-1", "-P", "-c", "5", "-C", "3", "--", "echo", "hi"]
    assert our_chain(["-v", "-u", "1000", "-g", "100", "-G", "5,6:7", "/tmp/s3", "cat"]) == [
        *s, "--", "/tmp/s3", *a, "-u", "1000", "-g", "100", "-G", "5,6,7", "--", *d, "-v2", "--", "cat"]
    assert our_chain(["-U", "/tmp/s4", "cat"]) == [*s, "--", "/tmp/s4", *a, "-Uz", "--", *d, "--", "cat"]
    assert our_chain(["-u", "5", "-U", "/tmp/s4", "cat"]) == our_chain(["-U", "/tmp/s4", "cat"])
    assert our_chain(["-G", "", "/p", "cat"]) == [*s, "--", "/p", *a, "-G", "", "--", *d, "--", "cat"]
    assert our_chain(["-u", "0", "-g", "0", "/p", "cat"]) == [*s, "--", "/p", *d, "--", "cat"]
    assert our_chain(["-a", "1777", "-b", "99999", "-c", "5000", "/p", "x"]) == [
        *s, "-b", "99999", "-a", "0777", "--", "/p", *d, "-c", "5000", "--", "x"]
    assert our_chain(["-A", "rate=5/s", "-c", "9", "-A", "gidconn=2", "/p", "x"]) == [
        *s, "--", "/p", *d, "-c", "9", "-A", "rate=5/s", "-A", "gidconn=2", "--", "x"], "ours: -A, in order"
    assert s[-1] == "ipcserver-socketbinder" and os.path.isabs(s[0])


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["/p"],
        ["-x", "/p", "cat"],
        ["-a", "0800", "/p", "cat"],
        ["-a", "", "/p", "cat"],
        ["-G", "abc", "/p", "cat"],
        ["-G", ",5", "/p", "cat"],
        ["-c", "99999999999", "/p", "cat"],
        ["-c", "9" * 5000, "/p", "cat"],
        ["-c", "4294967296", "/p", "cat"],
        ["-c", "+5", "/p", "cat"],
        ["-c", " 5", "/p", "cat"],
        ["-C", "5x", "/p", "cat"],
        ["-b", "-1", "/p", "cat"],
        ["-u", "4294967296", "/p", "cat"],
        ["-g", "", "/p", "cat"],
        ["--foo", "/p", "cat"],
        ["-c"],
        ["-1", "--", "/p"],
        ["-q-", "/p", "cat"],
    ],
    ids=lambda a: " ".join(a)[:60] or "none",
)
def test_usage_errors(args: List[str]) -> None:
    s6 = run(theirs("ipcserver") + args)
    mine = run(ours("ipcserver") + args)
    assert s6.returncode == 100
    assert s6.stdout == b""
    assert s6.stderr.startswith(b"s6-ipcserver: usage: s6-ipcserver [ -q | -Q | -v ]")
    assert (mine.returncode, mine.stdout) == (100, b"")
    assert mine.stderr == s6.stderr.replace(b"s6-ipcserver", b"ipcserver")


# --- the chain runs -------------------------------------------------------------------------------


def test_emitted_chain_runs_from_a_venv_without_activation(sockdir: str, server_factory: Factory) -> None:
    path = os.path.join(sockdir, "s")
    argv = our_chain(["-1", "-c", "3", path, "sh", "-c", 'echo "$PROTO $IPCREMOTEEUID"'])
    assert argv[0] == os.path.join(os.path.dirname(sys.executable), "s6ipc")
    srv = server_factory(argv, env=CLEAN_ENV)
    expected = f"IPC {os.geteuid()}\n".encode()
    assert request(path) == expected
    assert request(path) == expected
    assert os.stat(path).st_mode & 0o777 == 0o777
    assert srv.proc.poll() is None


# s6's binary before our applyuidgid: a new interpreter of ours drops to nobody, then loads ipcserverd
@pytest.mark.parametrize("foreign", [
    pytest.param("ipcserver-socketbinder", marks=needs_reachable_interpreter),
    pytest.param("applyuidgid", marks=needs_reachable_interpreter),
    "ipcserverd",
])
@requires_root
def test_each_of_our_stages_runs_when_execd(foreign: str, sockdir: str, server_factory: Factory) -> None:
    """Put s6's binary in one place of our chain: the stage after it is then exec'd for real (by C)."""
    uid, gid = nobody_ids()
    path = os.path.join(sockdir, "s")
    argv = our_chain(["-1", "-u", str(uid), "-g", str(gid), "-G", "", path, "sh", "-c",
                      "id -u; id -g; id -G; echo $IPCREMOTEEUID"])
    ours_ = stage(foreign, "")
    i = next(i for i in range(len(argv)) if argv[i:i + len(ours_)] == ours_)
    argv[i:i + len(ours_)] = [S6_PREFIX + foreign]
    server_factory(argv, env=CLEAN_ENV)
    assert request(path).split() == [str(uid).encode(), str(gid).encode(), str(gid).encode(), b"0"]


def test_s6ipc_ipcserver_serves_in_one_process(sockdir: str, server_factory: Factory) -> None:
    path = os.path.join(sockdir, "s")
    srv = server_factory(ours("ipcserver") + ["-1", "-c", "2", path, "env"], env=CLEAN_ENV)
    env = env_of(request(path))
    assert env["PROTO"] == "IPC"
    assert env["IPCCONNNUM"] == "0"  # s6 2.12+: no other connection from this uid
    assert env["IPCREMOTEEUID"] == str(os.geteuid())
    assert "UID" not in env
    # the stages ran in-process: the server is the process we started, and its cmdline is the first stage
    with open(f"/proc/{srv.proc.pid}/cmdline", "rb") as f:
        cmdline = f.read().split(b"\0")[:-1]
    assert cmdline[-6:] == [b"ipcserver", b"-1", b"-c", b"2", path.encode(), b"env"]


@requires_root
def test_drop_from_env_removes_the_variables(sockdir: str, server_factory: Factory) -> None:
    """``-U``: ids from UID/GID/GIDLIST, which the handler does not see (``-Uz``), as with s6."""
    uid, gid = nobody_ids()
    env = {**CLEAN_ENV, "UID": str(uid), "GID": str(gid), "GIDLIST": "3,4"}
    handler = ["sh", "-c", "id -u; id -g; id -G; echo ${UID-unset} ${GID-unset} ${GIDLIST-unset}"]
    outputs = []
    for who in (ours, theirs):
        path = os.path.join(sockdir, who.__name__)
        server_factory(who("ipcserver") + ["-1", "-U", path, *handler], env=env)
        outputs.append(request(path))
    assert outputs[0] == outputs[1]
    assert outputs[0].split() == [str(uid).encode(), str(gid).encode(), str(gid).encode(), b"3", b"4",
                                  b"unset", b"unset", b"unset"]


def test_readiness_once_connectable(sockdir: str) -> None:
    """-1: exactly one newline on fd 1, then fd 1 is closed; a client can connect by then."""
    path = os.path.join(sockdir, "s")
    r, w = os.pipe()
    proc = subprocess.Popen(ours("ipcserver") + ["-1", path, "echo", "hi"], stdout=w,
                            stdin=subprocess.DEVNULL)
    os.close(w)
    try:
        assert wait_for_ready(r) == b"\n"
        assert request(path) == b"hi\n"
        assert os.read(r, 10) == b""  # EOF: the server closed its fd 1 after the newline
    finally:
        os.close(r)
        proc.terminate()
        proc.wait(5)


def test_log_prefix_is_the_invoked_name(sockdir: str, tmp_path: Path) -> None:
    """Invoked through an s6-NAME link, the stages report as s6's do (``s6-ipcserverd: info: …``)."""
    links = os.path.join(str(tmp_path), "bin")
    p = run(ours("links") + [links])
    assert p.returncode == 0, p.stderr
    logs = []
    for argv in (ours("ipcserver"), [os.path.join(links, "s6-ipcserver")], theirs("ipcserver")):
        path = os.path.join(sockdir, str(len(logs)))
        srv = RunningServer(argv + ["-v", "-1", path, "true"], env=CLEAN_ENV)
        try:
            request(path)
            logs.append(srv.log().splitlines()[0].split(": info: ")[0])
        finally:
            srv.stop()
    assert logs == ["ipcserverd", "s6-ipcserverd", "s6-ipcserverd"]


@requires_root
def test_dropped_daemon_looks_as_after_an_exec(sockdir: str, server_factory: Factory) -> None:
    """After the drop, s6's daemon is a fresh exec: dumpable, its /proc entries owned by nobody.

    Ours runs ipcserverd in the process that called setuid, which the kernel marks non-dumpable;
    applyuidgid sets the flag back as the exec would have.
    """
    uid, gid = nobody_ids()
    owners = []
    for who in (ours, theirs):
        path = os.path.join(sockdir, who.__name__)
        argv = who("ipcserver") + ["-1", "-u", str(uid), "-g", str(gid), path, "true"]
        srv = server_factory(argv, env=CLEAN_ENV)
        owners.append(os.stat(f"/proc/{srv.proc.pid}/fd").st_uid)
    assert owners == [uid, uid]
