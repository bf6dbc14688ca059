"""ipcserver-socketbinder against /usr/bin/s6-ipcserver-socketbinder, scenario by scenario.

Each scenario runs both binders on a fresh directory and compares what can be observed from
outside: exit code, stderr after the program-name prefix, what the exec'd program finds on fd 0
(socket type, listening or not, fd status flags, its umask, its other fds), and the files left in
the directory (types, modes, contents). Every scenario also pins the expected value, so a test
fails if both implementations drift the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest

from tests.support.processes import IMPLEMENTATIONS, run, wait_until

PYTHON = "/usr/bin/python3"

# What the program exec'd by the binder sees: printed as one JSON object on stdout.
PROBE = r"""
import json, os, socket, stat, sys
r = {}
st = os.fstat(0)
r["fd0"] = "socket" if stat.S_ISSOCK(st.st_mode) else oct(st.st_mode)
with open("/proc/self/fdinfo/0") as f:
    r["flags"] = [line.split()[1] for line in f if line.startswith("flags:")][0]
r["fds"] = sorted(int(x) for x in os.listdir("/proc/self/fd"))
r["umask"] = oct(os.umask(0))
if r["fd0"] == "socket":
    s = socket.socket(fileno=os.dup(0))
    r["type"] = {1: "stream", 2: "dgram"}.get(s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE), "?")
    r["listening"] = bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    r["name"] = repr(s.getsockname())
print(json.dumps(r))
"""
PROG = [PYTHON, "-I", "-S", "-c", PROBE]


@dataclass
class Outcome:
    code: int
    stderr: str  # after "NAME: "
    probe: Optional[dict]  # type: ignore[type-arg]
    files: Dict[str, str]  # name -> "socket 0777" / "file 0600 'content'" / "dir" / "link -> target"


def snapshot(d: str) -> Dict[str, str]:
    files = {}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        st = os.lstat(p)
        mode = format(stat.S_IMODE(st.st_mode), "04o")
        if stat.S_ISSOCK(st.st_mode):
            files[name] = f"socket {mode}"
        elif stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                files[name] = f"file {mode} {f.read()!r}"
        elif stat.S_ISLNK(st.st_mode):
            files[name] = f"link -> {os.readlink(p)}"
        else:
            files[name] = "dir" if stat.S_ISDIR(st.st_mode) else oct(st.st_mode)
    return files


def strip_name(stderr: bytes) -> str:
    """The message after the ``NAME: `` prefix of each line (the names differ by design)."""
    return "".join(line.split(": ", 1)[1] for line in stderr.decode().splitlines(keepends=True))


@contextlib.contextmanager
def fresh_dir() -> Iterator[str]:
    """A short private directory, removed with whatever the binder left in it."""
    d = tempfile.mkdtemp(prefix="s6b", dir="/tmp")
    try:
        yield d
    finally:
        for name in os.listdir(d):
            p = os.path.join(d, name)
            if os.path.isdir(p) and not os.path.islink(p):
                os.rmdir(p)
            else:
                os.unlink(p)
        os.rmdir(d)


def bind(
    who: str,
    args: Callable[[str], Sequence[str]],
    *,
    setup: Optional[Callable[[str], None]] = None,
    umask: Optional[int] = None,
    prog: Sequence[str] = PROG,
    name: str = "ipcserver-socketbinder",
) -> Outcome:
    """Run one binder on a fresh short directory D: ``binder args(D) prog``; observe."""
    with fresh_dir() as d:
        if setup:
            setup(d)
        argv = IMPLEMENTATIONS[who](name) + list(args(d)) + list(prog)
        preexec = (lambda: os.umask(umask)) if umask is not None else None  # type: ignore[misc]
        p = run(argv, cwd=d, preexec_fn=preexec)
        out = p.stdout.decode().replace(d, "D")
        probe = json.loads(out) if out.startswith("{") else None
        invoked = argv[0] if who == "s6" else argv[1]
        stderr = strip_name(p.stderr).replace(d, "D").replace(os.path.basename(invoked), "NAME")
        return Outcome(p.returncode, stderr, probe, snapshot(d))


def both(args: Callable[[str], Sequence[str]], **kw) -> Outcome:  # type: ignore[no-untyped-def]
    """Run the scenario with s6's binder and ours; assert they agree; return the common outcome."""
    theirs_ = bind("s6", args, **kw)
    ours_ = bind("ours", args, **kw)
    assert ours_ == theirs_
    return ours_


