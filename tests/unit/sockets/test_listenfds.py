"""s6ipc.sockets.listenfds: the systemd socket-passing protocol, both paths (stdlib and python-systemd).

Every case runs in a real process that received real sockets on fds 3, 4, … with ``LISTEN_*`` set
for its own PID (tests/support/passfds.py, which execs like systemd does). The two paths run on
the same cases and must agree on results, errnos and the close-on-exec flags they leave.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from typing import Any, Dict, List, Sequence

import pytest

from tests.support.processes import SUPPORT, VENV_PYTHON

PASSFDS = os.path.join(SUPPORT, "passfds.py")

try:
    import systemd.daemon  # noqa: F401

    HAVE_PYTHON_SYSTEMD = True
except ImportError:  # pragma: no cover
    HAVE_PYTHON_SYSTEMD = False

needs_python_systemd = pytest.mark.skipif(
    not HAVE_PYTHON_SYSTEMD, reason="python-systemd not installed (pip install -e '.[systemd]')"
)
BACKENDS = ["stdlib", pytest.param("python-systemd", marks=needs_python_systemd)]


def probe(specs: Sequence[str], code: str, *, options: Sequence[str] = (), env: Dict[str, str] | None = None,
          timeout: float = 20) -> Any:
    """Run *code* (Python; must print one JSON document) with sockets passed as systemd would."""
    argv = [VENV_PYTHON, PASSFDS, *specs, *options, "--", VENV_PYTHON, "-c", textwrap.dedent(code)]
    result = subprocess.run(argv, capture_output=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


# -- the raw protocol: both paths agree --------------------------------------------------------
AGREEMENT = r"""
import fcntl, json, os, sys
from s6ipc.base import systemd_backend
from s6ipc.sockets import listenfds as activation
pid = os.getpid()
cases = json.loads(sys.argv[1]) if len(sys.argv) > 1 else json.load(open(os.environ["CASES"]))

def flags():
    out = []
    for fd in range(3, 7):
        try:
            out.append(bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC))
        except OSError:
            out.append(None)
    return out

def reset():
    for fd in range(3, 6):
        os.set_inheritable(fd, True)

def run(function, case):
    reset()
    for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(k, None)
    for k, v in zip(("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"), case):
        if v is not None:
            os.environ[k] = v.replace("PID", str(pid)).replace("OTHER", str(pid + 1))
    try:
        result = [list(x) for x in function()]
    except OSError as e:
        result = "errno %d" % e.errno
    return [result, flags()]

out = []
for case in cases:
    a = run(lambda: activation._stdlib_listen_fds_with_names(dict(os.environ)), case)
    b = run(systemd_backend.listen_fds_with_names, case)
    out.append([case, a, b])
print(json.dumps(out))
"""

PIDS = ["PID", " PID", "\tPID", "+PID", "PID ", "PIDx", "0PID", "OTHER", "", "0", "-0", "-1", "-PID",
        "99999999999", "18446744073709551616", "0x", None]
COUNTS = ["1", "2", "3", "4", "0", "-1", "", "x", " 2", "+2", "- 2", "0x2", "0X3", "02", "010", "08", "0o3",
          "0b11", "2 ", "1.0", "\u0662", "2147483644", "2147483645", "99999999999", None]
NAMES = [None, "a", "a:b", "a:b:c", "", ":", "a::", "web:ctl:stored"]


def random_cases(n: int) -> List[List[Any]]:
    rng = random.Random(5)
    alphabet = "0123456789xXobB+- \t\nPID"
    cases = []
    for _ in range(n):
        pid = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        count = "".join(rng.choice("0123456789xob+- ") for _ in range(rng.randint(0, 4)))
        cases.append(["PID" if rng.random() < 0.5 else pid, count, rng.choice(NAMES)])
    return cases


@needs_python_systemd
def test_stdlib_and_python_systemd_agree_on_every_case(tmp_path: Any) -> None:
    cases = [[p, c, n] for p in PIDS for c in COUNTS for n in NAMES] + random_cases(400)
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))
    me = os.getpid()
    results = probe([f"listen:@s6t-agree-a{me}", f"dgram:@s6t-agree-b{me}", "tcp"], AGREEMENT,
                    env=dict(os.environ, CASES=str(path)), timeout=60)
    disagreements = [(case, a, b) for case, a, b in results if a != b]
    assert not disagreements, disagreements[:5]
    outcomes = {json.dumps(a[0]) if not isinstance(a[0], str) else a[0] for _, a, _ in results}
    # the table must exercise every outcome: nothing, fds with and without names, each errno
    assert "[]" in outcomes and "errno 22" in outcomes and "errno 34" in outcomes and "errno 9" in outcomes
    assert '[[3, "unknown"], [4, "unknown"]]' in outcomes and '[[3, "a"], [4, "b"], [5, "c"]]' in outcomes
    # and close-on-exec: taking 3 fds leaves exactly fds 3-5 close-on-exec
    taken = [a for case, a, _ in results if case == ["PID", "3", None]][0]
    assert taken == [[[3, "unknown"], [4, "unknown"], [5, "unknown"]], [True, True, True, None]]


# -- listen_fds(): environment, PID check, PIDFDID -------------------------------------------------
LISTEN = r"""
import ctypes, json, os, sys
from s6ipc.sockets import listenfds as activation
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p
try:
    fds = [list(p) for p in activation.listen_fds(backend=sys.argv[1])]
    error = None
