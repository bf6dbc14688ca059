"""Who may connect: the rules (``rules``, ``cdb``), the lookups they need (``dns``, ``ident``), and
the access programs as a library (``ipc`` for ipcserver-access, ``tcp`` for tcpserver-access, and
``fastpath`` for what they share: the outcome record, the rules source, and the daemons' in-process
policy, which decides from the daemon's peer instead of the environment).

Until 0.2, ``s6ipc.access.NAME`` still answers the names of :mod:`s6ipc.access.ipc` (the module
``s6ipc.access`` was before the library was grouped), without importing anything until asked.
"""

from ..base.lazy import forward_to

__getattr__ = forward_to(f"{__name__}.ipc")
