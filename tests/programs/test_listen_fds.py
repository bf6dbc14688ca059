"""listen-fds and listen-pid, seen by real receivers: python-systemd and libsystemd's C API.

The sockets come from real sources: our binder and s6's C ``s6-ipcserver-socketbinder``, s6's
``s6-fdholder-retrieve``, ``systemd-socket-activate`` (its own LISTEN_FDS list, appended to), an IPv6
socket on fd 0. Each receiver must see exactly the fds and names given with ``LISTEN_PID`` its own;
behind a wrapper that forks it sees nothing, and with ``listen-pid`` placed last it sees them again.
Bad input: one ``listen-fds: fatal: …`` line, s6's exit codes, no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from typing import Dict, Iterator, List

import pytest

from tests.support.processes import S6IPC, SUPPORT, run

PROBE = os.path.join(SUPPORT, "listen_probe.py")
LF = [S6IPC, "listen-fds"]
BIND = [S6IPC, "ipcserver-socketbinder"]

try:
    import systemd.daemon  # noqa: F401

    HAVE_PYTHON_SYSTEMD = True
except ImportError:
    HAVE_PYTHON_SYSTEMD = False
needs_python_systemd = pytest.mark.skipif(not HAVE_PYTHON_SYSTEMD,
                                          reason="python-systemd is not installed (pip install '.[systemd]')")


def probe(argv: List[str], **kw) -> Dict:  # type: ignore[no-untyped-def,type-arg]
    out = run(argv, **kw)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def sdlisten() -> Iterator[str]:
    """tests/support/sdlisten.c built against libsystemd (gcc -lsystemd)."""
    if shutil.which("gcc") is None or subprocess.run(["pkg-config", "--exists", "libsystemd"]).returncode:
        pytest.skip("gcc or libsystemd-dev is not installed: apt-get install gcc libsystemd-dev pkg-config")
    d = tempfile.mkdtemp(prefix="s6sd", dir="/tmp")
    out = os.path.join(d, "sdlisten")
    build = run(["gcc", "-O2", "-o", out, os.path.join(SUPPORT, "sdlisten.c"), "-lsystemd"], timeout=120)
    assert build.returncode == 0, build.stderr.decode()
    try:
        yield out
    finally:
        shutil.rmtree(d, ignore_errors=True)


@needs_python_systemd
def test_two_binders_in_one_chain_python_systemd(sockdir: str) -> None:
    pub, admin = os.path.join(sockdir, "pub.sock"), os.path.join(sockdir, "admin.sock")
    # ours then s6's C binder, each followed by a listen-fds that appends its fd 0
    r = probe([*BIND, pub, *LF, "-n", "public", "/usr/bin/s6-ipcserver-socketbinder", admin, *LF,
               "-n", "admin", sys.executable, PROBE], env=dict(os.environ, LISTEN_PIDFDID="12345"))
    assert r["fds"] == {"3": "public", "4": "admin"}
    assert r["kinds"] == {"3": ["AF_UNIX", True, pub], "4": ["AF_UNIX", True, admin]}
    assert r["env"]["LISTEN_PID"] == str(r["pid"]) and r["env"]["LISTEN_FDS"] == "2"
    assert r["env"]["LISTEN_FDNAMES"] == "public:admin"
    assert r["fd0"] == "/dev/null"  # the listener is not also the daemon's stdin
    # the stale LISTEN_PIDFDID was replaced by this process's own pidfd identity (or removed)
    assert r["env"].get("LISTEN_PIDFDID") == (str(r["pidfdid"]) if r["pidfdid"] else None)


@needs_python_systemd
def test_either_family_from_fd0_and_from_systemd_socket_activate(sockdir: str) -> None:
    six = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    six.bind(("::1", 0))
    six.listen()
    with six:
        r = probe([*LF, "-n", "v6", sys.executable, PROBE], stdin=six)
    assert r["fds"] == {"3": "v6"} and r["kinds"]["3"][:2] == ["AF_INET6", True]
    if shutil.which("systemd-socket-activate") is None:
        pytest.skip("systemd-socket-activate is not installed (apt-get install systemd)")
    # systemd-socket-activate's own list (a TCP socket, for this PID) gets our Unix socket appended
    port = free_port()
    admin = os.path.join(sockdir, "admin.sock")
    out = os.path.join(sockdir, "out.json")
    proc = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=web",
                             "sh", "-c", 'exec "$@" >"$0"', out, *BIND, admin, *LF, "-n", "admin",
                             sys.executable, PROBE], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        poke(port)  # systemd-socket-activate (252) execs at the first connection
        assert proc.wait(20) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(out) as f:
        r = json.loads(f.read())
    assert r["fds"] == {"3": "web", "4": "admin"}
    assert r["kinds"]["3"][:2] == ["AF_INET", True] and r["kinds"]["4"] == ["AF_UNIX", True, admin]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poke(port: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_fdholder_retrieve_then_sd_listen_fds_in_c(sockdir: str, sdlisten: str) -> None:
    holder = os.path.join(sockdir, "holder.sock")
    web = os.path.join(sockdir, "web.sock")
    daemon = subprocess.Popen(["/usr/bin/s6-fdholder-daemon", "-1", "-i", rules(sockdir), holder],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert daemon.stdout is not None and daemon.stdout.read(1) == b"\n"
        admin = os.path.join(sockdir, "admin.sock")
        for path, ident in ((web, "unix:web"), (admin, "unix:admin")):
            stored = run([*BIND, path, "/usr/bin/s6-fdholder-store", holder, ident])
            assert stored.returncode == 0, stored.stderr
        out = run(["/usr/bin/s6-fdholder-retrieve", holder, "unix:web", *LF, "-n", "web", sdlisten])
        assert out.returncode == 0, out.stderr
        assert out.stdout.decode().splitlines() == ["3 web unix-listening", "pid-matches 1 n 1"]
        # two held identifiers, each retrieved by its own stage (s6's C one, then ours), in one chain
        out = run(["/usr/bin/s6-fdholder-retrieve", holder, "unix:web", *LF, "-n", "web",
                   S6IPC, "fdholder-retrieve", holder, "unix:admin", *LF, "-n", "admin", sdlisten])
        assert out.returncode == 0, out.stderr
        assert out.stdout.decode().splitlines() == ["3 web unix-listening", "4 admin unix-listening",
                                                    "pid-matches 1 n 2"]
    finally:
        daemon.kill()
        daemon.wait()


def rules(sockdir: str) -> str:
    d = os.path.join(sockdir, "rules", "uid", str(os.geteuid()))
    os.makedirs(os.path.join(d, "env"))
    open(os.path.join(d, "allow"), "w").close()
    for name, value in (("S6_FDHOLDER_STORE_REGEX", "^unix:"), ("S6_FDHOLDER_RETRIEVE_REGEX", "^unix:")):
        with open(os.path.join(d, "env", name), "w") as f:
            f.write(value + "\n")
    return os.path.join(sockdir, "rules")


def test_last_exec_rule_after_a_forking_wrapper(sockdir: str, sdlisten: str) -> None:
    web = os.path.join(sockdir, "web.sock")
    chain = [*BIND, web, *LF, "-n", "web"]
    # the control: sh forks the daemon (it has more to do after it): LISTEN_PID names the shell
    forked = run([*chain, "sh", "-c", f"{sdlisten}; exit $?"])
    assert forked.stdout.decode().splitlines() == ["pid-matches 0 n 0"]
    # the rule: listen-pid last, right before the daemon, in the process that execs it
    fixed = run([*chain, "sh", "-c", f"{S6IPC} listen-pid {sdlisten}; exit $?"])
    assert fixed.stdout.decode().splitlines() == ["3 web unix-listening", "pid-matches 1 n 1"], fixed.stderr
    # the same through env(1) and s6-setuidgid (they exec: nothing to fix, and nothing broken)
    through = run([*chain, "env", "X=1", "/usr/bin/s6-setuidgid", "root", sdlisten])
    assert through.stdout.decode().splitlines() == ["3 web unix-listening", "pid-matches 1 n 1"]


def test_last_exec_rule_through_runits_chpst(sockdir: str, sdlisten: str) -> None:
    """runit's chpst execs (user, nice, limits): the PID holds; after a forking sh, listen-pid fixes it."""
    chpst = shutil.which("chpst")
    if chpst is None:
        pytest.skip("runit's chpst is not installed (apt-get install runit)")
    chain = [*BIND, os.path.join(sockdir, "web.sock"), *LF, "-n", "web"]
    direct = run([*chain, chpst, "-u", "root", "-n", "1", "-o", "512", sdlisten])
    assert direct.stdout.decode().splitlines() == ["3 web unix-listening", "pid-matches 1 n 1"], direct.stderr
    forked = run([*chain, chpst, "-n", "1", "sh", "-c", f"{sdlisten}; exit $?"])
    assert forked.stdout.decode().splitlines() == ["pid-matches 0 n 0"]
    last = f"{chpst} -o 512 {S6IPC} listen-pid {sdlisten}"
    fixed = run([*chain, chpst, "-n", "1", "sh", "-c", f"{last}; exit $?"])
    assert fixed.stdout.decode().splitlines() == ["3 web unix-listening", "pid-matches 1 n 1"], fixed.stderr


