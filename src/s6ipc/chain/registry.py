"""The programs of the multi-call entry point: their names, and the module that runs each.

``PROGRAMS`` maps each program name (the s6 name without ``s6-``) to its module in
:mod:`s6ipc.programs`. Every such module defines ``USAGE`` (the usage line after the program name)
and ``main(reporter, args)``, which never returns; a module that runs several names (they differ
in the usage line) gives ``USAGES``, one line per name, instead of ``USAGE``. The table lives here,
in the program kit, so that the entry point, the chain and the preflight look programs up without
importing the program layer.
"""

from __future__ import annotations

import sys
from types import ModuleType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["PROGRAMS", "program_name", "program_module", "program_usage"]

PROGRAMS = {
    "ipcserver": "ipcserver",
    "ipcserver-socketbinder": "ipcserver_socketbinder",
    "applyuidgid": "applyuidgid",
    "ipcserverd": "ipcserverd",
    "ipcclient": "ipcclient",
    "ipcserver-access": "ipcserver_access",
    "tcpserver-access": "tcpserver_access",
    "tcpclient": "tcpclient",
    "accessrules-cdb-from-fs": "accessrules_cdb_from_fs",
    "accessrules-fs-from-cdb": "accessrules_fs_from_cdb",
    "systemd-socket": "systemd_socket",
    "sdnotify-bridge": "sdnotify_bridge",
    "listen-fds": "listen_fds",
    "listen-pid": "listen_pid",
    "systemd-accept": "systemd_accept",
    "fdholder-daemon": "fdholder_daemon",
    "fdholderd": "fdholderd",
    "fdholder-store": "fdholder_store",
    "fdholder-retrieve": "fdholder_retrieve",
    "fdholder-delete": "fdholder_delete",
    "fdholder-list": "fdholder_list",
    "fdholder-getdump": "fdholder_getdump",
    "fdholder-setdump": "fdholder_setdump",
    "fdholder-transferdump": "fdholder_transferdump",
    "tcpserver": "tcpserver",
    "tcpserver4": "tcpserver",
    "tcpserver6": "tcpserver",
    "tcpserver-socketbinder": "tcp_socketbinder",
    "tcpserver4-socketbinder": "tcp_socketbinder",
    "tcpserver6-socketbinder": "tcp_socketbinder",
    "tcpserverd": "tcpserverd",
    "tcpserver4d": "tcpserverd",
    "tcpserver6d": "tcpserverd",
    "status": "status",
    "metrics": "metrics",
    "metrics-http": "metrics_http",
    "upgrade": "upgrade",
    "proxy-server": "proxy_server",
}


def program_name(word: str) -> Optional[str]:
    """The program a dispatch word names (``ipcserverd`` or ``s6-ipcserverd``), or None."""
    if word in PROGRAMS:
        return word
    if word.startswith("s6-") and word[3:] in PROGRAMS:
        return word[3:]
    return None


def program_module(name: str) -> ModuleType:
    """Import and return the module of program *name* (a key of :data:`PROGRAMS`).

    ``__import__`` + ``sys.modules`` is :func:`importlib.import_module` for an absolute name,
    without importing :mod:`importlib` (and :mod:`warnings`) at every start."""
    module_name = f"s6ipc.programs.{PROGRAMS[name]}"
    __import__(module_name)
    return sys.modules[module_name]


def program_usage(name: str, module: Optional[ModuleType] = None) -> str:
    """The usage line of program *name* after its name (from *module*, imported when not given)."""
    module = module or program_module(name)
    usages = getattr(module, "USAGES", None)
    usage: str = usages[name] if usages is not None else module.USAGE
    return usage