def sock(d: str) -> str:
    return os.path.join(d, "s")


# --- permissions and the umask -------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
@pytest.mark.parametrize(
    "perms, mode, lockmode",
    [(None, "0777", "0600"), ("0640", "0640", "0600"), ("0444", "0444", "0400"), ("0", "0000", "0000"),
     ("1777", "0777", "0600"), ("0700", "0700", "0600")],
)
def test_mode_is_perms_whatever_the_umask(umask: int, perms: Optional[str], mode: str, lockmode: str) -> None:
    opts = ["-a", perms] if perms is not None else []
    o = both(lambda d: [*opts, sock(d)], umask=umask)
    assert o.code == 0, o
    assert o.files == {"s": f"socket {mode}", "s.lock": f"file {lockmode} b''"}
    assert o.probe is not None
    assert o.probe["umask"] == oct(umask), "the program must get the caller's umask back"


def test_no_chmod_and_umask_around_bind() -> None:
    """The mode comes from the umask at bind time: no chmod, umask restored right after bind."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed: apt-get install strace")
    seqs = []
    for who in ("s6", "ours"):
        with fresh_dir() as d:
            trace = os.path.join(d, "trace")
            argv = IMPLEMENTATIONS[who]("ipcserver-socketbinder") + ["-a", "0640", sock(d), "true"]
            syscalls = "trace=umask,bind,listen,chmod,fchmod,fchmodat"
            p = run(["strace", "-f", "-qq", "-o", trace, "-e", syscalls, *argv],
                    preexec_fn=lambda: os.umask(0o022))
            assert p.returncode == 0, p.stderr
            with open(trace) as f:
                calls = [line.split(None, 1)[1].split("(", 1)[0] for line in f if "(" in line]
            seqs.append(calls)
    assert seqs[0] == ["umask", "bind", "umask", "listen"]
    assert seqs[1] == seqs[0]


# --- fd 0 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opts, expected",
    [
        ([], {"type": "stream", "listening": True, "flags": "04002"}),
        (["-B"], {"type": "stream", "listening": True, "flags": "02"}),
        (["-b0"], {"type": "stream", "listening": False, "flags": "04002"}),
        (["-b", "0", "-B"], {"type": "stream", "listening": False, "flags": "02"}),
        (["-m", "-b0"], {"type": "dgram", "listening": False, "flags": "04002"}),
        (["-m", "-M"], {"type": "stream", "listening": True, "flags": "04002"}),
        (["-M", "-m", "-b", "0", "-B"], {"type": "dgram", "listening": False, "flags": "02"}),
    ],
)
def test_socket_on_fd0(opts: List[str], expected: Dict[str, object]) -> None:
    o = both(lambda d: [*opts, sock(d)])
    assert o.code == 0, o
    assert o.probe is not None
    assert {k: o.probe[k] for k in expected} == expected
    assert o.probe["fd0"] == "socket"
    assert o.probe["name"] == repr("D/s")


def test_fd0_replaces_whatever_was_there_and_nothing_else_leaks() -> None:
    """stdin closed, or open on a file: the socket lands on fd 0; the lock fd does not survive the exec."""
    for stdin in ("<&-", "</dev/null"):
        outcomes = []
        for who in ("s6", "ours"):
            with fresh_dir() as d:
                argv = IMPLEMENTATIONS[who]("ipcserver-socketbinder") + [sock(d)] + PROG
                p = run(["sh", "-c", f'exec "$@" {stdin}', "sh", *argv])
                outcomes.append((p.returncode, json.loads(p.stdout.decode().replace(d, "D"))))
        assert outcomes[0] == outcomes[1]
        assert outcomes[0][1]["fd0"] == "socket"
        # the probe's own fds: 0, 1, 2 and the one listdir uses (3) — no lock file, no extra socket
        assert outcomes[0][1]["fds"] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "backlog, expected",
    [(None, "4096"), ("1", "1"), ("7", "7"), ("99999", "4096"), ("2147483647", "4096"),
     ("2147483648", "4096"), ("4294967295", "4096")],
)
def test_backlog(backlog: Optional[str], expected: str) -> None:
    """The listen backlog, as the kernel reports it (ss: Send-Q of a listening socket)."""
    if shutil.which("ss") is None:
        pytest.skip("ss is not installed: apt-get install iproute2")
    opts = ["-b", backlog] if backlog else []
    outs = []
    for who in ("s6", "ours"):
        with fresh_dir() as d:
            ss = ["ss", "-xlH", "src", sock(d)]
            p = run(IMPLEMENTATIONS[who]("ipcserver-socketbinder") + [*opts, sock(d), *ss])
            # column 6, the inode, differs by nature
            outs.append(p.stdout.decode().replace(d, "D").split()[:5])
    assert outs[0] == ["u_str", "LISTEN", "0", expected, "D/s"]
    assert outs[1] == outs[0]


# --- reuse (-d, default) and no reuse (-D) ------------------------------------------------------


def stale_socket(d: str) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sock(d))
    s.close()


def regular_file(d: str) -> None:
    with open(sock(d), "w") as f:
        f.write("keep me?")


def symlink(d: str) -> None:
    regular_file(d)
    os.rename(sock(d), os.path.join(d, "target"))
    os.symlink("target", sock(d))


def directory(d: str) -> None:
    os.mkdir(sock(d))


@pytest.mark.parametrize("reuse", [[], ["-d"], ["-D", "-d"]])
@pytest.mark.parametrize("setup", [stale_socket, regular_file, symlink])
def test_reuse_unlinks_whatever_is_there(reuse: List[str], setup: Callable[[str], None]) -> None:
    o = both(lambda d: [*reuse, sock(d)], setup=setup)
    assert o.code == 0, o
    assert o.files["s"] == "socket 0777"
    assert o.files["s.lock"] == "file 0600 b''"
    if setup is symlink:
        assert o.files["target"] == "file 0644 b'keep me?'"


def test_reuse_on_a_directory_fails() -> None:
    o = both(lambda d: [sock(d)], setup=directory)
    assert (o.code, o.stderr) == (111, "fatal: unable to bind to D/s: Address already in use\n")
    assert o.files == {"s": "dir", "s.lock": "file 0600 b''"}


@pytest.mark.parametrize("setup", [stale_socket, regular_file, symlink, directory])
def test_no_reuse_refuses_an_existing_path(setup: Callable[[str], None]) -> None:
    o = both(lambda d: ["-d", "-D", sock(d)], setup=setup)
    assert (o.code, o.stderr) == (111, "fatal: unable to bind to D/s: Address already in use\n")
    assert "s.lock" not in o.files
    if setup is regular_file:
        assert o.files["s"] == "file 0644 b'keep me?'"


def test_no_reuse_on_a_free_path() -> None:
    o = both(lambda d: ["-D", sock(d)])
    assert o.code == 0
    assert o.files == {"s": "socket 0777"}


@pytest.mark.parametrize("opts, code", [([], 111), (["-D"], 0)])
def test_lock_held_is_ebusy(opts: List[str], code: int) -> None:
    holder: List[int] = []

    def hold(d: str) -> None:
        fd = os.open(sock(d) + ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.append(fd)

    try:
        o = both(lambda d: [*opts, sock(d)], setup=hold)
    finally:
        for fd in holder:
            os.close(fd)
    assert o.code == code
    if code:
        assert o.stderr == "fatal: unable to bind to D/s: Device or resource busy\n"
        assert "s" not in o.files
    else:
        assert o.files["s"] == "socket 0777"


def test_the_lock_is_released_at_exec() -> None:
    """While the exec'd program runs, a second binder on the same path is not locked out."""
    for who in ("s6", "ours"):
        with fresh_dir() as d:
            first = IMPLEMENTATIONS[who]("ipcserver-socketbinder") + [sock(d), "sleep", "5"]
            proc = subprocess.Popen(first, stdin=subprocess.DEVNULL)
            try:
                wait_until(lambda d=d: os.path.exists(sock(d)))
                second = run(IMPLEMENTATIONS[who]("ipcserver-socketbinder") + [sock(d), "true"])
                assert second.returncode == 0, (who, second.stderr)
            finally:
                proc.kill()
                proc.wait()