@needs_python_systemd
def test_listen_pid_sets_a_fresh_pidfdid_and_keeps_the_list(sockdir: str) -> None:
    web = os.path.join(sockdir, "web.sock")
    r = probe([*BIND, web, *LF, "-n", "web", "sh", "-c", f'{S6IPC} listen-pid "$@"; exit $?', "sh",
               sys.executable, PROBE])
    assert r["fds"] == {"3": "web"} and r["env"]["LISTEN_PID"] == str(r["pid"])
    assert r["env"].get("LISTEN_PIDFDID") == (str(r["pidfdid"]) if r["pidfdid"] else None)


@needs_python_systemd
def test_nginx_and_einhorn_variables(sockdir: str) -> None:
    a, b = os.path.join(sockdir, "a.sock"), os.path.join(sockdir, "b.sock")
    r = probe([*BIND, a, *LF, *BIND, b, *LF, "-x", "nginx", "-x", "einhorn", sys.executable, PROBE])
    assert r["env"]["NGINX"] == "3;4;"
    einhorn = (r["env"]["EINHORN_FD_COUNT"], r["env"]["EINHORN_FD_0"], r["env"]["EINHORN_FD_1"])
    assert einhorn == ("2", "3", "4")
    assert r["fds"] == {"3": "unknown", "4": "unknown"}


