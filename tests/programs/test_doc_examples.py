"""Shell examples of docs/, run as written (socket paths moved to a temporary directory).

docs/ipcserver.md's echo service and the client line that talks to it, with our programs and with
s6's (``s6ipc NAME`` → ``/usr/bin/s6-NAME``): the client prints the line and both sides end.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import List

import pytest

from tests.support.guides import sh_blocks
from tests.support.processes import S6IPC, run, stop_process, theirs, wait_until


def words(line: str, impl: str, path: str) -> List[str]:
    """A documented command line, comment dropped, for *impl*, with /run/echo.sock → *path*."""
    argv = shlex.split(line.replace("/run/echo.sock", path), comments=True)
    assert argv[0] == "s6ipc", line
    return [S6IPC, *argv[1:]] if impl == "ours" else [*theirs(argv[1]), *argv[2:]]


@pytest.mark.parametrize("impl", ["ours", "s6"])
def test_echo_service_and_its_client(impl: str, sockdir: str) -> None:
    server_block, client_block = sh_blocks("ipcserver.md", "Examples")[:2]
    path = os.path.join(sockdir, "echo.sock")
    server = subprocess.Popen(words(server_block.strip(), impl, path), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: os.path.exists(path))
        client = run(words(client_block.strip(), impl, path), timeout=10)
        assert (client.returncode, client.stdout, client.stderr) == (0, b"hi\n", b"")
        assert client_block.rstrip().endswith("# prints hi")
    finally:
        stop_process(server)
