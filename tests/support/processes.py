"""Running our programs and s6's side by side: argv prefixes, processes, /proc, clients.

Tests run our programs as real processes (``.venv/bin/s6ipc NAME``) next to Debian's s6 binaries
(``/usr/bin/s6-NAME``). A test that needs a real peer that is not installed skips, naming it.
Imported as ``from tests.support.processes import …``; the fixtures built on these live in
tests/conftest.py.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence

import pytest

from s6ipc.base.s6release import S6_2_11, S6_2_12, S6Release

#: This directory: scripts the tests execute by path (passfds.py, notify_daemon.py) live here.
SUPPORT = os.path.dirname(os.path.abspath(__file__))
S6IPC = os.path.join(os.path.dirname(sys.executable), "s6ipc")

# A shell starts background jobs with SIGINT and SIGQUIT ignored, and ignored dispositions survive
# exec: servers started by the tests would inherit them and every signal-state comparison would
# depend on how `make test` was launched. The tests start from the dispositions of a foreground run.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)
VENV_PYTHON = sys.executable


def ours(name: str) -> List[str]:
    """argv prefix running our program NAME."""
    return [S6IPC, name]


def theirs(name: str) -> List[str]:
    """argv prefix running s6's C program s6-NAME (skips the test when s6 is not installed)."""
    path = f"/usr/bin/s6-{name}"
    if not os.access(path, os.X_OK):
        pytest.skip(f"Debian's s6 is not installed ({path} missing): apt-get install s6")
    return [path]


IMPLEMENTATIONS = {"ours": ours, "s6": theirs}


@functools.cache
def s6_release_of(bindir: str = "/usr/bin") -> S6Release:
    """The s6 line of the ``s6-ipcserverd`` in *bindir*, from what the binary does: its ``-c``
    ceiling is 1000 up to 2.11 and 16384 from 2.12 on (:mod:`s6ipc.base.s6release`), which its
    ``status: 0/N`` line shows at once. Skips the test when there is no such binary."""
    path = os.path.join(bindir, "s6-ipcserverd")
    if not os.access(path, os.X_OK):
        pytest.skip(f"no s6-ipcserverd in {bindir}: apt-get install s6")
    a, b = socket.socketpair()
    try:
        proc = subprocess.Popen([path, "-v", "2", "-c", "20000", "true"], stdin=a, stderr=subprocess.PIPE)
    finally:
        a.close()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if b": info: status: 0/" in line:
                ceiling = int(line.rsplit(b"/", 1)[1])
                break
        else:
            raise AssertionError(f"{path} -v printed no status line")
    finally:
        proc.kill()
        proc.wait()
        b.close()
    return {S6_2_11.absolute_maxconn: S6_2_11, S6_2_12.absolute_maxconn: S6_2_12}[ceiling]


def installed_s6() -> S6Release:
    """The line of the s6 this machine has (Debian 12: 2.11; Debian 13: 2.12 and later)."""
    return s6_release_of("/usr/bin")


def as_installed_s6(env: Dict[str, str]) -> Dict[str, str]:
    """*env* plus ``S6IPC_S6`` naming the installed s6's line: our programs then behave as the s6
    they are compared with (the s6 side ignores the variable and passes it on as any other). It
    comes first, so that it is never the last entry s6's env_merge moves into a hole."""
    return {"S6IPC_S6": installed_s6().name, **env}


