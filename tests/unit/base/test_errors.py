"""s6ipc.base.errors: each kind of error carries s6's exit code and message tail."""

from __future__ import annotations

import errno

import pytest

from s6ipc.base.errors import BadInput, ExecFailure, Refused, S6ipcError, SystemFailure, Unusable


def test_a_system_failure_reads_as_s6s_sys_message_and_exits_111() -> None:
    e = SystemFailure("bind to /run/x", errno.EACCES)
    assert str(e) == "unable to bind to /run/x: Permission denied"
    assert e.operation == "bind to /run/x"
    assert e.errno == errno.EACCES
    assert e.reason == "Permission denied"
    assert e.exit_code == 111
    assert isinstance(e, S6ipcError)


def test_bad_input_is_its_message_and_exits_100() -> None:
    e = BadInput("invalid $IPCREMOTEEUID")
    assert str(e) == "invalid $IPCREMOTEEUID"
    assert e.message == "invalid $IPCREMOTEEUID"
    assert e.exit_code == 100


def test_an_unusable_given_thing_exits_111_though_it_is_bad_input() -> None:
    e = Unusable("stdin is not a listening socket")
    assert isinstance(e, BadInput)
    assert str(e) == "stdin is not a listening socket"
    assert e.exit_code == 111


def test_a_refusal_by_a_peer_exits_1() -> None:
    e = Refused("store fd", errno.EBUSY)
    assert isinstance(e, SystemFailure)
    assert str(e) == "unable to store fd: Device or resource busy"
    assert e.exit_code == 1


@pytest.mark.parametrize("code, exit_code, reason", [
    (errno.ENOENT, 127, "No such file or directory"),
    (errno.EACCES, 126, "Permission denied"),
    (errno.ENOEXEC, 126, "Exec format error"),
    (errno.E2BIG, 126, "Argument list too long"),
])
def test_an_exec_failure_exits_127_for_enoent_else_126(code: int, exit_code: int, reason: str) -> None:
    e = ExecFailure("prog", code)
    assert e.exit_code == exit_code
    assert str(e) == f"unable to exec prog: {reason}"
    assert (e.name, e.errno) == ("prog", code)


def test_the_base_class_exits_111() -> None:
    assert S6ipcError("x").exit_code == 111
    assert {cls.__name__: cls.exit_code for cls in (S6ipcError, SystemFailure, BadInput, Unusable, Refused)} \
        == {"S6ipcError": 111, "SystemFailure": 111, "BadInput": 100, "Unusable": 111, "Refused": 1}


def test_errors_survive_pickling_as_exceptions_do() -> None:
    import pickle

    e = pickle.loads(pickle.dumps(SystemFailure("setuid", errno.EPERM)))
    assert str(e) == "unable to setuid: Operation not permitted" and e.exit_code == 111
    x = pickle.loads(pickle.dumps(ExecFailure("nope", errno.ENOENT)))
    assert str(x) == "unable to exec nope: No such file or directory" and x.exit_code == 127
