"""A daemon's view of socket activation through python-systemd (libsystemd), printed as JSON.

``listen_fds_with_names()`` (the PID check, names), each fd's family/listening state, fd 0, the
daemon-specific variables, and whether ``LISTEN_PIDFDID`` is this process's pidfd inode.
"""

import json
import os
import socket

from systemd import daemon

env = {k: v for k, v in os.environ.items() if k.startswith(("LISTEN_", "NGINX", "EINHORN_"))}
fds = daemon.listen_fds_with_names(unset_environment=False)
kinds = {}
for fd in fds:
    s = socket.socket(fileno=os.dup(fd))
    listening = bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    kinds[fd] = [s.family.name, listening, str(s.getsockname())]
    s.close()
try:
    pidfd = os.pidfd_open(os.getpid())
    inode = os.fstat(pidfd).st_ino
except OSError:
    inode = None
print(json.dumps({"pid": os.getpid(), "env": env, "fds": {str(k): v for k, v in fds.items()},
                  "kinds": {str(k): v for k, v in kinds.items()}, "fd0": os.readlink("/proc/self/fd/0"),
                  "pidfdid": inode}))
