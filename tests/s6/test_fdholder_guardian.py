"""Nothing lost when fdholderd's new image fails (issue 18, point 6), under a real s6-supervise.

fdholderd holds descriptors (pipes whose write ends the test keeps, and a listening socket); the
installed code is then broken in a way its preflight cannot see — a module that raises at import
only in the image that takes a hand-over, or a take-over that fails on the real state — and the
holder gets ``s6-svc -2``. The new image dies after its exec; s6-supervise starts ``run`` again (a
new pid, a new socket at the same path); the guardian forked by the old image hands the held
descriptors to it before it is ready: every id is retrieved, the same open files (inodes, and
bytes written into the pipes come out of the retrieved read ends), with the same limits.
"""

from __future__ import annotations

import os
import socket
import subprocess
from typing import Dict, List, Tuple

import pytest

from s6ipc.fdholder.client import FdHolderClient
from tests.support.fdholder import ALL_RIGHTS, make_rules
from tests.support.processes import S6IPC, wait_until
from tests.support.s6 import Scan, read_log, write_service
from tests.support.upgrade import copy_package, edit

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/s6-svscan", os.X_OK),
                                reason="Debian's s6 is not installed (apt-get install s6)")

BREAKS = {
    # a module that raises at import in the new image only ($S6IPC_HANDOFF is set for the exec alone)
    "import": ("fdholder/server.py", "from __future__ import annotations\n",
               "from __future__ import annotations\nimport os as _os\n"
               "if 'S6IPC_HANDOFF' in _os.environ:\n    raise ImportError('broken at import')\n"),
    # a take-over that fails on the real state (the preflight only parses it)
    "state": ("fdholder/server.py", "        parsed = parse_state(state)\n        for fd in",
              "        raise ValueError('bad state')\n"
              "        parsed = parse_state(state)\n        for fd in"),
}


@pytest.mark.parametrize("how", sorted(BREAKS))
def test_held_descriptors_survive_a_new_image_that_dies(scan: Scan, sockdir: str, tmp_path: str,
                                                        how: str) -> None:
    top = str(tmp_path)
    os.chmod(top, 0o755)
    package = copy_package(top)
    links = os.path.join(sockdir, "links")
    subprocess.run([S6IPC, "links", links], check=True, timeout=20)
    rules = make_rules(sockdir, {"uid/0": ALL_RIGHTS})
    path, log = os.path.join(sockdir, "h.sock"), os.path.join(sockdir, "h.log")
    write_service(os.path.join(sockdir, "source"),
                  f"PATH={links}:/usr/bin:/bin\nexec 2>>{log}\n"
                  f"exec env PYTHONPATH={top} s6-fdholder-daemon -1 -i {rules} {path}\n", notification_fd=1)
    scan.add("holder", os.path.join(sockdir, "source"), {})
    scan.start()
    scan.wait_supervised("holder")
    assert scan.svwait("-U", "holder")[0] == 0, read_log(log)
    pid = scan.pid("holder")
    writers: List[int] = []
    inodes: Dict[str, int] = {}
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(sockdir, "kept.sock"))
    listener.listen(8)
    with FdHolderClient(path, timeout=10) as client:
        for n in range(5):
            r, w = os.pipe()
            client.store(r, f"unix:/pipe/{n}")
            inodes[f"unix:/pipe/{n}"] = os.fstat(r).st_ino
            os.close(r)
            writers.append(w)
        client.store(listener.fileno(), "unix:/kept.sock")
        inodes["unix:/kept.sock"] = os.fstat(listener.fileno()).st_ino
        before = sorted(client.list())
    listener.close()  # only the holder keeps it now
    relative, old, new = BREAKS[how]
    edit(os.path.join(package, *relative.split("/")), old, new)
    scan.svc("-2", "holder")
    restarted = wait_until(lambda: (lambda p: p if p not in (pid, -1) else 0)(scan.pid("holder")), 30)
    assert scan.svwait("-U", "holder")[0] == 0
    text = read_log(log)
    assert "the new image died after the exec: holding 6 descriptors" in text, text
    assert "took 6 descriptors from the guardian" in text, text
    retrieved: List[Tuple[str, int]] = []
    with FdHolderClient(path, timeout=10) as client:
        assert sorted(client.list()) == before
        for ident, inode in sorted(inodes.items()):
            fd = client.retrieve(ident)
            retrieved.append((ident, fd))
            assert os.fstat(fd).st_ino == inode, ident
    for n, w in enumerate(writers):
        os.write(w, f"through pipe {n}\n".encode())
        fd = dict(retrieved)[f"unix:/pipe/{n}"]
        assert os.read(fd, 100) == f"through pipe {n}\n".encode()
    kept = socket.socket(fileno=dict(retrieved)["unix:/kept.sock"])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
        peer.connect(os.path.join(sockdir, "kept.sock"))  # the held listening socket still listens
        conn, _ = kept.accept()
        conn.close()
    kept.close()
    for _, fd in retrieved:
        if fd != -1:
            try:
                os.close(fd)
            except OSError:
                pass
    for w in writers:
        os.close(w)
    assert restarted != pid
    assert wait_until(lambda: _guardian_gone(path), 10), "the guardian exits once its descriptors are taken"


def _guardian_gone(path: str) -> bool:
    with open("/proc/net/unix") as f:
        return f"@s6ipc/fdholder-guardian{path}" not in f.read()
