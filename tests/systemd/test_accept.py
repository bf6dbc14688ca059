"""systemd's Accept=yes, run as UCSPI: ``systemd-accept → ipcserver-access -i RULES → prog``.

Driven by ``systemd-socket-activate --accept`` (the connection on fd 3, ``LISTEN_FDS=1``) and
``--inetd`` (on fds 0 and 1), and by a real systemd manager on the shipped ``s6ipc-accept.socket`` /
``s6ipc-accept@.service``. Clients connect as root (allowed by the rules directory, which adds an
environment variable) and as nobody (no rule: denied), unbound and bound to a path; what each client
gets must be exactly what ``s6ipc ipcserver`` running the same ``ipcserver-access -i RULES env`` gives
it on its own socket: the same UCSPI variables (``PROTO``, ``IPCREMOTEEUID``/``EGID``,
``IPCREMOTEPATH``, ``IPCCONNNUM``, ``IPCLOCALPATH``), the rule's variable, and nothing for the denied
uid. The shipped gunicorn units run under the same manager: started through a wrapper that forks, the
last-exec rule (``listen-pid``) is what lets gunicorn adopt systemd's socket; restarts refuse nobody.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

import pytest

from tests.support import systemd_manager as sdmanager
from tests.support.http import http_get, ok
from tests.support.netpeers import environ_lines, serve_one
from tests.support.peers import Load
from tests.support.processes import S6IPC, env_of, nobody_ids, requires_root, wait_listening, wait_until
from tests.support.tcp import TcpServer, env_items, tcp_request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
UNITS = os.path.join(ROOT, "units", "systemd")
APP = os.path.join(ROOT, "units", "s6", "s6ipc-gunicorn")
UCSPI = ("PROTO", "IPCREMOTEEUID", "IPCREMOTEEGID", "IPCREMOTEPATH", "IPCCONNNUM", "IPCLOCALPATH", "GREETING")
ACTIVATE = shutil.which("systemd-socket-activate")

# a client that runs as any uid: /usr/bin/python3 only (the venv may be unreadable after a uid change)
CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
if sys.argv[2]:
    s.bind(sys.argv[2])
s.connect(sys.argv[1])
s.shutdown(socket.SHUT_WR)
sys.stdout.buffer.write(s.makefile("rb").read())
"""


def make_rules(base: str) -> str:
    rules = os.path.join(base, "rules")
    allowed = os.path.join(rules, "uid", "0")
    os.makedirs(os.path.join(allowed, "env"))
    open(os.path.join(allowed, "allow"), "w").close()
    with open(os.path.join(allowed, "env", "GREETING"), "w") as f:
        f.write("hello\n")
    os.chmod(base, 0o755)
    return rules


def ask_as(path: str, uid: int, bind: str = "") -> Dict[str, str]:
    gid = nobody_ids()[1] if uid else 0
    out = subprocess.run(["/usr/bin/python3", "-c", CLIENT, path, bind], capture_output=True, timeout=20,
                         user=uid, group=gid, extra_groups=[] if uid else None)
    assert out.returncode == 0, out.stderr.decode()
    env = env_of(out.stdout)
    return {k: env[k] for k in UCSPI if k in env}


def cases(sockdir: str) -> List[Tuple[int, str]]:
    """(uid, bound path) of each client: root unbound, root bound, nobody unbound."""
    return [(0, ""), (0, os.path.join(sockdir, "client.sock")), (nobody_ids()[0], "")]


def replies(path: str, sockdir: str) -> List[Dict[str, str]]:
    got = []
    for uid, bind in cases(sockdir):
        got.append(ask_as(path, uid, bind))
        if bind:
            os.unlink(bind)
    return got


def normalised(got: List[Dict[str, str]], path: str) -> List[Dict[str, str]]:
    return [{k: ("LOCAL" if k == "IPCLOCALPATH" and v == path else v) for k, v in env.items()} for env in got]


