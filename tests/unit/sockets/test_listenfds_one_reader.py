"""s6ipc.sockets.listenfds: the one reader of LISTEN_*, the one pidfs check, the one fd-name rule.

The receiving side (:func:`take_systemd_fds`, what a daemon adopts) and the giving side
(:func:`s6ipc.sockets.give.pending_list`, the list ``listen-fds``/``listen-pid`` extend) read the
variables through one function; here both read the same table of malformed values in a child that
got real fds 3-5 as from systemd (tests/support/passfds.py), and must come to the same verdict.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from typing import Any, Dict, List, Optional

import pytest

from s6ipc.base.errors import BadInput
from s6ipc.daemon.readiness import Notifier
from s6ipc.sockets import give, listenfds
from tests.support.processes import SUPPORT, VENV_PYTHON

PASSFDS = os.path.join(SUPPORT, "passfds.py")

try:
    import systemd.daemon  # noqa: F401

    BACKENDS = ["stdlib", "python-systemd"]
except ImportError:  # pragma: no cover
    BACKENDS = ["stdlib"]

BOTH_SIDES = r"""
import json, os, sys
from s6ipc.sockets import give, listenfds
from s6ipc.base.errors import S6ipcError
pid = os.getpid()
cases, backends = json.loads(sys.argv[1]), json.loads(sys.argv[2])

def verdict(function):
    try:
        return [list(p) for p in function()]
    except S6ipcError as e:
        return "%s: %s" % (type(e).__name__, e)

out = []
for case in cases:
    env = {}
    for k, v in zip(("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"), case):
        if v is not None:
            env[k] = v.replace("PID", str(pid)).replace("OTHER", str(pid + 1))
    giving = verdict(lambda: give.pending_list(env))
    taking = {}
    for backend in backends:
        for fd in range(3, 6):
            os.set_inheritable(fd, True)
        for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(k, None)
        os.environ.update(env)
        taking[backend] = verdict(lambda: listenfds.take_systemd_fds(True, backend)[0])
    out.append([case, giving, taking])
