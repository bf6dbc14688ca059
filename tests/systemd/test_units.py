"""Every shipped systemd unit passes ``systemd-analyze verify`` without a single warning.

The units name ``/usr/local/bin/s6ipc`` (what ``make install`` links to its venv, docs/install.md) and sockets
under ``/run/s6ipc-demo``; verify checks that ExecStart= binaries exist, so the files are checked
with those two strings rewritten to this checkout's entry point and a temporary directory — and
nothing else changed. A broken copy must fail, so the check is known to bite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import List

import pytest

from tests.support.processes import S6IPC

UNITS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "units",
                     "systemd")
ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(ANALYZE is None,
                                reason="systemd-analyze not installed (apt-get install systemd)")


def rendered(directory: str) -> List[str]:
    names = sorted(os.listdir(UNITS))
    for name in names:
        with open(os.path.join(UNITS, name)) as f:
            text = f.read().replace("/usr/local/bin/s6ipc", S6IPC).replace("/run/s6ipc-demo", directory)
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)
    return names


def verify(path: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, "verify", path], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, SYSTEMD_LOG_COLOR="0"))


def test_every_unit_verifies_cleanly(tmp_path: object) -> None:
    directory = str(tmp_path)
    names = rendered(directory)
    shipped = {"s6ipc-demo.socket", "s6ipc-demo.service", "s6ipc-fdstore.service", "s6-ipcserverd@.service",
               "s6ipc-accept.socket", "s6ipc-accept@.service", "s6ipc-gunicorn.socket",
               "s6ipc-gunicorn.service"}
    assert shipped <= set(names)
    # a template is verified through an instance: the C daemon on the demo socket, one connection
    targets = [n for n in names if "@." not in n]
    targets += ["s6-ipcserverd@s6ipc-demo.service", "s6ipc-accept@0.service"]
    for name in targets:
        result = verify(os.path.join(directory, name))
        assert (result.returncode, result.stderr, result.stdout) == (0, "", ""), name


def test_a_broken_unit_fails_verification(tmp_path: object) -> None:
    directory = str(tmp_path)
    rendered(directory)
    path = os.path.join(directory, "s6ipc-demo.service")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace(S6IPC, "/nonexistent/s6ipc").replace("KillMode=", "KilMode="))
    result = verify(path)
    assert result.returncode != 0
    assert "Unknown key 'KilMode'" in result.stderr
    assert "/nonexistent/s6ipc is not executable" in result.stderr


def _blocks(doc: str, language: str) -> List[str]:
    import re

    with open(os.path.join(os.path.dirname(UNITS), "..", "docs", doc)) as f:
        return re.findall(rf"```{language}\n(.*?)```", f.read(), re.S)


def test_the_guide_shows_the_shipped_units() -> None:
    """Every setting docs/systemd.md shows in an ini block is in a shipped unit (as is, or commented)."""
    shipped = set()
    for name in os.listdir(UNITS):
        with open(os.path.join(UNITS, name)) as f:
            shipped |= {line.lstrip("#").strip() for line in f}
    shown = {line.strip() for block in _blocks("systemd.md", "ini") for line in block.splitlines()}
    shown = {line for line in shown if line and not line.startswith("[")}
    assert len(shown) >= 10
    assert shown <= shipped, shown - shipped


def test_the_s6_guide_shows_the_shipped_run_scripts() -> None:
    s6_units = os.path.join(os.path.dirname(UNITS), "s6")
    shown = [b for b in _blocks("s6.md", "sh") if b.startswith("#!/bin/sh -e\n")]
    assert len(shown) == 2
    for block, service in zip(shown, ("s6ipc-demo", "s6ipc-held")):
        with open(os.path.join(s6_units, service, "run")) as f:
            script = [line for line in f.read().splitlines() if not line.startswith("# ")]
        assert block.splitlines() == script, service
