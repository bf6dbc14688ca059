"""s6ipc.base.selfpipe: signals read as bytes from a polled descriptor, and everything given back.

Runs in pytest's own main thread (``signal.signal`` needs it) with SIGUSR1/SIGUSR2/SIGHUP only:
pytest-timeout's SIGALRM is never touched, and each test checks what :meth:`SelfPipe.close` gives
back, so nothing leaks into the tests that follow.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
from typing import Iterator

import pytest

from s6ipc.base.errors import SystemFailure
from s6ipc.base.selfpipe import SelfPipe, give_back, polled_selfpipe


def _mine(signo: int, frame: object) -> None:
    """A handler the test owns, to see that close() puts it back."""


@pytest.fixture
def pipe() -> Iterator[SelfPipe]:
    before_usr1 = signal.signal(signal.SIGUSR1, _mine)
    before_usr2 = signal.getsignal(signal.SIGUSR2)
    before_int = signal.getsignal(signal.SIGINT)
    p = SelfPipe([signal.SIGUSR1, signal.SIGUSR2])
    try:
        yield p
    finally:
        p.close()
        assert signal.getsignal(signal.SIGUSR1) is _mine
        assert signal.getsignal(signal.SIGUSR2) == before_usr2
        assert signal.getsignal(signal.SIGINT) == before_int
        signal.signal(signal.SIGUSR1, before_usr1 if before_usr1 is not None else signal.SIG_DFL)


def _readable(p: SelfPipe, timeout: float = 5.0) -> bool:
    return bool(select.select([p.fileno()], [], [], timeout)[0])


def test_signals_arrive_as_bytes_in_order(pipe: SelfPipe) -> None:
    assert pipe.read() == b""  # non-blocking: nothing yet
    os.kill(os.getpid(), signal.SIGUSR2)
    os.kill(os.getpid(), signal.SIGUSR1)
    assert _readable(pipe)
    got = b""
    while len(got) < 2 and _readable(pipe, 1.0):
        got += pipe.read()
    assert got == bytes([signal.SIGUSR2, signal.SIGUSR1])
    assert pipe.read() == b""


def test_both_ends_are_nonblocking_and_close_on_exec(pipe: SelfPipe) -> None:
    for fd in (pipe._read_fd, pipe._write_fd):
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        assert not os.get_inheritable(fd)
    assert signal.set_wakeup_fd(pipe._write_fd) == pipe._write_fd  # it is the wakeup fd now


def test_a_signal_added_later_is_caught_too(pipe: SelfPipe) -> None:
    before = signal.getsignal(signal.SIGHUP)
    pipe.add(signal.SIGHUP)
    pipe.add(signal.SIGHUP)  # twice: the handler remembered is still the one before the first add
    os.kill(os.getpid(), signal.SIGHUP)
    assert _readable(pipe) and pipe.read() == bytes([signal.SIGHUP])
    pipe.close()
    assert signal.getsignal(signal.SIGHUP) == before


def test_a_blocked_signal_is_unblocked_when_caught() -> None:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    try:
        p = SelfPipe([signal.SIGUSR2])
        try:
            assert signal.SIGUSR2 not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
            os.kill(os.getpid(), signal.SIGUSR2)
            assert _readable(p) and p.read() == bytes([signal.SIGUSR2])
        finally:
            p.close()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def test_sigint_gets_its_default_action_while_open() -> None:
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
    try:
        p = SelfPipe([signal.SIGUSR1])
        try:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL  # s6's daemons die of SIGINT
        finally:
            p.close()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, _mine)  # a handler of the embedding program's own is left alone
        p = SelfPipe([signal.SIGUSR1])
        try:
            assert signal.getsignal(signal.SIGINT) is _mine
        finally:
            p.close()
    finally:
        signal.signal(signal.SIGINT, before if before is not None else signal.SIG_DFL)


def test_close_gives_back_the_previous_wakeup_fd_and_closes_the_pipe() -> None:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = signal.set_wakeup_fd(w)
    try:
        p = SelfPipe([signal.SIGUSR2])
        fds = (p._read_fd, p._write_fd)
        p.close()
        assert signal.set_wakeup_fd(w) == w  # the one before SelfPipe is back
        for fd in fds:
            with pytest.raises(OSError):
                os.fstat(fd)
    finally:
        signal.set_wakeup_fd(previous)
        os.close(r)
        os.close(w)


def test_polled_selfpipe_is_polled_and_give_back_undoes_it_leaving_the_listener_open() -> None:
    """What both daemons' start() and close() do: the pipe in the poller, then out of it and
    closed (the handler before comes back), the socket object detached but its descriptor open."""
    before = signal.getsignal(signal.SIGUSR2)
    poller = select.poll()
    pipe = polled_selfpipe(poller, [signal.SIGUSR2])
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, listening.fileno())
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert poller.poll(5000) == [(pipe.fileno(), select.POLLIN)]
        assert pipe.read() == bytes([signal.SIGUSR2])
        read_fd = pipe.fileno()
        give_back(poller, pipe, listener)
        assert signal.getsignal(signal.SIGUSR2) == before
        with pytest.raises(OSError):
            os.fstat(read_fd)
        assert listener.fileno() == -1  # the object lets go of the descriptor...
        os.fstat(listening.fileno())  # ...which stays open
        with pytest.raises(KeyError):
            poller.unregister(read_fd)  # no longer registered
        give_back(poller, None, None)  # not started, or already given back: nothing to do
    finally:
        listening.close()


def test_polled_selfpipe_failure_is_s6s_selfpipe_init(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pipe(flags: int) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "pipe2", no_pipe)
    with pytest.raises(SystemFailure) as failure:
        polled_selfpipe(select.poll(), [signal.SIGUSR2])
    assert str(failure.value) == "unable to selfpipe_init: Too many open files"
    assert failure.value.exit_code == 111