# --- datagram -----------------------------------------------------------------------------------


def test_datagram_needs_b0() -> None:
    o = both(lambda d: ["-m", sock(d)])
    assert (o.code, o.stderr) == (111, "fatal: unable to listen to D/s: Operation not supported\n")
    assert o.files == {"s": "socket 0777", "s.lock": "file 0600 b''"}


# --- paths --------------------------------------------------------------------------------------


def long_path(d: str, total: int) -> str:
    return os.path.join(d, "x" * (total - len(d) - 1))


@pytest.mark.parametrize("total", [107, 108, 200])
def test_path_length_limit(total: int) -> None:
    o = both(lambda d: [long_path(d, total)], prog=["true"])
    name = "x" * (total - len("/tmp/s6bXXXXXXXX") - 1)
    if total <= 107:
        assert o.code == 0, o
        assert o.files[name] == "socket 0777"
    else:
        assert (o.code, o.stderr) == (111, f"fatal: unable to bind to D/{name}: Protocol error\n")
        assert name not in o.files
        assert o.files[name + ".lock"] == "file 0600 b''"  # created before the bind fails, left there


def test_path_length_limit_without_reuse() -> None:
    o = both(lambda d: ["-D", long_path(d, 108)], prog=["true"])
    assert o.code == 111
    assert o.stderr.endswith(": Protocol error\n")
    assert o.files == {}


