"""Durations of 2**31 ms and more (up to the 32-bit limit of an option, 2**64 µs for
WATCHDOG_USEC): waited as skalibs' tain arithmetic says, never an overflow. s6 2.11.3.2's own
programs misbehave from 2**31 ms on (docs/fdholder-*.md say how); ours do the job."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from typing import Iterator

import pytest

from tests.support import hostile
from tests.support.fdholder import ALL_RIGHTS, Holder, Impls, make_links, make_rules
from tests.support.processes import S6IPC, VENV_PYTHON, run, stop_process

LONG = ["2147483647", "2147483648", "4294967295"]


@pytest.fixture(scope="module")
def links(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_links(str(tmp_path_factory.mktemp("links")))


@pytest.fixture
def holder(links: str, sockdir: str) -> Iterator[Holder]:
    h = Holder(Impls("ours", links)("fdholder-daemon"), os.path.join(sockdir, "h"),
               ["-t", "4294967295", "-T", "4294967295", "-i", make_rules(sockdir, {"uid/0": ALL_RIGHTS})])
    yield h
    h.stop()


def ok(result: subprocess.CompletedProcess[bytes]) -> bytes:
    assert (result.returncode, result.stderr) == (0, b""), result.stderr[-500:]
    return result.stdout


@pytest.mark.parametrize("t", LONG)
def test_every_fdholder_client_takes_long_timeouts(links: str, holder: Holder, t: str) -> None:
    p = Impls("ours", links)
    r, w = os.pipe()
    try:
        ok(run(p("fdholder-store") + ["-t", t, "-T", t, holder.path, "a"], stdin=r))
        ok(run(p("fdholder-store") + ["-d", str(w), "-T", t, holder.path, "b"], pass_fds=[w]))
        assert ok(run(p("fdholder-list") + ["-t", t, holder.path])).split() == [b"a", b"b"]
        out = ok(run(p("fdholder-getdump") + ["-t", t, holder.path, "env"]))
        assert b"S6_FD#=2" in out
        ok(run(p("fdholder-transferdump") + ["-t", f"{t}:{t}", holder.path, holder.path]))
        ok(run(p("fdholder-retrieve") + ["-t", t, holder.path, "a", "true"]))
        ok(run(p("fdholder-delete") + ["-t", t, holder.path, "a"]))
        ok(run(p("fdholder-delete") + ["-t", t, holder.path, "b"]))
        env = {"S6_FD#": "0", "PATH": "/usr/bin:/bin"}
        ok(run(p("fdholder-setdump") + ["-t", t, holder.path], env=env))
        assert holder.alive()
    finally:
        os.close(r)
        os.close(w)


def test_store_with_a_49_day_limit_keeps_the_daemon_serving(links: str, holder: Holder) -> None:
    """s6-fdholderd dies ("unable to iopause: Invalid argument") once a descriptor is stored with
    -T 3000000000; ours keeps it, with that limit, and serves."""
    p = Impls("ours", links)
    ok(run(p("fdholder-store") + ["-T", "3000000000", holder.path, "long"], stdin=subprocess.DEVNULL))
    time.sleep(0.2)
    assert ok(run(p("fdholder-list") + [holder.path])) == b"long\n"
    assert holder.terminate(5) == 1  # s6's bit mask: descriptors were still held


@pytest.mark.parametrize("usec", ["5000000000000", "18446744073709551614"])
def test_ipcserverd_watchdog_of_50_days_or_more(sockdir: str, usec: str) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"\0s6t-wd-{os.getpid()}-{usec[:3]}"
    notify.bind(name)
    notify.settimeout(5)
    path = os.path.join(sockdir, "s")
    env = {"PATH": "/usr/bin:/bin", "NOTIFY_SOCKET": "@" + name[1:], "WATCHDOG_USEC": usec}
    proc = subprocess.Popen([S6IPC, "ipcserver", path, "echo", "hi"], env=env, stderr=subprocess.PIPE)
    try:
        assert b"READY=1" in notify.recv(4096)
        time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            assert s.recv(10) == b"hi\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        stop_process(proc)
        notify.close()


def test_ipcserverd_watchdog_beyond_64_bits_is_one_warning(sockdir: str) -> None:
    """More than systemd's 64 bits (sd_watchdog_enabled says -ERANGE): no watchdog, one warning
    line (cut), and the server serves."""
    path = os.path.join(sockdir, "s")
    env = {"PATH": "/usr/bin:/bin", "WATCHDOG_USEC": "9" * 5000}
    err = hostile.serves_hi_then_stops([S6IPC, "ipcserver", "-1", path, "echo", "hi"], env, path)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(b"ipcserverd: warning: invalid WATCHDOG_USEC: '9999")
    assert len(lines[0]) < 200


READY = ("import os, socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
         "s.sendto(b'READY=1', '\\0' + os.environ['NOTIFY_SOCKET'][1:]); import time; time.sleep(0.5)")


@pytest.mark.parametrize("t", LONG)
def test_sdnotify_bridge_long_timeout_still_bridges(t: str) -> None:
    r, w = os.pipe()
    proc = subprocess.Popen([S6IPC, "sdnotify-bridge", "-d", str(w), "-t", t, VENV_PYTHON, "-c", READY],
                            pass_fds=[w], stderr=subprocess.PIPE)
    os.close(w)
    try:
        assert select.select([r], [], [], 10)[0]
        assert os.read(r, 10) == b"\n"
        assert proc.wait(10) == 0
        assert proc.stderr.read() == b""  # type: ignore[union-attr]
    finally:
        os.close(r)
        stop_process(proc)
