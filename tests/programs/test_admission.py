"""``-A``: per-source rate limits, per-prefix (per-gid) concurrency and aggregated refusal lines, on
the real daemons through their wrappers (docs/access-control.md, "Floods and rate limits").

Each test is short (a few seconds): the figures under a real flood are bench/flood.py's.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import threading
import time
from typing import List

import pytest

from tests.support.guides import sh_blocks
from tests.support.processes import (
    S6IPC,
    RunningServer,
    nobody_ids,
    ours,
    requires_root,
    run,
    scratch_dir,
    wait_until,
)
from tests.support.tcp import TcpServer, connect, tcp_request
from tests.support.upgrade import upgrade, view

CLEAN_ENV = {"PATH": "/usr/bin:/bin"}
#: A handler that leaves a mark (one line in a file per child spawned) and answers.
MARK = 'echo "$TCPREMOTEIP" >> "$0"; echo ok'


def tcpserver(servers: List[TcpServer], args: List[str], marks: str, host: str = "127.0.0.1") -> TcpServer:
    srv = TcpServer(ours("tcpserver") + ["-1", *args, host, "0", "sh", "-c", MARK, marks], env=CLEAN_ENV)
    servers.append(srv)
    return srv


def answer(port: int, source: str = "127.0.0.1", host: str = "127.0.0.1") -> bytes:
    return tcp_request(port, host=host, source=source)


def spawned(marks: str) -> List[str]:
    try:
        with open(marks) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def test_over_rate_connections_are_closed_without_a_child_and_refill_serves_again(
        servers: List[TcpServer], tmp_path: str) -> None:
    marks = os.path.join(str(tmp_path), "marks")
    srv = tcpserver(servers, ["-A", "rate=2/s,burst=3"], marks)
    start = time.monotonic()
    answers = [answer(srv.port, "127.0.0.2") for _ in range(8)]
    elapsed = time.monotonic() - start
    assert answers[:3] == [b"ok\n"] * 3, "the burst is served"
    served = answers.count(b"ok\n")
    assert served <= 3 + int(elapsed * 2) + 1, answers  # the burst, and what refilled meanwhile
    assert b"" in answers[3:] or elapsed > 2, "over the rate: closed at once (EOF, nothing read)"
    wait_until(lambda: len(spawned(marks)) == served)
    time.sleep(0.3)
    assert spawned(marks) == ["127.0.0.2"] * served, "nothing was spawned for a refused connection"
    assert answer(srv.port, "127.0.0.3") == b"ok\n", "another source has its own bucket"
    time.sleep(0.6)  # 2/s: at least one token back
    assert answer(srv.port, "127.0.0.2") == b"ok\n", "served again once the bucket refilled"
    counters = view(srv.proc.pid, "tcpserver4d")["counters"]["refused"]
    assert counters["rate"] == 8 - served and counters["prefix"] == 0


def test_ipv4_mapped_clients_count_as_ipv4_and_share_their_prefix(servers: List[TcpServer],
                                                                  tmp_path: str) -> None:
    """On a dual-stack socket ``::ffff:127.0.0.2`` is 127.0.0.2 for the bucket and 127.0.0.0/24 for
    the prefix's (while -C keeps s6's count per 16-byte address)."""
    marks = os.path.join(str(tmp_path), "marks")
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", 0))
    sock.listen(64)
    argv = ours("tcpserverd") + ["-1", "-A", "prefixrate=1/m,prefixburst=2", "sh", "-c", MARK, marks]
    srv = TcpServer(argv, stdin=sock.fileno(), env=CLEAN_ENV)
    servers.append(srv)
    sock.close()
    assert answer(srv.port, "127.0.0.2") == b"ok\n"
    assert answer(srv.port, "::ffff:127.0.0.3", host="::ffff:127.0.0.1") == b"ok\n"
    assert answer(srv.port, "127.0.0.4") == b"", "the /24 spent its two tokens, mapped or not"
    wait_until(lambda: "deny prefix 127.0.0.0/24 over rate 1/m burst 2: 1 refused" in srv.log())


def test_per_prefix_concurrency(servers: List[TcpServer], tmp_path: str) -> None:
    """prefixconn=2: a third live connection from the /24 is closed, whatever the address; another
    /24 is served; a slot freed serves the prefix again."""
    hold = ["sh", "-c", 'echo "$TCPREMOTEIP"; exec cat']
    srv = TcpServer(ours("tcpserver") + ["-1", "-A", "prefixconn=2", "127.0.0.1", "0", *hold], env=CLEAN_ENV)
    servers.append(srv)
    first, second = connect(srv.port, source="127.0.0.2"), connect(srv.port, source="127.0.0.3")
    for s in (first, second):
        assert s.recv(64).startswith(b"127.0.0.")
    assert answer(srv.port, "127.0.0.4") == b"", "the /24 has its two connections"
    other = connect(srv.port, host="127.0.0.1", source="127.0.1.9")
    assert other.recv(64) == b"127.0.1.9\n", "another /24 is served"
    line = r"deny prefix 127\.0\.0\.0/24 over 2 connections: 1 refused$"
    wait_until(lambda: re.search(line, srv.log(), re.M))
    first.close()
    wait_until(lambda: view(srv.proc.pid, "tcpserver4d")["connections"]["total"] == 2)
    third = connect(srv.port, source="127.0.0.5")
    assert third.recv(64) == b"127.0.0.5\n", "a slot of the prefix freed: served again"
    document = view(srv.proc.pid, "tcpserver4d")
    assert document["counters"]["refused"]["prefix"] == 1
    assert document["admission"]["limits"]["prefixconn"] == 2
    for s in (second, other, third):
        s.close()


def test_refusal_lines_are_aggregated_at_most_one_a_second(servers: List[TcpServer], tmp_path: str) -> None:
    marks = os.path.join(str(tmp_path), "marks")
    srv = tcpserver(servers, ["-A", "rate=1/m,burst=1"], marks)
    assert answer(srv.port, "127.0.0.2") == b"ok\n"
    start = time.monotonic()
    refused = 0
    while time.monotonic() - start < 2.5:
        assert answer(srv.port, "127.0.0.2") == b""
        refused += 1
    time.sleep(1.3)  # the loop's timer writes the last count
    lines = [line for line in srv.log().splitlines() if "deny ip 127.0.0.2" in line]
    assert lines[0] == "tcpserver4d: info: deny ip 127.0.0.2 over rate 1/m burst 1: 1 refused"
    assert 2 <= len(lines) <= 4, lines  # 2.5 s of refusals, then the last count: one line a second
    found = (re.search(r": (\d+) refused in \d+\.\d s$", line) for line in lines[1:])
    counts = [int(m.group(1)) for m in found if m is not None]
    counted = view(srv.proc.pid, "tcpserver4d")["counters"]["refused"]["rate"]
    assert len(counts) == len(lines) - 1 and sum(counts) + 1 == refused == counted


def test_without_a_limit_the_deny_lines_are_s6s(servers: List[TcpServer], tmp_path: str) -> None:
    hold = ["sh", "-c", "echo x; exec cat"]
    srv = TcpServer(ours("tcpserver") + ["-1", "-C", "1", "127.0.0.1", "0", *hold], env=CLEAN_ENV)
    servers.append(srv)
    kept = connect(srv.port)
    assert kept.recv(8) == b"x\n"
    assert answer(srv.port) == b""
    s6_line = r"^tcpserver4d: info: deny 127\.0\.0\.1:\d+ count 1/1: Success$"
    wait_until(lambda: re.search(s6_line, srv.log(), re.M))
    assert "over" not in srv.log() and "admission" not in view(srv.proc.pid, "tcpserver4d")
    kept.close()


@pytest.mark.parametrize("argv,line", [
    (["tcpserver", "-A", "rate=0", "127.0.0.1", "0", "true"],
     "tcpserver: fatal: invalid admission limit 'rate=0': a rate is above 0 (leave it out for no limit)"),
    (["tcpserver", "-A", "prefix4=33,rate=1", "127.0.0.1", "0", "true"],
     "tcpserver: fatal: invalid admission limit 'prefix4=33': expected a whole number from 0 to 32"),
    (["tcpserver", "-A", "gidrate=1", "127.0.0.1", "0", "true"],
     "tcpserver: fatal: invalid admission limit 'gidrate=1': known names are rate=, burst=, prefixrate=, "
     "prefixburst=, prefixconn=, prefix4=, prefix6=, sources="),
    (["ipcserver", "-A", "prefixconn=1", "/nonexistent/s", "true"],
     "ipcserver: fatal: invalid admission limit 'prefixconn=1': known names are rate=, burst=, gidrate=, "
     "gidburst=, gidconn=, sources="),
    (["ipcserver", "-A", "burst=4", "/nonexistent/s", "true"],
     "ipcserver: fatal: invalid admission limit 'burst=4': a burst needs a rate (rate=)"),
    (["tcpserverd", "-A", "sources=0,rate=1", "true"],
     "tcpserverd: fatal: invalid admission limit 'sources=0': expected a whole number from 1 to 1000000"),
    (["ipcserverd", "-A", "prefix4=24", "true"],
     "ipcserverd: fatal: invalid admission limit 'prefix4=24': known names are rate=, burst=, gidrate=, "
     "gidburst=, gidconn=, sources="),
    (["tcpserver", "-A", "prefix4=16", "127.0.0.1", "0", "true"],
     "tcpserver: fatal: invalid admission limits 'prefix4=16': no rate and no conn limit"),
])
def test_bad_limits_are_one_line_and_exit_100(argv: List[str], line: str) -> None:
    """Checked by the wrapper before anything is bound, and by a bare daemon before it serves."""
    with socket.socket(socket.AF_UNIX if argv[0] == "ipcserverd" else socket.AF_INET) as sock:
        sock.bind("" if argv[0] == "ipcserverd" else ("127.0.0.1", 0))  # "": an abstract name
        sock.listen(1)
        p = run(ours(argv[0]) + argv[1:], stdin=sock.fileno(), env=CLEAN_ENV)
    assert (p.returncode, p.stdout, p.stderr.decode()) == (100, b"", line + "\n")


def test_an_unreadable_limits_file_is_111(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "missing")
    p = run(ours("tcpserver") + ["-A", "@" + path, "127.0.0.1", "0", "true"], env=CLEAN_ENV)
    assert (p.returncode, p.stderr.decode()) == (
        111, f"tcpserver: fatal: unable to read admission limits from {path}: No such file or directory\n")


def test_a_limit_changed_across_an_in_place_upgrade_applies_to_the_buckets_carried(
        servers: List[TcpServer], tmp_path: str) -> None:
    """rate 1/m burst 2, two connections: the third is refused. The file now says burst 4 and
    SIGUSR2 upgrades: the carried bucket has two tokens used, so exactly two more are served (a
    fresh bucket would serve four, the old limit none)."""
    marks = os.path.join(str(tmp_path), "marks")
    limits = os.path.join(str(tmp_path), "limits")
    with open(limits, "w") as f:
        f.write("# the flood of issue 21\nrate=1/m burst=2\n")
    srv = tcpserver(servers, ["-v", "-A", "@" + limits], marks)
    assert [answer(srv.port, "127.0.0.2") for _ in range(3)] == [b"ok\n", b"ok\n", b""]
    with open(limits, "w") as f:
        f.write("rate=1/m\nburst=4  # raised\n")
    document = upgrade(srv.proc.pid, 1, program="tcpserver4d")
    assert document["admission"]["limits"]["burst"] == 4
    assert document["counters"]["refused"]["rate"] == 1, "the counters are carried"
    assert [answer(srv.port, "127.0.0.2") for _ in range(3)] == [b"ok\n", b"ok\n", b""]
    assert answer(srv.port, "127.0.0.3") == b"ok\n"
    wait_until(lambda: "upgraded in place" in srv.log())
    assert view(srv.proc.pid, "tcpserver4d")["counters"]["refused"]["rate"] == 2


def test_a_bad_limits_file_refuses_the_upgrade_and_the_old_limits_keep_serving(
        servers: List[TcpServer], tmp_path: str) -> None:
    marks = os.path.join(str(tmp_path), "marks")
    limits = os.path.join(str(tmp_path), "limits")
    with open(limits, "w") as f:
        f.write("rate=1/m burst=1\n")
    srv = tcpserver(servers, ["-A", "@" + limits], marks)
    assert answer(srv.port, "127.0.0.2") == b"ok\n"
    with open(limits, "w") as f:
        f.write("rate=fast\n")
    os.kill(srv.proc.pid, 12)  # SIGUSR2
    wait_until(lambda: "invalid admission limit 'rate=fast'" in srv.log())
    assert view(srv.proc.pid, "tcpserver4d")["generation"] == 0
    assert answer(srv.port, "127.0.0.2") == b"", "the old limits and bucket still apply"


@requires_root
def test_two_uids_on_a_unix_socket_have_their_own_buckets() -> None:
    """ipcserver -A rate=1/m,burst=2: root's third connection is refused, nobody's first ones are
    served (its own bucket), and the lines name the uids."""
    uid, gid = nobody_ids()
    with scratch_dir("s6t-adm", 0o755) as sockdir:
        _two_uids(os.path.join(sockdir, "s"), uid, gid)


def _two_uids(path: str, uid: int, gid: int) -> None:
    server = RunningServer([*ours("ipcserver"), "-1", "-A", "rate=1/m,burst=2", path, "sh", "-c",
                            'echo "$IPCREMOTEEUID"'], env=CLEAN_ENV)
    try:
        def ask() -> bytes:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
                return b"".join(iter(lambda: s.recv(64), b""))

        assert [ask() for _ in range(3)] == [b"0\n", b"0\n", b""]
        client = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
                  "sys.stdout.write(repr(s.recv(64)))")
        as_nobody = run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "/usr/bin/python3",
                         "-c", client, path])
        assert as_nobody.stdout.decode() == f"b'{uid}\\n'", as_nobody.stderr
        wait_until(lambda: "deny uid 0 over rate 1/m burst 2: 1 refused" in server.log())
        assert f"uid {uid}" not in server.log()
    finally:
        server.stop()


def test_the_guide_floods_and_rate_limits(servers: List[TcpServer], tmp_path: str) -> None:
    """docs/access-control.md, "Floods and rate limits", as written (port 8080 → a free one, the
    limits file → a temporary one): the flood prints the burst and a few hellos, the log has the
    lines shown, the status line shows the count, the file's limits start a server."""
    server_line, flood, status_line, ipc_line, limits_block = sh_blocks("access-control.md",
                                                                        "Floods and rate limits")
    argv = shlex.split(server_line, comments=True)
    assert argv[:2] == ["s6ipc", "tcpserver"] and "8080" in argv
    srv = TcpServer(ours("tcpserver") + [a if a != "8080" else "0" for a in argv[2:]], env=CLEAN_ENV)
    servers.append(srv)
    script = flood.replace("s6ipc", S6IPC).replace("8080", str(srv.port))
    out = run(["sh", "-c", script], env=CLEAN_ENV, timeout=60)
    hellos = out.stdout.decode().split()
    assert out.returncode == 0 and set(hellos) == {"hello"} and 5 <= len(hellos) < 20, out
    log = srv.log()
    assert "tcpserver4d: info: deny ip 127.0.0.1 over rate 1/s burst 5: 1 refused\n" in log
    status = run([S6IPC, *shlex.split(status_line, comments=True)[1:]])  # every tcpserver4d: find ours
    documents = [json.loads(line) for line in status.stdout.decode().splitlines()]
    ours_now = [d for d in documents if d["pid"] == srv.proc.pid]
    assert ours_now and ours_now[0]["counters"]["refused"]["rate"] == 20 - len(hellos), status
    assert '"refused":{' in status_line.replace(" ", "") and '"rate":' in status_line
    assert shlex.split(ipc_line, comments=True)[:3] == ["s6ipc", "ipcserver", "-A"]
    path = os.path.join(str(tmp_path), "limits")
    write, start = limits_block.replace("/etc/app/limits", path).strip().splitlines()
    assert run(["sh", "-c", write]).returncode == 0
    words = shlex.split(start)
    local = {"0.0.0.0": "127.0.0.1", "8080": "0"}
    argv = ours("tcpserver") + ["-1", *[local.get(w, w) for w in words[2:-1]], "true"]
    second = TcpServer(argv, env=CLEAN_ENV)
    servers.append(second)
    assert view(second.proc.pid, "tcpserver4d")["admission"]["limits"]["prefixconn"] == 50


def test_upgrades_in_the_middle_of_a_flood_lose_no_count(servers: List[TcpServer], tmp_path: str) -> None:
    """SIGUSR2 twice while one source floods: every connection the flooder saw closed at once is a
    ``rate`` refusal, every one served a spawn, across both exec's."""
    marks = os.path.join(str(tmp_path), "marks")
    srv = tcpserver(servers, ["-A", "rate=20/s,burst=5"], marks)
    seen: List[bytes] = []
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            seen.append(answer(srv.port, "127.0.0.2"))

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        time.sleep(0.5)
        upgrade(srv.proc.pid, 1, program="tcpserver4d")
        time.sleep(0.5)
        upgrade(srv.proc.pid, 2, program="tcpserver4d")
        time.sleep(0.5)
    finally:
        stop.set()
        flooder.join()
    counters = wait_until(lambda: (lambda c: c if c["exits"]["ok"] == c["spawned"] else None)(
        view(srv.proc.pid, "tcpserver4d")["counters"]))
    assert set(seen) == {b"ok\n", b""}
    assert counters["refused"]["rate"] == seen.count(b"") and counters["spawned"] == seen.count(b"ok\n")
    assert counters["accepted"] == len(seen)
