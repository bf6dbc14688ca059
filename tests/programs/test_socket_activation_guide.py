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


def test_the_guide_shows_the_shipped_files() -> None:
    """The run script and unit settings the guide shows are those of units/ (comments aside)."""
    units = os.path.join(os.path.dirname(os.path.dirname(DOC)), "units")
    with open(DOC) as f:
        text = f.read()
    run_blocks = [b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if b.startswith("#!/bin/sh -e\n")]
    with open(os.path.join(units, "s6", "s6ipc-gunicorn", "run")) as f:
        script = [line for line in f.read().splitlines() if not line.startswith("# ")]
    assert [b.splitlines() for b in run_blocks] == [script]
    shipped = set()
    for name in os.listdir(os.path.join(units, "systemd")):
        with open(os.path.join(units, "systemd", name)) as f:
            shipped |= {line.strip() for line in f}
    blocks = re.findall(r"```ini\n(.*?)```", text, re.S)
    shown = {line.strip() for block in blocks for line in block.splitlines()}
    shown = {line for line in shown if line and not line.startswith("[")}
    assert len(shown) >= 3 and shown <= shipped, shown - shipped
