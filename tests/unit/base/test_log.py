"""s6ipc.base.log: the three kinds of lines a library object logs, and who writes them.

The protocol's methods are what the library calls; the program layer's Reporter and the tests'
Quiet must each have all three, with the same shape, or a daemon fails at its first line.
"""

from __future__ import annotations

import inspect

from s6ipc.base.log import Log
from s6ipc.base.messages import Reporter
from tests.support.fdholder import Quiet

METHODS = ["error", "info", "warn"]


def _methods(cls: type) -> list:  # type: ignore[type-arg]
    return sorted(n for n, v in vars(cls).items() if callable(v) and not n.startswith("_"))


def test_the_protocol_is_info_warn_error() -> None:
    assert _methods(Log) == METHODS
    for name in METHODS:
        assert list(inspect.signature(getattr(Log, name)).parameters) == ["self", "text"]


def test_the_reporter_and_the_tests_log_have_the_same_methods() -> None:
    for cls in (Reporter, Quiet):
        for name in METHODS:
            assert list(inspect.signature(getattr(cls, name)).parameters) == ["self", "text"], (cls, name)


def test_a_library_object_logs_through_any_log(capfd) -> None:  # type: ignore[no-untyped-def]
    def library_code(log: Log) -> None:
        log.info("started")
        log.warn("slow")
        log.error("child died")

    quiet = Quiet()
    library_code(quiet)
    assert quiet.lines == ["info: started", "warning: slow", "fatal: child died"]
    library_code(Reporter("s6-x"))
    assert capfd.readouterr().err == "s6-x: info: started\ns6-x: warning: slow\ns6-x: fatal: child died\n"