# -- bad input ---------------------------------------------------------------------------------------
def one_fatal_line(result: subprocess.CompletedProcess, code: int, needle: str) -> None:  # type: ignore[type-arg]
    err = result.stderr.decode()
    assert result.returncode == code, (result.returncode, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(("listen-fds: fatal: ", "listen-pid: fatal: ")), err
    assert needle in lines[0], err


@pytest.mark.parametrize("name, needle", [("a:b", "contains ':'"), ("x" * 256, "longer than 255"),
                                          ("sp ace", "printable ASCII")])
def test_bad_names(sockdir: str, name: str, needle: str) -> None:
    web = os.path.join(sockdir, "web.sock")
    one_fatal_line(run([*BIND, web, *LF, "-n", name, "true"]), 100, needle)


def test_bad_fds_and_lists(sockdir: str) -> None:
    web = os.path.join(sockdir, "web.sock")
    one_fatal_line(run([*LF, "true"], stdin=subprocess.DEVNULL), 100, "fd 0 is not a socket")
    one_fatal_line(run(["sh", "-c", f'exec {S6IPC} listen-fds true <&-']), 111,
                   "unable to use fd 0: Bad file")
    one_fatal_line(run([*BIND, web, *LF, "true"], env=dict(os.environ, LISTEN_PID="1", LISTEN_FDS="1")),
                   100, "is for another process (LISTEN_PID=1")
    one_fatal_line(run([*BIND, web, *LF, "true"], env=dict(os.environ, LISTEN_PID="12x", LISTEN_FDS="1")),
                   100, "invalid LISTEN_PID")
    # a foreign fd where the socket would go (s6's notification-fd 3, say) is never overwritten
    one_fatal_line(run([*BIND, web, "sh", "-c", f'exec {S6IPC} listen-fds true 3</dev/null']), 100,
                   "fd 3 is already open")
    one_fatal_line(run([S6IPC, "listen-pid", "true"]), 100, "LISTEN_FDS is not set")
    one_fatal_line(run([*BIND, web, *LF, "-x", "bogus", "true"]), 100, "unknown daemon variable scheme")
    one_fatal_line(run(["sh", "-c", f'LISTEN_FDS=2 exec {S6IPC} listen-pid true 3</dev/null']), 111,
                   "use fd 4 listed in LISTEN_FDS=2")


def test_too_many_fds(sockdir: str) -> None:
    web = os.path.join(sockdir, "web.sock")
    # a list that would reach beyond the descriptor limit (1024 here): refused before any fd is used
    script = f'LISTEN_PID=$$ LISTEN_FDS=5000 exec {S6IPC} listen-fds true'
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    result = run([*BIND, web, "sh", "-c", script], preexec_fn=limit)
    one_fatal_line(result, 100, "too many fds: LISTEN_FDS=5000 needs fd 5002, beyond the descriptor limit")
    one_fatal_line(run(["sh", "-c", script.replace("listen-fds", "listen-pid")], preexec_fn=limit), 100,
                   "too many fds: LISTEN_FDS=5000")


def test_pidfdid_is_what_a_checking_reader_accepts(sockdir: str) -> None:
    """libsystemd 252 ignores LISTEN_PIDFDID; s6ipc's own reader checks it as libsystemd >= 259 does.
    The value listen-fds sets passes that check; a stale one (the control) makes the fds "not ours"."""
    web = os.path.join(sockdir, "web.sock")
    reader = [sys.executable, "-c",
              "import s6ipc; print([tuple(p) for p in s6ipc.listen_fds(backend='stdlib')])"]
    good = run([*BIND, web, *LF, "-n", "web", *reader], env=dict(os.environ, LISTEN_PIDFDID="1"))
    assert good.stdout == b"[(3, 'web')]\n", good.stderr
    probe_pidfd = run([sys.executable, "-c", "import os; print(os.fstat(os.pidfd_open(os.getpid())).st_ino)"])
    if probe_pidfd.returncode != 0:
        pytest.skip("no pidfd_open here: LISTEN_PIDFDID cannot be checked")
    stale = run([*BIND, web, "sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_PIDFDID=1 exec "$@" 3<&0', "sh",
                 *reader])
    assert stale.stdout == b"[]\n", stale.stderr