@pytest.fixture
def reference(sockdir: str) -> Iterator[Tuple[str, str]]:
    """``s6ipc ipcserver`` with the same rules and program: (rules dir, its replies' path)."""
    rules = make_rules(sockdir)
    path = os.path.join(sockdir, "ref.sock")
    proc = subprocess.Popen([S6IPC, "ipcserver", "-c", "10", path, S6IPC, "ipcserver-access", "-i", rules,
                             "/usr/bin/env"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=lambda: os.umask(0))
    try:
        wait_listening(path)
        yield rules, path
    finally:
        proc.terminate()
        proc.wait(10)


def expected(sockdir: str, path: str) -> List[Dict[str, str]]:
    return normalised(replies(path, sockdir), path)


@requires_root
@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate is not installed (apt-get install "
                    "systemd)")
@pytest.mark.parametrize("mode", ["accept", "inetd"])
def test_systemd_socket_activate_accept_matches_ipcserver(sockdir: str, reference: Tuple[str, str],
                                                          mode: str) -> None:
    rules, ref = reference
    want = expected(sockdir, ref)
    assert want[0]["GREETING"] == "hello" and want[0]["IPCREMOTEEUID"] == "0" and want[2] == {}
    assert want[1]["IPCREMOTEPATH"] == os.path.join(sockdir, "client.sock")
    path = os.path.join(sockdir, "accept.sock")
    flags = ["--accept"] if mode == "accept" else ["--accept", "--inetd"]
    assert ACTIVATE is not None
    proc = subprocess.Popen([ACTIVATE, *flags, "-l", path, S6IPC, "systemd-accept", "-c",
                             os.path.join(sockdir, "count"), S6IPC, "ipcserver-access", "-i", rules,
                             "/usr/bin/env"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: os.umask(0))
    try:
        wait_listening(path)
        os.chmod(path, 0o666)  # systemd-socket-activate has no SocketMode=
        assert normalised(replies(path, sockdir), path) == want
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(("line", "numbers"), [
    (None, [b"0\n", b"1\n", b"2\n", b""]), ("2.11", [b"1\n", b"2\n", b"", b""])])
def test_connnum_counts_live_connections_of_a_uid(sockdir: str, line: Optional[str],
                                                  numbers: List[bytes]) -> None:
    """``-c dir``: IPCCONNNUM is the other live connections from the same uid as s6 2.12+ counts
    them (s6-connlimit's input: with IPCCONNMAX=2 a fourth is refused), or with S6IPC_S6=2.11
    those and this one (a third is refused), as s6-ipcserverd gives them."""
    if ACTIVATE is None:
        pytest.skip("systemd-socket-activate is not installed (apt-get install systemd)")
    path = os.path.join(sockdir, "c.sock")
    count = os.path.join(sockdir, "count")
    # each connection holds the line open until the client closes: s6-connlimit with IPCCONNMAX=2
    setting = [] if line is None else ["-E", f"S6IPC_S6={line}"]
    proc = subprocess.Popen([ACTIVATE, "--accept", "-l", path, "-E", "IPCCONNMAX=2", *setting, S6IPC,
                             "systemd-accept", "-c", count, "/usr/bin/s6-connlimit", "sh", "-c",
                             'echo "$IPCCONNNUM"; exec cat'],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import socket

    held: List[socket.socket] = []
    try:
        wait_listening(path)
        got: List[Optional[bytes]] = []
        for _ in range(4):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(path)
            held.append(s)
            got.append(s.recv(100))
        assert got == numbers  # refused by s6-connlimit once IPCCONNNUM is above 2
        for s in held:
            s.close()
        held.clear()
        time.sleep(0.3)  # the instances end; their locks are released with them
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(path)
        held.append(s)
        assert s.recv(100) == numbers[0]
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(10)


def test_not_a_connection_is_one_line(sockdir: str) -> None:
    """A listening socket (an Accept=no unit) or no socket at all: one fatal line, exit 100."""
    listening = os.path.join(sockdir, "l.sock")
    out = subprocess.run([S6IPC, "ipcserver-socketbinder", listening, S6IPC, "systemd-accept", "true"],
                         capture_output=True, timeout=20)
    assert out.returncode == 100 and out.stderr.count(b"\n") == 1, out.stderr
    assert b"systemd-accept: fatal: fd 0 (stdin; " in out.stderr and b"is a listening socket" in out.stderr
    out = subprocess.run([S6IPC, "systemd-accept", "true"], stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=20)
    assert out.returncode == 100 and b"is not a socket" in out.stderr and b"Traceback" not in out.stderr


def test_v4_mapped_client_is_spelled_as_tcpserver6d_spells_it() -> None:
    """An IPv4 client of a dual-stack IPv6 socket (systemd's ``ListenStream=PORT``): systemd-accept gives
    the program the address tcpserver6d gives it (skalibs' ``::ffff:7f00:1``, never CPython's
    ``::ffff:127.0.0.1``), and with tcpserver-access after it the same variables as tcpserverd's chain."""
    import socket

    clean = {"PATH": "/usr/bin:/bin"}
    access = [S6IPC, "tcpserver-access", "-H", "-R", "/usr/bin/env"]
    listener = socket.socket(socket.AF_INET6)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", 0))
    listener.listen(8)
    servers = [TcpServer([S6IPC, name, "-1", *access], stdin=listener.fileno(), env=clean)
               for name in ("tcpserver6d", "tcpserverd")]
    listener.close()
    try:
        daemons = [dict(env_items(tcp_request(srv.port, host="127.0.0.1"))) for srv in servers]
    finally:
        for srv in servers:
            srv.stop()

    def accept(prog: List[str]) -> Dict[str, str]:  # the connection on fds 0 and 1 (StandardInput=socket)
        served = serve_one([S6IPC, "systemd-accept", *prog], clean, family=socket.AF_INET6, listen_ip="::",
                           tcp_env=False, dual_stack_client=True)
        assert served.returncode == 0, served.stderr
        return dict(line.split("=", 1) for line in environ_lines(served.received))

    alone = accept(["/usr/bin/env"])
    chained = accept(access)
    for daemon in daemons:
        assert daemon["TCPREMOTEIP"] == daemon["TCPLOCALIP"] == "::ffff:7f00:1"
        assert alone["TCPREMOTEIP"] == alone["TCPLOCALIP"] == "::ffff:7f00:1"
        ports = ("TCPREMOTEPORT", "TCPLOCALPORT", "TCPCONNNUM")
        assert {k: v for k, v in chained.items() if k not in ports} == {
            k: v for k, v in daemon.items() if k not in ports}  # each listener has its own port


# -- a real systemd manager --------------------------------------------------------------------------
def render(text: str, m: sdmanager.UserManager) -> str:
    return (text.replace("/usr/local/bin/s6ipc", S6IPC)
            .replace("/run/s6ipc-demo", os.path.join(m.base, "run"))
            .replace("/etc/s6ipc/accept-rules", os.path.join(m.base, "rules"))
            .replace("/usr/bin/gunicorn", os.path.join(os.path.dirname(sys.executable), "gunicorn"))
            .replace("/srv/s6ipc-app", os.path.join(m.base, "app")))


@pytest.fixture(scope="module")
def mgr() -> Iterator[sdmanager.UserManager]:
    m = sdmanager.start_or_skip()
    os.makedirs(os.path.join(m.base, "run"))
    shutil.copytree(APP, os.path.join(m.base, "app"))  # gunicorn writes __pycache__ next to app.py
    make_rules(m.base)
    for name in ("s6ipc-accept.socket", "s6ipc-accept@.service", "s6ipc-gunicorn.socket",
                 "s6ipc-gunicorn.service"):
        with open(os.path.join(UNITS, name)) as f:
            m.write_unit(name, render(f.read(), m))
    for service in ("s6ipc-accept@", "s6ipc-gunicorn"):
        log = os.path.join(m.base, f"{service}.log")
        m.write_unit(f"{service}.service.d/test.conf", f"[Unit]\nStartLimitIntervalSec=0\n[Service]\n"
                                                       f"StandardError=append:{log}\n")
    m.systemctl("daemon-reload")
    try:
        yield m
    finally:
        m.stop()


def test_real_manager_accept_yes_matches_ipcserver(mgr: sdmanager.UserManager, sockdir: str,
                                                   reference: Tuple[str, str]) -> None:
    _, ref = reference
    want = expected(sockdir, ref)
    mgr.systemctl("start", "s6ipc-accept.socket")
    path = os.path.join(mgr.base, "run", "accept.sock")
    got = normalised(replies(path, sockdir), path)
    assert got == want, mgr.log(20)
    assert int(mgr.prop("s6ipc-accept.socket", "NAccepted")) == 3


def test_real_manager_gunicorn_behind_a_forking_wrapper(mgr: sdmanager.UserManager) -> None:
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    if not os.access(gunicorn, os.X_OK):
        pytest.skip("gunicorn is not installed (pip install '.[test]')")
    mgr.systemctl("start", "s6ipc-gunicorn.socket")
    path = os.path.join(mgr.base, "run", "gunicorn.sock")
    first = http_get(path)  # the first connection starts the service
    assert ok(first), (first, mgr.log(20))
    with Load(path, ok, asker=http_get) as load:
        for _ in range(2):
            time.sleep(0.5)
            mgr.systemctl("restart", "s6ipc-gunicorn.service")
        time.sleep(0.5)
    print(f"gunicorn under systemd, 2 restarts under load: {load.summary()}")
    assert load.counts["refused"] == 0 and load.counts["truncated"] == 0, load.summary()
    assert load.counts["ok"] > 20
    mgr.systemctl("stop", "s6ipc-gunicorn.service")
    log = os.path.join(mgr.base, "s6ipc-gunicorn.log")
    with open(log) as f:
        assert f"Listening at: unix:{path}" in f.read()  # systemd's socket, adopted
    # the control: without listen-pid, LISTEN_PID names the shell; gunicorn ignores the socket and
    # binds what its command line says instead
    own = os.path.join(mgr.base, "run", "own.sock")
    mgr.write_unit("s6ipc-gunicorn.service.d/nolistenpid.conf",
                   f"[Service]\nExecStart=\nExecStart=/bin/sh -c '{gunicorn} --chdir {mgr.base}/app "
                   f"--bind unix:{own} app:app; exit $?'\n")
    mgr.systemctl("daemon-reload")
    mgr.systemctl("start", "s6ipc-gunicorn.service")
    try:
        def bound_its_own() -> bool:
            with open(log) as f:
                return f"Listening at: unix:{own}" in f.read()

        wait_until(bound_its_own, timeout=20)
    finally:
        mgr.systemctl("stop", "s6ipc-gunicorn.service", check=False)


def test_inet_connection_gets_s6_tcpserver_variables() -> None:
    """An IP connection (``ListenStream=127.0.0.1:PORT``): ``PROTO=TCP`` and s6-tcpserver's variables."""
    if ACTIVATE is None:
        pytest.skip("systemd-socket-activate is not installed (apt-get install systemd)")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([ACTIVATE, "--accept", "-l", f"127.0.0.1:{port}", S6IPC, "systemd-accept",
                             "/usr/bin/env"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def connect() -> socket.socket:
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=10)
            except ConnectionRefusedError:
                return None  # type: ignore[return-value]

        s = wait_until(connect)
        with s:
            s.shutdown(socket.SHUT_WR)
            with s.makefile("rb") as f:
                data = f.read()
            local = s.getsockname()
        env = env_of(data)
        names = ("PROTO", "TCPREMOTEIP", "TCPREMOTEPORT", "TCPLOCALIP", "TCPLOCALPORT")
        assert {k: env.get(k) for k in names} == {
            "PROTO": "TCP", "TCPREMOTEIP": "127.0.0.1", "TCPREMOTEPORT": str(local[1]),
            "TCPLOCALIP": "127.0.0.1", "TCPLOCALPORT": str(port)}
        assert "IPCREMOTEEUID" not in env and "LISTEN_FDS" not in env
    finally:
        proc.terminate()
        proc.wait(10)
