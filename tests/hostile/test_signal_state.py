"""Daemons started with a blocked signal mask and ignored signals (a mask and every SIG_IGN
survive ``execve``): side by side with s6-ipcserverd and s6-fdholderd, which block their signals
themselves and read them from a signalfd. The daemon must reap, stop on TERM, reload on HUP, and
its children must start in the state s6's children start in."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Callable, Iterator, List

import pytest

from s6ipc.access.cdb import write_cdb
from tests.support.fdholder import Holder, Impls, make_links
from tests.support.hostile import sigmask, status_masks
from tests.support.netpeers import read_to_eof
from tests.support.processes import S6IPC, run, stop_process, theirs, wait_for_ready

BINDER = "/usr/bin/s6-ipcserver-socketbinder"
BLOCKED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2)
IGNORED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR1, signal.SIGALRM)


def daemon(impl: str) -> List[str]:
    return theirs("ipcserverd") if impl == "s6" else [S6IPC, "ipcserverd"]


def hostile_state(blocked=BLOCKED, ignored=IGNORED) -> Callable[[], None]:  # type: ignore[no-untyped-def]
    def setup() -> None:
        for sig in ignored:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return setup


@pytest.fixture
def start(sockdir: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: List[subprocess.Popen[bytes]] = []

    def go(impl: str, args: List[str], prog: List[str], **state) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
        r, w = os.pipe()
        proc = subprocess.Popen([BINDER, os.path.join(sockdir, impl), *daemon(impl), "-1", *args, *prog],
                                stdout=w, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                preexec_fn=hostile_state(**state))
        os.close(w)
        try:
            wait_for_ready(r)
        finally:
            os.close(r)
        started.append(proc)
        return proc

    yield go
    for proc in started:
        proc.kill()
        proc.wait()


def connect(path: str, timeout: float = 5) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        return read_to_eof(s, timeout)


@pytest.mark.parametrize("ignored_chld", [False, True], ids=["chld-blocked", "chld-ignored-too"])
def test_children_start_in_the_state_s6s_children_start_in(start, sockdir: str, ignored_chld: bool) -> None:  # type: ignore[no-untyped-def]
    """Empty mask; SIGPIPE default; what was ignored at the daemon's start (TERM, HUP, CHLD
    included) still ignored — although the daemon itself catches TERM, HUP and CHLD."""
    ignored = IGNORED + ((signal.SIGCHLD,) if ignored_chld else ())
    seen = {}
    for impl in ("s6", "ours"):
        start(impl, [], ["grep", "^Sig", "/proc/self/status"], ignored=ignored)
        seen[impl] = status_masks(connect(os.path.join(sockdir, impl)).decode())
    assert seen["ours"] == seen["s6"]
    assert seen["ours"]["SigBlk"] == 0
    assert seen["ours"]["SigIgn"] == sigmask(*ignored)


@pytest.mark.parametrize("impl", ["s6", "ours"])
def test_blocked_mask_still_reaps_and_stops_on_term(start, sockdir: str, impl: str) -> None:  # type: ignore[no-untyped-def]
    proc = start(impl, ["-c", "1"], ["echo", "hi"])
    for _ in range(4):  # -c 1: each connection needs the previous child reaped
        assert connect(os.path.join(sockdir, impl)) == b"hi\n"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT])
@pytest.mark.parametrize("impl", ["s6", "ours"])
def test_blocked_hup_and_quit_still_act(start, sockdir: str, impl: str, sig: int) -> None:  # type: ignore[no-untyped-def]
    """With HUP and QUIT blocked at start (nothing ignored, so the handler dies of TERM): HUP
    makes the daemon kill its handlers (TERM, CONT) and serve on; QUIT makes it kill them and exit."""
    proc = start(impl, [], ["sleep", "30"], ignored=())
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(os.path.join(sockdir, impl))
        s.settimeout(5)
        time.sleep(0.3)
        proc.send_signal(sig)
        assert s.recv(10) == b""  # the handler was killed: the connection ends now, not in 30 s
    if sig == signal.SIGQUIT:
        assert proc.wait(5) == 0
        return
    time.sleep(0.2)
    assert proc.poll() is None  # HUP: serving on
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0


@pytest.fixture(scope="module")
def links(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("links")
    return make_links(str(d))


def rule_value(names: List[str]) -> bytes:
    block = b"".join(f"{n}=".encode() + b"\0" for n in names)
    return b"A" + len(block).to_bytes(2, "big") + block + b"\0\0"


@pytest.mark.parametrize("impl", ["s6", "ours"])
def test_fdholderd_with_blocked_mask_reloads_on_hup_and_stops_on_term(links: str, sockdir: str,
                                                                      impl: str) -> None:
    cdb = os.path.join(sockdir, "rules.cdb")
    write_cdb(cdb, [(b"uid/0", rule_value(["S6_FDHOLDER_STORE_REGEX"]))])
    impls = Impls(impl, links)
    h = Holder(impls("fdholder-daemon"), os.path.join(sockdir, "h"), ["-x", cdb],
               preexec=hostile_state())
    try:
        lister = impls("fdholder-list") + [h.path]
        assert run(lister).returncode == 1
        write_cdb(cdb, [(b"uid/0", rule_value(["S6_FDHOLDER_LIST"]))])
        h.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while run(lister).returncode != 0:
            assert time.monotonic() < deadline, "SIGHUP did not reload the rules"
            time.sleep(0.05)
        assert h.terminate(5) == 0
    finally:
        stop_process(h.proc)
