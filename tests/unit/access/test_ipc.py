"""s6ipc.access.ipc: ipcserver-access's decision as a library — its command line, the client scanned
out of the environment (exit 100 before any rule is read), and the outcome for each kind of rule.

The in-daemon fast path over real peers is tests/unit/access/test_fastpath.py; this is the
out-of-process path (:func:`evaluate`), what the program runs.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Callable, Dict

import pytest

from s6ipc.access.ipc import (
    AccessOptions,
    client_from_env,
    connection_local_path,
    evaluate,
    parse_options,
)
from s6ipc.access.rules import EXECLINEB
from s6ipc.base.errors import BadInput, SystemFailure
from s6ipc.base.options import UsageError
from tests.support.access import make_rules

UID, GID = os.geteuid(), os.getegid()
ENV = {"PATH": "/usr/bin:/bin", "PROTO": "IPC", "IPCREMOTEEUID": str(UID), "IPCREMOTEEGID": str(GID),
       "IPCREMOTEPATH": "/tmp/cli", "IPCCONNNUM": "1"}


class Source:
    """A rules source that counts the reads (to show what is decided before the rules)."""

    def __init__(self, rules: object = None) -> None:
        self.rules = rules
        self.reads = 0

    def get(self) -> object:
        self.reads += 1
        return self.rules


def _here() -> str:
    return "/run/srv"


def _no_local() -> str:
    raise SystemFailure("ipc_local", errno.ENOTSOCK)


# -- parse_options ---------------------------------------------------------------------------------
def test_defaults() -> None:
    assert parse_options(["prog", "arg"]) == AccessOptions(("prog", "arg"), 1, True, None, None, "")


def test_every_option() -> None:
    got = parse_options(["-v2", "-E", "-l", "name", "-x", "/r.cdb", "--", "prog", "-x"])
    assert got == AccessOptions(("prog", "-x"), 2, False, "name", "cdb", "/r.cdb")
    assert parse_options(["-E", "-e", "-i", "/dir", "p"]).doenv is True      # the last of -e/-E wins
    assert parse_options(["-x", "/c", "-i", "/d", "p"]) == AccessOptions(("p",), 1, True, None, "fs", "/d")


@pytest.mark.parametrize("args", [[], [""], ["-v"], ["-v", "x", "p"], ["-z", "p"], ["-v2"]])
def test_what_is_a_usage_error(args: list) -> None:  # type: ignore[type-arg]
    with pytest.raises(UsageError):
        parse_options(args)


# -- client_from_env: the exit-100 checks -----------------------------------------------------------
def test_the_client_is_scanned_from_proto_and_its_ids() -> None:
    assert client_from_env(ENV) == ("IPC", UID, GID)
    assert client_from_env({"PROTO": "X", "XREMOTEEUID": "4294967295", "XREMOTEEGID": "0"}) == (
        "X", 4294967295, 0)
    assert client_from_env({"PROTO": "", "REMOTEEUID": "1", "REMOTEEGID": "2"}) == ("", 1, 2)


@pytest.mark.parametrize("change, message", [
    ({"PROTO": None}, "PROTO not set"),
    ({"IPCREMOTEEUID": None}, "IPCREMOTEEUID not set"),
    ({"IPCREMOTEEGID": None}, "IPCREMOTEEGID not set"),
    ({"IPCREMOTEEUID": "x"}, "invalid $IPCREMOTEEUID"),
    ({"IPCREMOTEEUID": "-1"}, "invalid $IPCREMOTEEUID"),
    ({"IPCREMOTEEUID": "1 "}, "invalid $IPCREMOTEEUID"),
    ({"IPCREMOTEEUID": ""}, "invalid $IPCREMOTEEUID"),
    ({"IPCREMOTEEUID": "4294967296"}, "invalid $IPCREMOTEEUID"),
    ({"IPCREMOTEEGID": "0x10"}, "invalid $IPCREMOTEEGID"),
    ({"PROTO": "TCP"}, "TCPREMOTEEUID not set"),
])
def test_evaluate_exits_100_before_reading_any_rule(change: Dict[str, object], message: str) -> None:
    env = {k: v for k, v in {**ENV, **change}.items() if v is not None}
    source = Source()
    with pytest.raises(BadInput) as e:
        evaluate(parse_options(["-x", "/nonexistent.cdb", "prog"]), env, _here, source)  # type: ignore[arg-type]
    assert (str(e.value), e.value.exit_code) == (message, 100)
    assert source.reads == 0


# -- evaluate's outcomes ----------------------------------------------------------------------------
def _evaluate(args: list, rules: object = None, env: Dict[str, str] = ENV,  # type: ignore[type-arg]
              local: Callable[[], str] = _here):  # type: ignore[no-untyped-def]
    from s6ipc.access.fastpath import RulesSource

    options = parse_options(args)
    return evaluate(options, env, local, RulesSource(options))


def test_without_rules_everyone_is_allowed_with_a_warning_at_v2() -> None:
    out = _evaluate(["-v2", "prog", "a"])
    assert out.allowed and out.error is None
    assert [(line.kind, line.render(7)) for line in out.lines] == [
        ("warning", "invoked without a ruleset!"), ("info", f"allow pid 7 uid {UID} gid {GID}")]
    assert out.argv == ["prog", "a"]
    assert out.env == {**ENV, "IPCLOCALPATH": "/run/srv"}
    assert out.search_path_env == ENV
    assert _evaluate(["-v0", "prog"]).lines == []


def test_allowed_by_a_rule_with_its_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = make_rules(str(tmp_path / "r"), {f"uid/{UID}": {"allow": True, "env": {"R": b"yes\n"}}})
    out = _evaluate(["-i", rules, "-l", "given", "prog"])
    assert out.allowed and out.argv == ["prog"]
    assert out.env["R"] == "yes" and out.env["IPCLOCALPATH"] == "given"
    assert [line.render(1) for line in out.lines] == [f"allow pid 1 uid {UID} gid {GID}"]


def test_denied_by_a_rule_exits_1_with_the_reason_at_v2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = make_rules(str(tmp_path / "r"), {f"uid/{UID}": {"deny": True}})
    out = _evaluate(["-v2", "-i", rules, "prog"])
    assert not out.allowed and out.exit_code == 1 and out.argv == []
    assert [line.render(5) for line in out.lines] == [f"deny pid 5 uid {UID} gid {GID}: Permission denied"]
    assert _evaluate(["-i", rules, "prog"]).lines == []   # silent at the default verbosity


def test_no_matching_rule_is_a_refusal(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = make_rules(str(tmp_path / "r"), {f"uid/{UID + 1}": {"allow": True}})
    out = _evaluate(["-v2", "-i", rules, "prog"])
    assert not out.allowed
    assert out.lines[0].render(5).startswith(f"deny pid 5 uid {UID} gid {GID}: ")


def test_minus_E_removes_the_connection_variables_and_ignores_l() -> None:
    out = _evaluate(["-E", "-l", "ignored", "prog"], local=_no_local)
    assert out.allowed and out.error is None
    assert out.env == {"PATH": "/usr/bin:/bin"}


def test_an_exec_rule_runs_execline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = make_rules(str(tmp_path / "r"), {f"uid/{UID}": {"allow": True, "exec": b"echo hi\0ignored"}})
    out = _evaluate(["-i", rules, "prog"])
    assert out.argv == [EXECLINEB, "-Pc", "echo hi"]


def test_a_local_path_failure_comes_after_the_allow_line() -> None:
    out = _evaluate(["prog"], local=_no_local)
    assert out.allowed and [line.render(1) for line in out.lines] == [f"allow pid 1 uid {UID} gid {GID}"]
    assert out.error is not None and str(out.error) == "unable to ipc_local: Socket operation on non-socket"


def test_connection_local_path(sockdir: str) -> None:
    path = os.path.join(sockdir, "srv")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    conn, _ = listener.accept()
    try:
        assert connection_local_path(conn)() == path
        assert connection_local_path(client)() == ""
        conn.close()
        with pytest.raises(SystemFailure) as e:
            connection_local_path(conn)()
        assert str(e.value) == "unable to ipc_local: Bad file descriptor"
    finally:
        client.close()
        listener.close()


def test_a_missing_cdb_is_a_system_failure_after_the_checks() -> None:
    with pytest.raises(SystemFailure) as e:
        _evaluate(["-x", "/nonexistent/rules.cdb", "prog"])
    assert e.value.exit_code == 111 and "/nonexistent/rules.cdb" in str(e.value)


def test_the_module_exports_the_decision_and_the_client_scan() -> None:
    """``__all__`` at run time names the module's own API (a second assignment further down would
    replace the one after the imports)."""
    from s6ipc.access import ipc

    assert {"AccessOptions", "parse_options", "IpcClient", "client_from_env", "decide", "evaluate",
            "connection_local_path", "FastAccess"} <= set(ipc.__all__)