except Exception as e:
    fds, error = None, "%s: %s" % (type(e).__name__, e)
print(json.dumps({
    "fds": fds, "error": error,
    "environ": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    "c_environ": [k for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES") if libc.getenv(k.encode())],
}))
"""


def listen(specs: Sequence[str], backend: str, options: Sequence[str] = ()) -> Dict[str, Any]:
    return probe(specs, LISTEN.replace("sys.argv[1]", repr(backend)), options=options)


@pytest.mark.parametrize("backend", BACKENDS)
def test_listen_fds_takes_names_and_clears_both_environments(backend: str, sockdir: str) -> None:
    out = listen([f"listen:{sockdir}/a", "tcp"], backend, ["--names", "web:ctl"])
    assert out == {"fds": [[3, "web"], [4, "ctl"]], "error": None, "environ": [], "c_environ": []}


@pytest.mark.parametrize("backend", BACKENDS)
def test_fds_for_another_pid_are_nothing_and_still_unset(backend: str, sockdir: str) -> None:
    out = listen([f"listen:{sockdir}/a"], backend, ["--pid", "1"])
    assert out == {"fds": [], "error": None, "environ": [], "c_environ": []}


@pytest.mark.parametrize("backend", BACKENDS)
def test_garbage_and_closed_fds_are_clear_errors(backend: str, sockdir: str) -> None:
    assert listen([f"listen:{sockdir}/a"], backend, ["--fds", "1x"])["error"] == \
        "BadInput: invalid LISTEN_FDS: '1x'"
    assert listen([f"listen:{sockdir}/a"], backend, ["--pid", "0"])["error"] == \
        "BadInput: invalid LISTEN_PID: '0'"
    assert listen([f"listen:{sockdir}/a"], backend, ["--names", "a:b"])["error"] == \
        "BadInput: LISTEN_FDNAMES gives 2 names for LISTEN_FDS=1 fds"
    out = listen([f"listen:{sockdir}/a", "closed"], backend)
    assert out["error"] == "SystemFailure: unable to use fd 4 listed in LISTEN_FDS=2: Bad file descriptor"
    assert out["environ"] == [] and out["c_environ"] == []


def _have_pidfs() -> bool:
    a, b = os.pidfd_open(os.getpid()), os.pidfd_open(os.getppid())
    try:
        return os.fstat(a).st_ino != os.fstat(b).st_ino
    finally:
        os.close(a)
        os.close(b)


@pytest.mark.skipif(not _have_pidfs(),
                    reason="kernel without pidfs inodes (Linux < 6.9): LISTEN_PIDFDID is ignored")
@pytest.mark.parametrize("backend", BACKENDS)
def test_listen_pidfdid_is_checked_when_the_kernel_can(backend: str, sockdir: str) -> None:
    assert listen([f"listen:{sockdir}/a"], backend, ["--pidfdid", "self"])["fds"] == [[3, "unknown"]]
    assert listen([f"listen:{sockdir}/a"], backend, ["--pidfdid", "1"])["fds"] == []


@needs_python_systemd
def test_python_systemd_default_unset_leaves_os_environ_stale(sockdir: str) -> None:
    """The fact the module works around (L7): libsystemd's unsetenv never reaches os.environ."""
    out = probe([f"listen:{sockdir}/a"], r"""
        import json, os
        from systemd import daemon
        fds = daemon.listen_fds()  # unset_environment=True by default
        print(json.dumps([fds, sorted(k for k in os.environ if k.startswith("LISTEN_"))]))
    """)
    assert out == [[3], ["LISTEN_FDS", "LISTEN_PID"]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_pid_exec_after_adoption_sees_no_stale_variables(backend: str, sockdir: str) -> None:
    """The shape of every chain: adopt, then exec in the same PID (L7) — nothing stale survives."""
    out = probe([f"listen:{sockdir}/a"], rf"""
        import os, sys
        from s6ipc.sockets import listenfds as activation
        activation.adopt_systemd_socket(backend={backend!r})
        os.execv(sys.executable, [sys.executable, "-c",
            "import json, os; from s6ipc.sockets import listenfds as activation, unix as sockets; "
            "print(json.dumps([activation.listen_fds(), sockets.listener_problem(0), "
            "sorted(k for k in os.environ if k.startswith('LISTEN_'))]))"])
    """)
    assert out == [[], None, []]


# -- selecting the listener ------------------------------------------------------------------------
SELECT = r"""
import json
from s6ipc.sockets import listenfds as activation
from s6ipc.base.errors import S6ipcError
passed = activation.listen_fds()
out = []
for name, path in CASES:
    try:
        out.append(list(activation.select_listener(passed, name=name, path=path)))
    except S6ipcError as e:
        out.append(str(e))
print(json.dumps(out))
"""


def select(specs: Sequence[str], cases: List[Any], names: str) -> List[Any]:
    return probe(specs, SELECT.replace("CASES", json.dumps(cases).replace("null", "None")),
                 options=["--names", names])


def test_select_by_name_path_and_type(sockdir: str) -> None:
    a, b = f"{sockdir}/a", f"{sockdir}/b"
    out = select([f"listen:{a}", "tcp", f"dgram:{sockdir}/d", f"bound:{sockdir}/n", f"listen:{b}", "pipe"],
                 [["web", None], [None, b], [None, "@nope"], ["ctl", None], ["dg", None], ["nl", None],
                  ["p", None], ["zz", None], [None, None], ["dup", None]],
                 "web:ctl:dg:nl:dup:p")
    assert out[0] == [3, "web"]
    assert out[1] == [7, "dup"]
    assert out[2].startswith("no socket bound to @nope among those passed by systemd (fd 3 web " + a)
    assert out[3] == "the socket passed by systemd as fd 4 (ctl) is not a Unix domain socket"
    assert out[4] == "the socket passed by systemd as fd 5 (dg) is not a stream socket"
    assert out[5] == "the socket passed by systemd as fd 6 (nl) is not listening"
    assert out[6] == "the socket passed by systemd as fd 8 (p) is not a socket"
    assert out[7].startswith("no socket named zz among those passed by systemd (")
    assert out[8].startswith("2 listening Unix stream sockets were passed by systemd (fd 3 web")
    assert out[8].endswith("choose one by name or path")
    assert out[9] == [7, "dup"]


def test_without_names_the_only_unix_listener_is_chosen(sockdir: str) -> None:
    out = probe(["tcp", f"listen:@s6t-only-{os.getpid()}"], r"""
        import json
        from s6ipc.sockets import listenfds as activation
        print(json.dumps(list(activation.select_listener(activation.listen_fds()))))
    """)
    assert out == [4, "unknown"]


# -- the daemon's intake order and the Python API ---------------------------------------------------
def test_listening_socket_prefers_fd0_then_systemd_then_reports_what_it_tried(sockdir: str) -> None:
    code = r"""
        import json, os, socket
        from s6ipc.serve import intake
        from s6ipc.sockets import unix as sockets
        from s6ipc.base.errors import S6ipcError
        out = {}
        if os.environ.get("FD0"):
            s = socket.socket(socket.AF_UNIX); s.bind(os.environ["FD0"]); s.listen()
            os.dup2(s.fileno(), 0); s.close()
        try:
            sock = intake.listening_socket()
            out["address"] = sock.getsockname()
            out["inheritable"] = sock.get_inheritable()
            out["fd0"] = sockets.listener_problem(0)
        except S6ipcError as e:
            out["error"] = str(e)
        out["environ"] = sorted(k for k in os.environ if k.startswith("LISTEN_"))
        out["pid"] = os.getpid()
        print(json.dumps(out))
    """
    systemd = probe([f"listen:{sockdir}/sd"], code)
    del systemd["pid"]
    expected = {"inheritable": False, "fd0": "is not a socket", "environ": []}
    assert systemd == {"address": f"{sockdir}/sd", **expected}
    fd0 = probe([f"listen:{sockdir}/sd"], code, env=dict(os.environ, FD0=f"{sockdir}/zero"))
    del fd0["pid"]
    assert fd0 == {"address": f"{sockdir}/zero", **expected}
    nothing = probe([f"listen:{sockdir}/sd"], code, options=["--pid", "1"])
    assert nothing["error"] == (
        "no listening socket: fd 0 is not a socket; the sockets passed by systemd are for another process "
        f"(LISTEN_PID=1, this is {nothing['pid']}): was this started through a wrapper that did not exec?; "
        "no fd holder given"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
