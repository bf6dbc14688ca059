"""docs/zero-downtime-upgrades.md's "Try it", run as written (``/tmp/upgrade-guide`` moved to a
temporary directory, this venv's s6ipc first in PATH): the verdict, the same process spawning
before and after, the connection opened before the upgrade still answering after it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import List

from tests.support.processes import scratch_dir

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs",
                   "zero-downtime-upgrades.md")


def blocks(section: str) -> List[str]:
    with open(DOC) as f:
        text = f.read()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```sh\n(.*?)```", text[start:end], re.S)


def _kill_listed(pids: str) -> None:
    if os.path.exists(pids):
        with open(pids) as f:
            for pid in f.read().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_an_upgrade_no_client_notices() -> None:
    steps = blocks("Try it: an upgrade no client notices")
    assert len(steps) == 3
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"])
    with scratch_dir("s6u") as d:
        there = os.path.join(d, "guide")
        script = "\n".join(steps).replace("/tmp/upgrade-guide", there)
        # output to files, not pipes: the guide's background processes would hold a pipe open
        with open(os.path.join(d, "out"), "w+") as out, open(os.path.join(d, "err"), "w+") as err:
            try:
                code = subprocess.run(["bash", "-ec", script], env=env, stdout=out, stderr=err,
                                      timeout=60).returncode
            finally:
                _kill_listed(os.path.join(there, "pids"))
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
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
