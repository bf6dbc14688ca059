"""s6ipc.chain.entry: the spellings of "one of our programs" — files compared, never names.

The test venv has the ``s6ipc`` console script next to its interpreter; links to it are made in a
temporary directory, as ``s6ipc links`` makes them.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Iterator

import pytest

from s6ipc.base import execution
from s6ipc.base.execution import entry_script, installed_prefix
from s6ipc.chain import entry
from s6ipc.chain.entry import own_program

SCRIPT = entry_script()
needs_script = pytest.mark.skipif(SCRIPT is None, reason="no s6ipc console script for this interpreter")


@pytest.fixture
def links(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A directory with ``s6-ipcserverd``, ``ipcserverd`` and ``s6ipc`` links to the script, and a
    copy of it (another file), first in PATH."""
    assert SCRIPT is not None
    d = str(tmp_path)
    for name in ("s6-ipcserverd", "ipcserverd", "s6ipc", "s6-nothing"):
        os.symlink(SCRIPT, os.path.join(d, name))
    shutil.copy(SCRIPT, os.path.join(d, "s6-copy"))
    monkeypatch.setenv("PATH", d + ":/usr/bin:/bin")
    yield d


def test_the_installed_prefix_and_a_name() -> None:
    prefix = installed_prefix()
    assert own_program([*prefix, "ipcserverd", "-v2", "prog"]) == ("ipcserverd", ["-v2", "prog"])
    assert own_program([*prefix, "s6-ipcserver-access", "prog"]) == ("s6-ipcserver-access", ["prog"])
    assert own_program([*prefix, "ipcserverd"]) == ("ipcserverd", [])


def test_not_ours() -> None:
    prefix = installed_prefix()
    assert own_program([*prefix, "links", "/tmp"]) is None         # a command of the entry point
    assert own_program([*prefix]) is None
    assert own_program([]) is None
    assert own_program(["/bin/true", "ipcserverd"]) is None
    assert own_program(["/usr/bin/s6-ipcserverd", "prog"]) is None  # s6's C program
    assert own_program(["no-such-program-anywhere", "ipcserverd"]) is None


@needs_script
def test_links_named_after_a_program(links: str) -> None:
    assert own_program([os.path.join(links, "s6-ipcserverd"), "-1", "p"]) == ("s6-ipcserverd", ["-1", "p"])
    assert own_program(["s6-ipcserverd", "p"]) == ("s6-ipcserverd", ["p"])      # found through PATH
    assert own_program(["ipcserverd", "p"]) == ("ipcserverd", ["p"])
    assert own_program(["s6ipc", "s6-applyuidgid", "-u", "1"]) == ("s6-applyuidgid", ["-u", "1"])


@needs_script
def test_a_link_named_after_no_program_takes_the_next_word(links: str) -> None:
    assert own_program(["s6-nothing", "ipcserverd", "p"]) == ("ipcserverd", ["p"])
    assert own_program(["s6-nothing", "p"]) is None


@needs_script
def test_a_copy_of_the_script_is_another_file(links: str) -> None:
    assert own_program([os.path.join(links, "s6-copy"), "ipcserverd"]) is None


@needs_script
def test_a_relative_word_is_searched_as_exec_would(links: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")       # the links are not in PATH any more
    assert own_program(["s6-ipcserverd", "p"]) is None
    assert own_program([os.path.join(links, "s6-ipcserverd"), "p"]) == ("s6-ipcserverd", ["p"])


def test_without_a_console_script_python_m_s6ipc_is_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execution, "entry_script", lambda: None)
    monkeypatch.setattr(entry, "entry_script", lambda: None)
    assert own_program([sys.executable, "-m", "s6ipc", "ipcserverd", "p"]) == ("ipcserverd", ["p"])
    assert own_program(["/usr/bin/env", "-m", "s6ipc", "ipcserverd"]) is None


@needs_script
def test_with_a_console_script_python_m_s6ipc_is_not_recognised() -> None:
    """What the code does in a venv (and the fast-path comparison relies on to force the program):
    only the script's spellings count then."""
    assert own_program([sys.executable, "-m", "s6ipc", "ipcserverd", "p"]) is None
