"""Running a guide of docs/ as written: its ```sh blocks, in a scratch directory, with this venv's
s6ipc first in PATH. Used by the guide tests (tests/programs/test_*_guide.py) and the tests that
run a page's examples (test_doc_examples, test_admission)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import List, Tuple

__all__ = ["DOCS", "sh_blocks", "run_guide"]

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs")


def sh_blocks(page: str, section: str) -> List[str]:
    """The ```sh blocks of *section* (a ``## `` heading) of docs/PAGE, in order."""
    with open(os.path.join(DOCS, page)) as f:
        text = f.read()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```sh\n(.*?)```", text[start:end if end >= 0 else None], re.S)


def run_guide(script: str, base: str, pids: str, timeout: float = 120) -> Tuple[int, str, str]:
    """(exit code, stdout, stderr) of *script* run by ``bash -xec`` with this venv's s6ipc first in
    PATH. Its output goes to files under *base*, not pipes (a step that fails leaves the guide's
    background processes holding them); the processes whose pids the guide wrote in the file *pids*
    are killed afterwards."""
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"])
    with open(os.path.join(base, "out"), "w+") as out, open(os.path.join(base, "err"), "w+") as err:
        try:
            code = subprocess.run(["bash", "-xec", script], env=env, stdout=out, stderr=err,
                                  timeout=timeout).returncode
        finally:
            _kill_listed(pids)
        out.seek(0)
        err.seek(0)
        return code, out.read(), err.read()


def _kill_listed(pids: str) -> None:
    if not os.path.exists(pids):
        return
    with open(pids) as f:
        for pid in f.read().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
