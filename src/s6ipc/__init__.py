"""s6ipc: s6's UCSPI-IPC super-server chain in Python, with sockets from any source.

The library API is imported lazily so that the programs (which import submodules directly)
start fast.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

_API = {
    "bind_unix_socket": "sockets.unix",
    "connect_unix": "sockets.unix",
    "peer_credentials": "sockets.unix",
    "check_listening_stream": "sockets.unix",
    "bind_tcp_socket": "sockets.tcp",
    "TcpPeers": "serve.tcppeer",
    "apply_uidgid": "base.privileges",
    "Spawner": "base.execution",
    "exec_argv": "base.execution",
    "Server": "serve.loop",
    "ServerConfig": "serve.loop",
    "S6ipcError": "base.errors",
    "SystemFailure": "base.errors",
    "BadInput": "base.errors",
    "ExecFailure": "base.errors",
    "PassedFd": "sockets.listenfds",
    "listen_fds": "sockets.listenfds",
    "select_listener": "sockets.listenfds",
    "adopt_systemd_socket": "sockets.listenfds",
    "take_listener": "serve.intake",
    "listening_socket": "serve.intake",
    "spawn_with_sockets": "sockets.give",
    "append_sockets": "sockets.give",
    "set_listen_pid": "sockets.give",
    "check_fdname": "sockets.listenfds",
    "daemon_variables": "sockets.give",
    "start_unix_server": "integrations.aioserver",
    "close_unix_server": "integrations.aioserver",
    "Notifier": "daemon.readiness",
    "Readiness": "daemon.readiness",
    "notify_ready": "daemon.readiness",
    "watchdog_interval": "daemon.readiness",
    "Verdict": "access.rules",
    "Decision": "access.rules",
    "RuleSet": "access.rules",
    "check": "access.rules",
    "check_ip": "access.rules",
    "check_reversedns": "access.rules",
    "parse_ip": "sockets.inet",
    "ip_fmt": "sockets.inet",
    "rules_from_dir": "access.rules",
    "rules_from_cdb": "access.rules",
    "compile_rules": "access.rules",
    "expand_rules": "access.rules",
    "read_envdir": "base.envdir",
    "CdbReader": "access.cdb",
    "write_cdb": "access.cdb",
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
    import importlib  # only when a lazy name is asked for: not on the start path

    return getattr(importlib.import_module(f"s6ipc.{module}"), name)