def test_empty_path_binds_an_abstract_socket() -> None:
    o = both(lambda d: [""])
    assert o.code == 0, o
    assert o.files == {".lock": "file 0600 b''"}
    assert o.probe is not None
    assert o.probe["name"] == repr(b"\0" * 108)  # the abstract marker, then a name of 107 NULs


def test_missing_directory() -> None:
    o = both(lambda d: [os.path.join(d, "nodir", "s"), "true"])
    assert (o.code, o.stderr) == (111, "fatal: unable to bind to D/nodir/s: No such file or directory\n")


# --- usage and exec -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [[], ["P"], ["-a", "0800", "P", "true"], ["-a", "", "P", "true"], ["-b", "x", "P", "true"],
     ["-b", "-1", "P", "true"], ["-b", "4294967296", "P", "true"], ["-x", "P", "true"],
     ["--help", "P", "true"], ["-b"], ["-a"], ["-D", "-m"], ["P"], ["-d", "--", "P"]],
)
def test_usage_creates_nothing(args: List[str]) -> None:
    o = both(lambda d: [sock(d) if a == "P" else a for a in args], prog=[])
    assert o.code == 100
    assert o.stderr == "usage: NAME [ -d | -D ] [ -b backlog ] [ -M | -m ] [ -a perms ] [ -B ] path prog...\n"
    assert o.files == {}


def test_usage_line_text() -> None:
    s6 = run(IMPLEMENTATIONS["s6"]("ipcserver-socketbinder"))
    mine = run(IMPLEMENTATIONS["ours"]("ipcserver-socketbinder"))
    assert s6.stderr.startswith(b"s6-ipcserver-socketbinder: usage: s6-ipcserver-socketbinder [ -d")
    assert mine.stderr == s6.stderr.replace(b"s6-ipcserver-socketbinder", b"ipcserver-socketbinder")


@pytest.mark.parametrize("prog, code, reason", [(["nope-no-such"], 127, "No such file or directory"),
                                                (["/etc"], 126, "Permission denied")])
def test_exec_failure(prog: List[str], code: int, reason: str) -> None:
    o = both(lambda d: [sock(d)], prog=prog)
    assert (o.code, o.stderr) == (code, f"fatal: unable to exec {prog[0]}: {reason}\n")
    assert o.files["s"] == "socket 0777"
