"""Rules fixture for the access-control benchmark case.

    python bench/access_rules/make_rules.py DIR [CDBFILE]

Creates DIR (a rules directory: our uid allowed with one env variable, everyone else denied by
uid/default) and, with CDBFILE, compiles it to a cdb with our accessrules-cdb-from-fs (byte-identical
to s6's). Prints the paths. The same DIR / CDBFILE serve both chains:

    s6ipc ipcserver -1 -c 1000 SOCK s6ipc ipcserver-access -v0 -i DIR HANDLER
    s6-ipcserver   -1 -c 1000 SOCK s6-ipcserver-access    -v0 -i DIR HANDLER
"""

from __future__ import annotations

import os
import subprocess
import sys


def make_rules(directory: str) -> str:
    allow = os.path.join(directory, "uid", str(os.geteuid()))
    os.makedirs(os.path.join(allow, "env"), exist_ok=True)
    open(os.path.join(allow, "allow"), "w").close()
    with open(os.path.join(allow, "env", "GREETING"), "w") as f:
        f.write("hello\n")
    os.makedirs(os.path.join(directory, "uid", "default"), exist_ok=True)
    open(os.path.join(directory, "uid", "default", "deny"), "w").close()
    return directory


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    print(make_rules(sys.argv[1]))
    if len(sys.argv) == 3:
        s6ipc = os.path.join(os.path.dirname(sys.executable), "s6ipc")
        subprocess.run([s6ipc, "accessrules-cdb-from-fs", sys.argv[2], sys.argv[1]], check=True)
        print(sys.argv[2])
