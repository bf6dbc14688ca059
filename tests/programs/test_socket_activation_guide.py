"""The "By hand" commands of docs/socket-activation.md, run as written (paths moved to a temporary
directory, s6ipc and gunicorn from this venv first in PATH): the user sees what the guide says."""

from __future__ import annotations

import os
import re
import shutil
import sys

import pytest

from tests.support.processes import run

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs",
                   "socket-activation.md")


def by_hand_blocks() -> list:  # type: ignore[type-arg]
    with open(DOC) as f:
        text = f.read()
    section = text[text.index("## By hand"):text.index("## Under s6")]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_the_guide_by_hand(sockdir: str) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install curl)")
    first, second = by_hand_blocks()[:2]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + ":" + os.environ["PATH"])
    there = os.path.join(sockdir, "sa")
    out = run(["bash", "-ec", first.replace("/tmp/sa", there)], env=env, timeout=60)
    assert out.stdout == b"hello from gunicorn\n", out.stderr.decode()
    assert f"Listening at: unix:{there}/app.sock".encode() in out.stderr
    out = run(["sh", "-ec", second.replace("/tmp/sa", there)], env=env)
    line = out.stdout.decode().splitlines()[0]
    fields = dict(word.split("=") for word in line.split())
    assert fields["LISTEN_FDS"] == "2" and fields["LISTEN_FDNAMES"] == "public:admin", line
    assert fields["LISTEN_PID"] == fields["pid"], line
    assert out.stdout.decode().count("socket:[") == 2, out.stdout