print(json.dumps(out))
"""

PIDS = ["PID", " PID", "+PID", "PIDx", "0PID", "OTHER", "", "0", "-1", "99999999999", "0x", None]
COUNTS = ["1", "3", "4", "0", "-1", "", "x", " 2", "0x2", "02", "08", "0b11", "2 ", "2147483644",
          "2147483645", None]
NAMES = [None, "a", "a:b:c", "", ":", "a::"]


def both_sides(cases: List[List[Optional[str]]]) -> List[Any]:
    argv = [VENV_PYTHON, PASSFDS, f"listen:@s6t-sides-{os.getpid()}", "tcp", "pipe", "--",
            VENV_PYTHON, "-c", textwrap.dedent(BOTH_SIDES), json.dumps(cases), json.dumps(BACKENDS)]
    result = subprocess.run(argv, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    out: List[Any] = json.loads(result.stdout)
    return out


def test_the_giving_and_the_taking_side_read_every_case_alike() -> None:
    cases = [[p, c, n] for p in PIDS for c in COUNTS for n in NAMES]
    kinds: Dict[str, int] = {}
    for case, giving, taking in both_sides(cases):
        pid, count, _ = case
        verdicts = set(json.dumps(v) for v in taking.values())
        assert len(verdicts) == 1, (case, taking)  # the backends agree (explain() words both)
        received = taking["stdlib"]
        if count is None:  # no list: nothing to give; a receiver still refuses a bad LISTEN_PID
            assert giving == []
            kind = "no list"
        elif pid is None:
            assert received == [] and giving == f"BadInput: LISTEN_FDS={count} is set without LISTEN_PID"
            kind = "no pid"
        elif received == [] and not isinstance(giving, str):
            pytest.fail(f"{case}: the receiver has nothing, the giver a list {giving}")
        elif received == [] and "for another process" in giving:
            kind = "another process"
        elif isinstance(giving, str) and giving.startswith("BadInput: too many fds"):
            # the giver's one extra rule: a list beyond RLIMIT_NOFILE; the receiver fails on a closed fd
            assert received.startswith("SystemFailure: unable to use fd "), (case, received)
            kind = "too many"
        else:
            assert giving == received, case
            kind = received.split(":")[0] if isinstance(received, str) else "fds"
        kinds[kind] = kinds.get(kind, 0) + 1
    # the table reaches every verdict
    assert set(kinds) == {"no list", "no pid", "another process", "too many", "BadInput", "SystemFailure",
                          "fds"}, kinds


def test_the_one_reader_follows_libsystemds_order() -> None:
    visited: List[range] = []
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "garbage"}
    assert listenfds.read_listen_variables(env, visit=visited.append) is None  # not ours: not read
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "one"}
    with pytest.raises(OSError) as info:
        listenfds.read_listen_variables(env, visit=visited.append)
    assert visited == [range(3, 5)]  # the fds are visited before the names are counted
    assert str(listenfds.explain(info.value, env)) == "LISTEN_FDNAMES gives 1 names for LISTEN_FDS=2 fds"
    env["LISTEN_FDNAMES"] = "one:two"
    assert listenfds.read_listen_variables(env) == [(3, "one"), (4, "two")]
    del env["LISTEN_FDNAMES"]
    assert listenfds.read_listen_variables(env) == [(3, "unknown"), (4, "unknown")]


# -- the pidfs identity: one check for both sides ------------------------------------------------
def _have_pidfs() -> bool:
    return listenfds.pidfd_id(os.getpid()) is not None


def test_the_pidfdid_the_giver_writes_is_the_one_the_taker_accepts() -> None:
    env: Dict[str, str] = {}
    give.set_listen_pid(env)
    assert env["LISTEN_PID"] == str(os.getpid())
    assert listenfds._pidfdid_matches(env.get("LISTEN_PIDFDID"))
    if not _have_pidfs():
        assert "LISTEN_PIDFDID" not in env
        assert listenfds._pidfdid_matches("12345")  # no identities here: the value says nothing
        return
    assert env["LISTEN_PIDFDID"] == str(listenfds.pidfd_id(os.getpid()))
    assert not listenfds._pidfdid_matches(str(int(env["LISTEN_PIDFDID"]) + 1))
    assert not listenfds._pidfdid_matches("garbage")
    give.set_listen_pid(env, os.getpid() + 1)  # another process: no stale identity survives
    assert "LISTEN_PIDFDID" not in env


# -- the fd-name rule: one rule for LISTEN_FDNAMES and the fd store -------------------------------
GOOD = ["web", "a", "x" * 255, "unix:web".replace(":", "-"), "stored", "~!#$%&()*+,-./;<=>?@[]^_`{|}"]
BAD = {
    "": "invalid fd name: it is empty",
    "a:b": "invalid fd name 'a:b': it contains ':' (the LISTEN_FDNAMES separator)",
    "x" * 256: "invalid fd name: longer than 255 bytes (256 characters)",
    "sp ace": "invalid fd name 'sp ace': ' ' is not printable ASCII without space",
    "tab\t": "invalid fd name 'tab\\t': '\\t' is not printable ASCII without space",
    "\u00e9": "invalid fd name 'é': 'é' is not printable ASCII without space",
    "del\x7f": "invalid fd name 'del\\x7f': '\\x7f' is not printable ASCII without space",
}


@pytest.mark.parametrize("name", GOOD)
def test_good_names_pass_everywhere(name: str) -> None:
    assert listenfds.fdname_problem(name) is None
    give.check_fdname(name)  # the public s6ipc.check_fdname
    assert Notifier(None).store_fds(name, []) is False  # no manager: nothing sent, nothing refused


@pytest.mark.parametrize("name, message", sorted(BAD.items()))
def test_bad_names_are_refused_everywhere_with_one_message(name: str, message: str) -> None:
    assert listenfds.fdname_problem(name) == message
    for check in (give.check_fdname, lambda n: Notifier("@x").store_fds(n, []),
                  lambda n: Notifier("@x").remove_stored(n)):
        with pytest.raises(BadInput) as info:
            check(name)
        assert str(info.value) == message
    with pytest.raises(BadInput, match="^invalid fd name"):
        give.spawn_with_sockets(["true"], [0], names=[name])
