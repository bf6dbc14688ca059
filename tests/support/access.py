"""The access-control tests' shared pieces: rules trees from a spec, running ipcserver-access (ours
or s6's) on a prepared fd 0, and driving the three servers of the fast-path comparison (fast path,
forced program, s6's C chain) with the same clients and live rule changes.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pytest

from tests.support.processes import (
    S6IPC,
    VENV_PYTHON,
    RunningServer,
    as_installed_s6,
    normalise_log,
    proc_children,
    request,
    run,
    wait_until,
)

S6_ACCESS = "/usr/bin/s6-ipcserver-access"
SOCKETBINDER = "/usr/bin/s6-ipcserver-socketbinder"
EXECLINEB = "/usr/lib/execline/bin/execlineb"
UID, GID = os.geteuid(), os.getegid()
BASE_ENV = {"PATH": "/usr/bin:/bin", "INHERITED": "yes", "PROTO": "IPC", "IPCREMOTEEUID": "1000",
            "IPCREMOTEEGID": "1000"}

#: The access stage named three ways: our fast path (under our ipcserverd), our program forced
#: (a prefix that is not ours), and s6's C program.
ACCESS_WORDS = {
    "fast": [S6IPC, "s6-ipcserver-access"],
    "program": [VENV_PYTHON, "-m", "s6ipc", "s6-ipcserver-access"],
    "s6": [S6_ACCESS],
}

needs_s6 = pytest.mark.skipif(not os.access(S6_ACCESS, os.X_OK),
                              reason="Debian's s6 is not installed (apt-get install s6)")

RuleSpec = Mapping[str, Union[bool, bytes, Mapping[str, bytes]]]


def make_rules(root: str, rules: Mapping[str, RuleSpec]) -> str:
    """Create rules directory *root* from a spec.

    ``{"uid/0": {"allow": True, "deny": False, "env": {"A": b"x\\n"}, "exec": b"echo hi"}}``.
    """
    os.makedirs(root, exist_ok=True)
    for key, spec in rules.items():
        d = os.path.join(root, key)
        os.makedirs(d, exist_ok=True)
        for name in ("allow", "deny"):
            if spec.get(name):
                open(os.path.join(d, name), "wb").close()
        env = spec.get("env")
        if isinstance(env, Mapping):
            os.makedirs(os.path.join(d, "env"), exist_ok=True)
            for var, value in env.items():
                with open(os.path.join(d, "env", var), "wb") as f:
                    f.write(value)
        exec_bytes = spec.get("exec")
        if isinstance(exec_bytes, bytes):
            with open(os.path.join(d, "exec"), "wb") as f:
                f.write(exec_bytes)
    return root


@dataclass
class Result:
    rc: int
    out: bytes
    err: str


def normalise(err: str) -> str:
    return re.sub(r"\bpid \d+", "pid P", err)


def run_access(argv: Sequence[str], env: Mapping[str, str], stdin: Optional[socket.socket] = None,
               **kw) -> Result:  # type: ignore[no-untyped-def]
    """Run one access program with *stdin* (default: one end of a fresh socketpair) as fd 0."""
    own = stdin is None
    if stdin is None:
        stdin, peer = socket.socketpair()
    try:
        p = run(argv, stdin=stdin, env=dict(env), **kw)
    finally:
        if own:
            stdin.close()
            peer.close()
    return Result(p.returncode, p.stdout, normalise(p.stderr.decode("utf-8", "replace")))


def both(args: Sequence[str], env: Mapping[str, str] = BASE_ENV, stdin: Optional[socket.socket] = None
         ) -> Dict[str, Result]:
    return {who: run_access([*ACCESS_WORDS[who], *args], env, stdin) for who in ("program", "s6")}


def same(results: Dict[str, Result], rc: int) -> Result:
    """Assert both implementations gave the same result, with exit code *rc*; return it."""
    ours, theirs = results["program"], results["s6"]
    assert (ours.rc, ours.out, ours.err) == (theirs.rc, theirs.out, theirs.err)
    assert ours.rc == rc, ours
    return ours


WHO = ("fast", "program", "s6")
SERVER_ENV = {"PATH": "/usr/bin:/bin", "INHERITED": "yes"}
#: One client: a change to make to the rules first, then what the client must read (None: anything,
#: as long as every implementation gives the same).
Step = Tuple[Callable[[], None], Optional[bytes]]


def daemon_argv(who: str, path: str, server_opts: Sequence[str], access_opts: Sequence[str],
                prog: Sequence[str]) -> List[str]:
    daemon = ["/usr/bin/s6-ipcserverd"] if who == "s6" else [S6IPC, "ipcserverd"]
    return [SOCKETBINDER, path, *daemon, "-1", *server_opts, "--", *ACCESS_WORDS[who], *access_opts, *prog]


def start(who: str, path: str, server_opts: Sequence[str], access_opts: Sequence[str],
          prog: Sequence[str], wrap: Sequence[str] = (), **popen: Any) -> RunningServer:
    """One server (ready: its -1 newline arrived), with the fixed test environment and, first,
    ``S6IPC_S6`` naming the installed s6's line (so ours and s6's count alike; :func:`drive` leaves
    the variable out of what the handlers print).

    *wrap* is put in front of the command line (``unshare …``); *popen* goes to ``subprocess.Popen``
    (``user=``…).
    """
    argv = [*wrap, *daemon_argv(who, path, server_opts, access_opts, prog)]
    return RunningServer(argv, env=as_installed_s6(SERVER_ENV), **popen)


def split_log(text: str) -> Dict[str, List[str]]:
    """Log lines by source (daemon ``D:``, access stage, anything else), pids normalised."""
    out: Dict[str, List[str]] = {"daemon": [], "access": [], "other": []}
    for line in normalise_log(text):
        if line.startswith("D: "):
            out["daemon"].append(line)
        elif line.startswith("s6-ipcserver-access: "):
            out["access"].append(line)
        else:
            out["other"].append(line)
    return out


def drive(who: str, sockdir: str, server_opts: Sequence[str], access_opts: Sequence[str],
          prog: Sequence[str], steps: Sequence[Step], reset: Callable[[], None], **how: Any
          ) -> Tuple[List[bytes], str]:
    """Start one server, run *steps* (change the rules, connect, read), stop it; return (outputs, log).

    In the outputs, the socket path is replaced by ``SOCKET``.
    """
    reset()
    path = os.path.join(sockdir, f"{who}.sock")
    server = start(who, path, server_opts, access_opts, prog, **how)
    outputs = []
    try:
        for change, _ in steps:
            change()
            reply = request(path).replace(path.encode(), b"SOCKET")
            outputs.append(re.sub(rb"(?m)^S6IPC_S6=[^\n]*\n", b"", reply))
            # the child reaped (and its end line written) before the next connection: counts are fixed
            wait_until(lambda: not proc_children(server.proc.pid))
        assert server.proc.poll() is None, "the daemon died"
        time.sleep(0.05)
    finally:
        server.signal(15)
        server.wait()
        log = server.log()
        server.stop()
    return outputs, log


def compare(sockdir: str, server_opts: Sequence[str], access_opts: Sequence[str], prog: Sequence[str],
            steps: Sequence[Step], reset: Callable[[], None], who: Sequence[str] = WHO,
            same_logs: bool = True, **how: Any) -> Dict[str, Dict[str, List[str]]]:
    """Run the steps through each implementation; assert identical outputs and (if *same_logs*)
    identical logs; return the logs. *how* goes to :func:`start`."""
    results = {w: drive(w, sockdir, server_opts, access_opts, prog, steps, reset, **how) for w in who}
    logs = {}
    for w, (outputs, log) in results.items():
        for (_, want), got in zip(steps, outputs):  # want None: only the same for all
            assert want is None or got == want, (w, outputs)
        assert outputs == results[who[0]][0], (w, outputs)
        logs[w] = split_log(log)
    first = logs[who[0]]
    for w in who[1:]:
        assert not same_logs or logs[w] == first, (w, logs[w], first)
    return logs


def set_rules(root: str, spec: Dict[str, Dict[str, object]]) -> Callable[[], None]:
    """A step action replacing the whole rules tree by *spec*."""

    def change() -> None:
        for entry in os.listdir(root):
            shutil.rmtree(os.path.join(root, entry))
        make_rules(root, spec)  # type: ignore[arg-type]

    return change


def env_lines(*lines: str) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()