def run(argv: Sequence[str], *, timeout: float = 20, **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def,type-arg]
    """Run a command to completion, capturing bytes output."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(list(argv), timeout=timeout, **kw)


def wait_for_ready(fd: int, timeout: float = 10.0) -> bytes:
    """Read a readiness pipe until a newline or EOF; fail on timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    os.set_blocking(fd, False)
    while b"\n" not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"no readiness newline within {timeout}s (got {data!r})")
        try:
            chunk = os.read(fd, 64)
        except BlockingIOError:
            time.sleep(0.005)
            continue
        if not chunk:
            raise AssertionError(f"readiness pipe closed without a newline (got {data!r})")
        data += chunk
    return data


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5) -> None:
    """SIGTERM, then SIGKILL if *proc* is still there after *grace* seconds; reaped either way."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace)


class RunningServer:
    """A server process started with its fd 1 on a pipe; ready once the ``-1`` newline arrived."""

    def __init__(self, argv: Sequence[str], *, env: Optional[dict] = None, ready: bool = True,  # type: ignore[type-arg]
                 stderr_path: Optional[str] = None, **kw) -> None:  # type: ignore[no-untyped-def]
        r, w = os.pipe()
        if stderr_path is None:
            log_fd, stderr_path = tempfile.mkstemp(prefix="s6t-log", dir="/tmp")
            self._stderr = os.fdopen(log_fd, "wb")
        else:
            self._stderr = open(stderr_path, "wb")  # noqa: SIM115 (closed in stop())
        self.stderr_path = stderr_path
        self.proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=w, stderr=self._stderr,
                                     env=env, **kw)
        os.close(w)
        self.ready_fd = r
        if ready:
            try:
                wait_for_ready(r)
            except BaseException:  # reaped here: a server that failed to start leaves nothing behind
                self.stop()
                raise

    def log(self) -> str:
        self._stderr.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        stop_process(self.proc)
        os.close(self.ready_fd)
        self._stderr.close()
        try:
            os.unlink(self.stderr_path)
        except OSError:
            pass


def request(path: str, data: bytes = b"", timeout: float = 10.0, bind: Optional[str] = None) -> bytes:
    """Connect to a Unix socket, send *data*, shut down writing, read everything back."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        if bind:
            s.bind(bind)
        s.connect(path)
        if data:
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return read_all(s)


#: Connections a "the fast path starts no interpreter" test makes. Their handlers' CPU (a C
#: program's) stays under FAST_CHILDREN_CPU seconds; as many Python start-ups stay above
#: SLOW_CHILDREN_CPU (13 ms of CPU each on a quiet fresh machine, the fastest seen; 30 under load).
FASTPATH_CONNECTIONS = 30
FAST_CHILDREN_CPU, SLOW_CHILDREN_CPU = 0.05, 0.15


def children_cpu_seconds(pid: int) -> float:
    """The CPU time (user + system, in seconds) of the reaped children of process *pid*."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def read_all(s: socket.socket, until: Optional[bytes] = None, data: bytes = b"") -> bytes:
    """Everything the peer sends (after *data*, already read) until EOF — a reset counts as EOF —
    or, with *until*, until what was read ends with it."""
    while until is None or not data.endswith(until):
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def env_of(output: bytes) -> dict:  # type: ignore[type-arg]
    """Parse ``env`` output into a dict."""
    result = {}
    for line in output.decode("utf-8", "replace").splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            result[k] = v
    return result


def nobody_ids() -> tuple:  # type: ignore[type-arg]
    import pwd

    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (privilege changes)")


def _nobody_can_run_us() -> bool:
    """Whether a process dropped to nobody can exec this interpreter and import s6ipc from it.

    Not when the interpreter or the package lives under a directory nobody cannot traverse: pyenv's
    interpreters in root's home (``make test-pythons``), a venv inside a checkout in root's home
    (``make test`` puts it elsewhere then: scripts/venv-dir). Trivially true when not root.
    """
    if os.geteuid() != 0:
        return True
    uid, gid = nobody_ids()
    try:
        probe = subprocess.run([sys.executable, "-c", "import s6ipc"], user=uid, group=gid, extra_groups=[],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=30, cwd="/")
    except OSError:  # EACCES on the interpreter itself
        return False
    return probe.returncode == 0


#: For tests in which a process that dropped to nobody runs our programs in a new interpreter.
needs_reachable_interpreter = pytest.mark.skipif(
    not _nobody_can_run_us(),
    reason=f"nobody cannot exec {sys.executable} and import s6ipc (a directory on the way is not "
           "world-traversable): make test builds a venv every user can reach")

C_SOURCES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reliability")


# -- looking at a running daemon through /proc ------------------------------------------------------
SOCKETBINDER = "/usr/bin/s6-ipcserver-socketbinder"


def unshare_hint(stderr: str) -> str:
    """What to add to a skip reason when ``unshare --mount`` failed: in a plain chroot / is not a mount
    point, so unshare cannot make it private ("cannot change root filesystem propagation")."""
    if "cannot change root filesystem propagation" not in stderr:
        return ""
    return (" (/ is not a mount point here, as in a plain chroot: bind-mount the chroot's root onto itself"
            " first, as scripts/debian-walkthrough does)")


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01):  # type: ignore[no-untyped-def]
    """Poll *predicate* until it returns something true (returned); fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def listening(path: str) -> bool:
    """Whether a Unix socket bound to *path* is listening, without connecting to it.

    Between ``bind`` (the path appears) and ``listen`` a connect is refused, and a connect would
    also be the connection that activates a socket-activated service: /proc/net/unix tells instead
    (Flags has __SO_ACCEPTCON, 0x10000, once ``listen`` was called).
    """
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                return True
    return False


