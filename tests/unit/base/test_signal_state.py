"""s6ipc.base.signal_state: a daemon takes control of signals it inherited blocked or ignored, and its
children still inherit the ignored ones ignored.

Each case runs in a fresh interpreter started with the signal state under test (the module keeps
process-wide state, and the test process's own signals must stay as they are).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from typing import Any


def _run(code: str, *, ignore: bool = False, block: bool = False) -> Any:
    def prepare() -> None:
        if ignore:
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        if block:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})

    prelude = ("import json, os, signal, subprocess\n"
               "from s6ipc.base import signal_state\n"
               "U = signal.SIGUSR1\n"
               "got = []\n")
    out = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=20, preexec_fn=prepare)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _sig_bit(status: str, field: str, sig: int) -> bool:
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    raise AssertionError(field)


STATE = """
    state = {"ignored_at_start": signal.getsignal(U) == signal.SIG_IGN,
             "blocked_at_start": U in signal.pthread_sigmask(signal.SIG_BLOCK, [])}
    signal_state.take_control([U])
    signal.signal(U, lambda s, f: got.append(s))
    state["inherited_ignored"] = signal_state.inherited_ignored()
    state["blocked_after"] = U in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    os.kill(os.getpid(), U)
    state["delivered"] = got == [U]
    with signal_state.ignored_for_children():
        state["child_status"] = subprocess.run(["cat", "/proc/self/status"], capture_output=True,
                                                text=True).stdout
        state["ignored_inside"] = signal.getsignal(U) == signal.SIG_IGN
    state["handler_back"] = signal.getsignal(U) not in (signal.SIG_IGN, signal.SIG_DFL)
    print(json.dumps(state))
"""


def test_an_inherited_blocked_and_ignored_signal_reaches_the_daemon_and_stays_ignored_for_children() -> None:
    state = _run(STATE, ignore=True, block=True)
    assert state["ignored_at_start"] and state["blocked_at_start"]
    assert state["inherited_ignored"] is True
    assert state["blocked_after"] is False
    assert state["delivered"] is True
    assert state["ignored_inside"] is True
    assert _sig_bit(state["child_status"], "SigIgn", signal.SIGUSR1)   # the child inherits SIG_IGN
    assert state["handler_back"] is True


def test_a_signal_not_inherited_ignored_costs_nothing_and_children_get_it_default() -> None:
    state = _run(STATE)
    assert not state["ignored_at_start"] and not state["blocked_at_start"]
    assert state["inherited_ignored"] is False
    assert state["delivered"] is True
    assert state["ignored_inside"] is False
    assert not _sig_bit(state["child_status"], "SigIgn", signal.SIGUSR1)


def test_a_blocked_but_handled_signal_is_unblocked_without_being_remembered() -> None:
    state = _run(STATE, block=True)
    assert state["blocked_at_start"] and state["inherited_ignored"] is False
    assert state["blocked_after"] is False and state["delivered"] is True


def test_a_signal_arriving_inside_the_block_is_delivered_after_it() -> None:
    state = _run("""
        signal_state.take_control([U])
        signal.signal(U, lambda s, f: got.append(s))
        with signal_state.ignored_for_children():
            os.kill(os.getpid(), U)
            os.kill(os.getpid(), U)   # not queued twice: a standard signal is pending once
            inside = list(got)
            blocked_inside = U in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        print(json.dumps([inside, got, blocked_inside,
                          U in signal.pthread_sigmask(signal.SIG_BLOCK, [])]))
    """, ignore=True)
    inside, after, blocked_inside, blocked_after = state
    assert inside == [] and blocked_inside is True
    assert after == [signal.SIGUSR1]
    assert blocked_after is False


def test_other_blocked_signals_stay_blocked() -> None:
    state = _run("""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        signal_state.take_control([U])
        print(json.dumps(sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))))
    """, block=True)
    assert state == [int(signal.SIGUSR2)]
