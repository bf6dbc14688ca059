"""``s6ipc metrics`` and ``s6ipc metrics-http`` against real daemons: what they export, that
``promtool check metrics`` (Debian's prometheus) has nothing to say, and the endpoint's hostile
pass behind a real ``s6ipc tcpserver`` (oversized, slow, garbage, HEAD, HTTP/1.0, other paths and
methods): one answer, one line on stderr for bad input, bounded time."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from typing import Dict, Iterator, List, Tuple

import pytest

from s6ipc.fdholder.client import FdHolderClient
from tests.support.fdholder import ALL_RIGHTS, make_rules
from tests.support.processes import S6IPC, read_all, request, scratch_dir
from tests.support.restart_load import free_port, start_ready, stop

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Debian's prometheus) is not installed"
)


@pytest.fixture(scope="module")
def daemons() -> Iterator[Dict[str, object]]:
    """An ipcserverd named ``shop`` that served 5 clients (its handler prints whether it sees
    S6IPC_NAME), an fdholderd named ``holder`` that got 2 stores and 1 list."""
    with scratch_dir("s6m") as d:
        env = dict(os.environ, S6IPC_NAME="shop")
        path = os.path.join(d, "s")
        handler = ["sh", "-c", 'echo "name=${S6IPC_NAME-unset}"']
        server = start_ready([S6IPC, "ipcserver", "-1", path, *handler], env, os.path.join(d, "log"))
        holder_path = os.path.join(d, "h")
        rules = make_rules(d, {f"uid/{os.geteuid()}": ALL_RIGHTS})
        holder = start_ready(
            [S6IPC, "fdholder-daemon", "-1", "-i", rules, "--", holder_path],
            dict(os.environ, S6IPC_NAME="holder"),
            os.path.join(d, "hlog"),
        )
        try:
            answers = [request(path) for _ in range(5)]
            r, w = os.pipe()
            with FdHolderClient(holder_path, timeout=10) as client:
                client.store(r, b"unix:/a")
                client.store(w, b"unix:/b")
                assert sorted(client.list()) == [b"unix:/a", b"unix:/b"]
            os.close(r)
            os.close(w)
            time.sleep(0.3)  # the handlers' exits reaped
            yield {"server": server.pid, "holder": holder.pid, "answers": answers, "dir": d}
        finally:
            stop(server)
            stop(holder)


def metrics(*args: str) -> str:
    """The output of ``s6ipc metrics ARGS``; on its stderr, only warnings about daemons left out
    (other tests on this host run hostile live views: a listing leaves them out and says so)."""
    got = subprocess.run([S6IPC, "metrics", *args], capture_output=True, text=True, timeout=30)
    assert got.returncode == 0, got.stderr
    assert all(
        re.fullmatch(r"metrics: warning: unable to .*: left out", line) for line in got.stderr.splitlines()
    )
    if all(a.isdigit() for a in args) and args:
        assert got.stderr == ""
    return got.stdout


def test_what_a_server_and_a_holder_export(daemons: Dict[str, object]) -> None:
    assert daemons["answers"] == [b"name=unset\n"] * 5, "S6IPC_NAME is the daemon's, never its handlers'"
    text = metrics(str(daemons["server"]), str(daemons["holder"]))
    server = f'program="ipcserverd",pid="{daemons["server"]}",name="shop"'
    holder = f'program="fdholderd",pid="{daemons["holder"]}",name="holder"'
    lines = text.splitlines()
    for expected in (
        f"s6ipc_connections_accepted_total{{{server}}} 5",
        f"s6ipc_handlers_spawned_total{{{server}}} 5",
        f's6ipc_handler_exits_total{{{server},outcome="ok"}} 5',
        f's6ipc_connections_refused_total{{{server},reason="access"}} 0',
        f"s6ipc_connections{{{server}}} 0",
        f"s6ipc_generation{{{server}}} 0",
        f"s6ipc_fdholder_descriptors_held{{{holder}}} 2",
        f's6ipc_fdholder_requests_total{{{holder},operation="store"}} 2',
        f's6ipc_fdholder_requests_total{{{holder},operation="list"}} 1',
    ):
        assert expected in lines, expected
    assert lines[-1] == "# EOF"
    assert re.search(rf"^s6ipc_start_time_seconds{{{re.escape(server)}}} \d+\.?\d*$", text, re.M)
    by_name = metrics("ipcserverd")
    assert f"s6ipc_connections_accepted_total{{{server}}} 5" in by_name.splitlines()


@needs_promtool
@pytest.mark.parametrize("args", [[], ["ipcserverd", "fdholderd"]])
def test_promtool_finds_nothing_to_say(daemons: Dict[str, object], args: List[str]) -> None:
    """The Prometheus text format (-P) through ``promtool check metrics``: exit 0, no output.
    Without operands: every daemon on this host, whoever started it."""
    text = metrics("-P", *args)
    assert f'pid="{daemons["server"]}"' in text
    lint = subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert (lint.returncode, lint.stdout, lint.stderr) == (0, "", "")


def test_a_pid_without_a_live_view_is_one_line() -> None:
    got = subprocess.run([S6IPC, "metrics", "1"], capture_output=True, text=True, timeout=30)
    assert (got.returncode, got.stdout) == (1, "")
    assert got.stderr == "metrics: fatal: unable to find a live view for pid 1: No such process\n"


# -- metrics-http behind a real tcpserver ----------------------------------------------------
@pytest.fixture(scope="module")
def endpoint(daemons: Dict[str, object]) -> Iterator[Tuple[int, str]]:
    port = free_port()
    log = os.path.join(str(daemons["dir"]), "http.log")
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [
                S6IPC,
                "tcpserver",
                "127.0.0.1",
                str(port),
                S6IPC,
                "metrics-http",
                "-t",
                "700",
                str(daemons["server"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    try:
        yield port, log
    finally:
        stop(proc)


def _ask(port: int, data: bytes, pause: float = 0.0, shut: bool = True) -> Tuple[bytes, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        if pause:
            time.sleep(pause)
        if shut:
            s.shutdown(socket.SHUT_WR)
        answer = read_all(s)
    return answer, time.monotonic() - started


def _new_lines(log: str, before: int, count: int) -> List[str]:
    deadline = time.monotonic() + 5
    while True:
        with open(log) as f:
            lines = f.read().splitlines()[before:]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _log_size(log: str) -> int:
    with open(log) as f:
        return len(f.read().splitlines())


@pytest.mark.parametrize(
    "case,data,status,stderr",
    [
        ("GET 1.1", b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200, None),
        ("GET 1.0", b"GET /metrics HTTP/1.0\r\n\r\n", 200, None),
        (
            "OpenMetrics",
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
            200,
            None,
        ),
        ("HEAD", b"HEAD /metrics HTTP/1.1\r\n\r\n", 200, None),
        ("elsewhere", b"GET / HTTP/1.1\r\n\r\n", 404, None),
        ("POST", b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, None),
        (
            "garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            400,
            "metrics-http: fatal: unable to read the request: it is not ASCII: Protocol error",
        ),
        (
            "oversized",
            b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
            431,
            "metrics-http: fatal: unable to read a request head of at most 8192 bytes: Message too long",
        ),
        (
            "slow",
            b"GET /metrics HTTP/1.1\r\n",
            408,
            "metrics-http: fatal: unable to read the request: Connection timed out",
        ),
    ],
)
def test_metrics_http_hostile_pass(
    endpoint: Tuple[int, str], daemons: Dict[str, object], case: str, data: bytes, status: int, stderr: str
) -> None:
    port, log = endpoint
    before = _log_size(log)
    answer, took = _ask(port, data, shut=case != "slow")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert took < 3, f"{case}: {took:.2f} s"
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    if case == "HEAD":
        assert body == b"" and length > 1000
    else:
        assert len(body) == length
    if status == 200 and case != "HEAD":
        labels = f'program="ipcserverd",pid="{daemons["server"]}",name="shop"'
        assert f"s6ipc_connections_accepted_total{{{labels}}} 5" in body.decode()
        assert body.endswith(b"# EOF\n") == (case == "OpenMetrics")
    if case == "slow":
        assert took > 0.6, "the -t 700 deadline"
    lines = _new_lines(log, before, 1 if stderr else 0)
    assert lines == ([stderr] if stderr else []), lines


def test_metrics_http_on_a_unix_socket(daemons: Dict[str, object]) -> None:
    """The same program behind ``s6ipc ipcserver``: a local scraper or a reverse proxy's upstream."""
    path = os.path.join(str(daemons["dir"]), "metrics.sock")
    exporter = start_ready([S6IPC, "ipcserver", "-1", path, S6IPC, "metrics-http", str(daemons["holder"])],
                           dict(os.environ), os.path.join(str(daemons["dir"]), "unix-http.log"))
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(path)
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            answer = read_all(s)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        labels = f'program="fdholderd",pid="{daemons["holder"]}",name="holder"'
        assert f"s6ipc_fdholder_descriptors_held{{{labels}}} 2".encode() in answer
    finally:
        stop(exporter)