def wait_listening(path: str, timeout: float = 10.0) -> None:
    """Wait until a socket bound to *path* listens (see :func:`listening`); fail after *timeout*."""
    wait_until(lambda: listening(path), timeout=timeout)


def normalise_log(text: str) -> List[str]:
    """Log lines with the program names replaced by ``D:`` (daemon) / ``C:`` (child) and pids by ``P``.

    So ``s6-ipcserverd: info: allow 0:0 pid 123 count 1/40`` and ``ipcserverd: …`` compare equal.
    """
    import re

    lines = []
    for line in text.splitlines():
        line = re.sub(r"^(s6-)?ipcserverd: ", "D: ", line)
        line = re.sub(r"^(s6-)?ipcserver \(child\): ", "C: ", line)
        lines.append(re.sub(r"\bpid \d+", "pid P", line))
    return lines


def proc_fds(pid: int) -> List[int]:
    """The open fds of process *pid*."""
    return sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))


def proc_status(pid: int, field: str) -> str:
    """One field of /proc/PID/status (``VmRSS``, ``State``…), without its name."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    raise KeyError(field)


def proc_cpu_ticks(pid: int) -> int:
    """utime + stime of *pid* in clock ticks (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_children(pid: int) -> List[int]:
    """The pids whose parent is *pid* (all threads' children lists)."""
    kids: List[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return kids


def zombie_children(pid: int) -> List[int]:
    """The children of *pid* that are zombies (exited, not yet reaped)."""
    found = []
    for kid in proc_children(pid):
        try:
            if proc_status(kid, "State").startswith("Z"):
                found.append(kid)
        except (OSError, KeyError):
            pass
    return found


def traced_execs(argv: Sequence[str], *, timeout: float = 20, **kw) -> tuple:  # type: ignore[no-untyped-def,type-arg]
    """Run *argv* under ``strace -f -e trace=execve``: (completed process, argv of each successful execve).

    Arguments are read hex-escaped (``-xx``), so any byte survives; the first entry is *argv* itself.
    """
    import re

    if shutil.which("strace") is None:
        pytest.skip("strace is not installed: apt-get install strace")
    with tempfile.NamedTemporaryFile(prefix="s6t-strace") as out:
        proc = run(["strace", "-f", "-qq", "-v", "-xx", "-s", "65536", "-e", "trace=execve", "-o", out.name,
                    *argv], timeout=timeout, **kw)
        text = out.read().decode("ascii", "replace")
    execs = []
    for line in text.splitlines():
        m = re.search(r'execve\("[^"]*", \[(.*?)\], .*\) = 0$', line)
        if m:
            words = re.findall(r'"((?:\\x[0-9a-f]{2})*)"', m.group(1))
            execs.append([os.fsdecode(bytes.fromhex(w.replace("\\x", ""))) for w in words])
    return proc, execs


# -- clients that stay connected ---------------------------------------------------------------------
class Client:
    """A connected client socket with line-oriented reads (5 s timeout)."""

    def __init__(self, path: str, bind: Optional[str] = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        if bind:
            self.sock.bind(bind)
        self.sock.connect(path)
        self.buf = b""

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"EOF before a full line (got {self.buf!r})")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def pid(self) -> int:
        return int(self.line())

    def rest(self) -> bytes:
        """Everything until EOF."""
        data, self.buf = self.buf, b""
        return read_all(self.sock, data=data)

    def silent_for(self, seconds: float) -> bool:
        """True when nothing (not even EOF) arrives within *seconds*."""
        return not select.select([self.sock], [], [], seconds)[0]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


@contextmanager
def scratch_dir(prefix: str, mode: Optional[int] = None) -> Iterator[str]:
    """A short private directory under /tmp (socket paths hold 107 bytes), removed with its contents."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    if mode is not None:
        os.chmod(d, mode)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
