"""docs/zero-downtime-upgrades.md's "Try it", run as written (``/tmp/upgrade-guide`` moved to a
temporary directory, this venv's s6ipc first in PATH): the verdict, the same process spawning
before and after, the connection opened before the upgrade still answering after it."""

from __future__ import annotations

import os
import re

from tests.support.guides import run_guide, sh_blocks
from tests.support.processes import scratch_dir


def test_an_upgrade_no_client_notices() -> None:
    steps = sh_blocks("zero-downtime-upgrades.md", "Try it: an upgrade no client notices")
    assert len(steps) == 3
    with scratch_dir("s6u") as d:
        there = os.path.join(d, "guide")
        script = "\n".join(steps).replace("/tmp/upgrade-guide", there)
        code, stdout, stderr = run_guide(script, d, os.path.join(there, "pids"), timeout=60)
        assert code == 0, stderr
        lines = stdout.splitlines()
        verdict = re.fullmatch(r"pid (\d+) \(ipcserverd\): generation 1, s6ipc \S+, exec ([\d.]+) ms, "
                               r"pause ([\d.]+) ms", lines[0])
        assert verdict, lines
        pid = verdict[1]
        assert float(verdict[3]) < float(verdict[2])
        assert lines[1:4] == [f"spawned by {pid}", f"spawned by {pid}", "still here"], lines
        assert lines[4].startswith(f"ipcserverd pid {pid}, version ") and ", generation 1, " in lines[4]
        assert "accepted: 2" in lines, lines
