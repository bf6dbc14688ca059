"""Exec a command with ``$S6IPC_HANDOFF`` naming a descriptor that its own previous image did not
make for it: ``python forge_handoff.py KIND COMMAND…`` (tests of the hand-over's authentication).

KIND: ``file`` (a regular file), ``pipe``, ``unsealed`` (a memfd of the right name, not sealed),
``otherpid`` (a sealed memfd named for pid 1), ``signed:PATH`` (a sealed memfd of the right name
signed by this process — what an image of it would make — holding the JSON in PATH, whose
``"author"`` is filled in: the state lists what the test wants, e.g. pids that are not children),
``raw:PATH`` (the same memfd holding PATH's bytes as they are: what a broken image would write).
The descriptor goes on fd 7.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys

SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL


def memfd(name: str, data: bytes, seal: bool) -> int:
    fd = os.memfd_create(name, os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    return fd


def start_ticks() -> int:
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def forged(kind: str) -> int:
    own = f"s6ipc-handoff:{os.getpid()}"
    signed = {"author": {"pid": os.getpid(), "start": start_ticks()}}
    if kind == "file":
        return os.open("/etc/hostname", os.O_RDONLY)
    if kind == "pipe":
        r, w = os.pipe()
        os.write(w, json.dumps(signed).encode())
        return r
    if kind == "unsealed":
        return memfd(own, json.dumps(signed).encode(), seal=False)
    if kind == "otherpid":
        return memfd("s6ipc-handoff:1", json.dumps(signed).encode(), seal=True)
    if kind.startswith("raw:"):
        with open(kind[len("raw:"):], "rb") as f:
            return memfd(own, f.read(), seal=True)
    if kind.startswith("signed:"):
        with open(kind[len("signed:"):]) as f:
            state = json.load(f)
        state.update(signed)
        return memfd(own, json.dumps(state).encode(), seal=True)
    raise SystemExit(f"forge_handoff: unknown kind {kind}")


def main() -> None:
    fd = forged(sys.argv[1])
    os.dup2(fd, 7)  # inheritable
    if fd != 7:
        os.close(fd)
    os.environ["S6IPC_HANDOFF"] = "7"
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
