"""s6ipc.base.lazy: a package answers a module's names on first use, and only then imports it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from s6ipc.base import durations
from s6ipc.base.lazy import forward_to


def test_a_public_name_comes_from_the_module() -> None:
    getattr_ = forward_to("s6ipc.base.durations")
    assert getattr_("poll_ms") is durations.poll_ms
    assert getattr_("POLL_MAX_MS") == durations.POLL_MAX_MS


def test_dunders_are_refused_for_the_import_system() -> None:
    getattr_ = forward_to("s6ipc.base.durations")
    with pytest.raises(AttributeError, match="__path__"):
        getattr_("__path__")
    with pytest.raises(AttributeError):
        getattr_("__all__")


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        forward_to("s6ipc.base.durations")("no_such_name")


def test_a_package_imports_the_module_only_when_a_name_is_asked() -> None:
    code = (
        "import sys, s6ipc.sockets as p\n"
        "print('s6ipc.sockets.unix' in sys.modules)\n"
        "f = p.bind_unix_socket\n"
        "print('s6ipc.sockets.unix' in sys.modules, f.__module__)\n"
        "try:\n    p.__wrapped__\nexcept AttributeError:\n    print('dunder refused')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["False", "True s6ipc.sockets.unix", "dunder refused"]
