"""s6ipc.chain.registry: which name runs which program module, and its usage line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from s6ipc.chain.registry import PROGRAMS, program_module, program_name, program_usage


@pytest.mark.parametrize("word, name", [
    ("ipcserverd", "ipcserverd"),
    ("s6-ipcserverd", "ipcserverd"),
    ("s6-tcpserver4-socketbinder", "tcpserver4-socketbinder"),
    ("status", "status"),
    ("s6-status", "status"),
    ("s6-", None),
    ("s6-s6-ipcserverd", None),
    ("ipcserverd ", None),
    ("IPCSERVERD", None),
    ("s6ipc", None),
    ("links", None),        # the entry point's own commands are not programs
    ("", None),
])
def test_program_name(word: str, name: object) -> None:
    assert program_name(word) == name


def test_every_program_imports_and_has_main_and_a_usage() -> None:
    for name, module_name in PROGRAMS.items():
        module = program_module(name)
        assert module.__name__ == f"s6ipc.programs.{module_name}"
        assert callable(module.main), name
        usage = program_usage(name, module)
        assert isinstance(usage, str), name
        assert program_usage(name) == usage


def test_a_module_of_several_names_has_one_usage_per_name() -> None:
    assert program_usage("tcpserver4-socketbinder").endswith(" ip4 port prog...")
    assert program_usage("tcpserver6-socketbinder").endswith(" ip6 port prog...")
    assert program_usage("tcpserver-socketbinder").endswith(" ip port prog...")
    assert program_usage("tcpserver").startswith("[ -q | -Q | -v ] [ -4 | -6 ]")
    assert program_usage("tcpserver4") == program_usage("tcpserver6")
    assert "[ -4 | -6 ]" not in program_usage("tcpserver4")
    shared = {m for m in PROGRAMS.values() if list(PROGRAMS.values()).count(m) > 1}
    assert shared == {"tcpserver", "tcp_socketbinder", "tcpserverd"}
    for name, module_name in PROGRAMS.items():
        if module_name in shared and hasattr(program_module(name), "USAGES"):
            assert name in program_module(name).USAGES


def test_known_usage_lines() -> None:
    assert program_usage("ipcserverd") == (
        "[ -v verbosity ] [ -1 ] [ -P | -p ] [ -c maxconn ] [ -C localmaxconn ] prog...")
    assert program_usage("listen-pid") == "prog..."


def test_an_unknown_program_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        program_module("nope")


def test_looking_a_program_up_imports_only_its_module() -> None:
    code = ("import sys\nfrom s6ipc.chain.registry import program_module\nprogram_module('listen-pid')\n"
            "print(sorted(m for m in sys.modules if m.startswith('s6ipc.programs.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['s6ipc.programs.listen_pid']"
