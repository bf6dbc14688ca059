"""docs/metrics.md's guide, run as written (``/tmp/metrics-guide`` moved to a temporary directory,
ports 9101 and 9090 to free ones, this venv's s6ipc first in PATH): a real Prometheus scrapes the
exporter and answers the query the guide shows with the clients' count."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import List, Tuple

import pytest

from tests.support.guides import run_guide, sh_blocks
from tests.support.processes import scratch_dir
from tests.support.restart_load import free_port


def blocks(section: str) -> List[str]:
    return sh_blocks("metrics.md", section)


def _run(script: str, there: str, timeout: float = 120) -> Tuple[int, str, str]:
    """The guide's *script* with ``/tmp/metrics-guide`` moved to *there*."""
    return run_guide(script.replace("/tmp/metrics-guide", there), os.path.dirname(there),
                     os.path.join(there, "pids"), timeout)


@pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("curl") is None,
    reason="prometheus (Debian's prometheus) or curl is not installed",
)
def test_from_nothing_to_a_prometheus_graph() -> None:
    steps = blocks("From nothing to a Prometheus graph")
    assert len(steps) == 6
    exporter, server = free_port(), free_port()
    # the ports and the service's name made this run's own (another run's "hello" on the host
    # would be listed too: s6ipc metrics shows every daemon the caller may see)
    name = f"hello{os.getpid()}"
    script = "\n".join(steps).replace("9101", str(exporter)).replace("9090", str(server))
    script = script.replace("S6IPC_NAME=hello ", f"S6IPC_NAME={name} ")
    script = script.replace('name="hello"', f'name="{name}"')
    with scratch_dir("s6g") as d:
        there = os.path.join(d, "guide")
        code, stdout, stderr = _run(script, there)
        assert code == 0, stderr
        lines = stdout.splitlines()
        accepted = [line for line in lines if line.startswith("s6ipc_connections_accepted_total{")]
        assert len(accepted) == 2 and all(
            re.fullmatch(
                r's6ipc_connections_accepted_total\{program="ipcserverd",'
                r'pid="\d+",name="' + name + r'"\} 3',
                a,
            )
            for a in accepted
        ), lines
        assert re.fullmatch(r'"value":\[\d+(\.\d+)?,"23"\]', lines[-1]), lines
        assert lines[:3] == ["hello"] * 3
        assert not os.path.exists(there), "the guide cleans up"


def test_the_textfile_collector_lines() -> None:
    (block,) = blocks("node_exporter's textfile collector")
    assert block.rstrip().endswith("rm -rf /tmp/metrics-guide")
    with scratch_dir("s6t") as d:
        there = os.path.join(d, "guide")
        code, _, stderr = _run(block.rstrip().rpartition("\n")[0], there, timeout=60)
        assert code == 0, stderr
        files = os.listdir(os.path.join(there, "textfile"))
        assert files == ["s6ipc-metrics.prom"]
        promtool = shutil.which("promtool")
        if promtool is not None:
            with open(os.path.join(there, "textfile", "s6ipc-metrics.prom")) as f:
                lint = subprocess.run([promtool, "check", "metrics"], stdin=f, capture_output=True, text=True)
            assert (lint.returncode, lint.stdout, lint.stderr) == (0, "", "")
