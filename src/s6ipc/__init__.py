"""s6ipc: s6's UCSPI-IPC super-server chain in Python, with sockets from any source.

The library API is imported lazily so that the programs (which import submodules directly)
start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "bind_unix_socket": "sockets",
    "connect_unix": "sockets",
    "peer_credentials": "sockets",
    "check_listening_stream": "sockets",
    "bind_tcp_socket": "tcp",
    "TcpPeers": "tcppeer",
    "apply_uidgid": "privileges",
    "Spawner": "execution",
    "exec_argv": "execution",
    "Server": "server",
    "ServerConfig": "server",
    "S6ipcError": "errors",
    "SystemFailure": "errors",
    "BadInput": "errors",
    "ExecFailure": "errors",
    "PassedFd": "activation",
    "listen_fds": "activation",
    "select_listener": "activation",
    "adopt_systemd_socket": "activation",
    "take_listener": "intake",
    "listening_socket": "intake",
    "spawn_with_sockets": "handoff",
    "append_sockets": "handoff",
    "set_listen_pid": "handoff",
    "check_fdname": "handoff",
    "daemon_variables": "handoff",
    "start_unix_server": "aioserver",
    "close_unix_server": "aioserver",
    "Notifier": "readiness",
    "Readiness": "readiness",
    "notify_ready": "readiness",
    "watchdog_interval": "readiness",
    "Verdict": "accessrules",
    "Decision": "accessrules",
    "RuleSet": "accessrules",
    "check": "accessrules",
    "check_ip": "accessrules",
    "check_reversedns": "accessrules",
    "parse_ip": "inet",
    "ip_fmt": "inet",
    "rules_from_dir": "accessrules",
    "rules_from_cdb": "accessrules",
    "compile_rules": "accessrules",
    "expand_rules": "accessrules",
    "read_envdir": "envdir",
    "CdbReader": "cdb",
    "write_cdb": "cdb",
    "FdHolderClient": "fdholder.client",
    "HeldDescriptor": "fdholder.client",
    "OperationFailed": "fdholder.client",
    "FdHolderDaemon": "fdholder.server",
    "Tain": "fdholder.tai",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 's6ipc' has no attribute {name!r}")
    return getattr(importlib.import_module(f"s6ipc.{module}"), name)
