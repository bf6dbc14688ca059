"""The access fast paths: when a daemon's prog is our own access program, the daemon does its work.

ipcserverd whose prog is ``S6IPC ipcserver-access OPTIONS… prog…`` and a TCP daemon whose prog is
``S6IPC tcpserver-access OPTIONS… prog…`` — in any spelling of our program (``s6ipc NAME``, an
``s6-NAME`` link, a path to either: :func:`.run.own_program_call`) — decide each connection in-process
and spawn only the final program (:mod:`s6ipc.access.fastpath` says what that guarantees). Options
the program would refuse leave the daemon without a fast path: the program then runs and refuses
them itself, as it always does.

The fast path reads the client from the peer the daemon's identity gave (ids for
:class:`s6ipc.serve.peers.UnixPeers`, the address for :class:`s6ipc.serve.tcppeer.TcpPeers`), so each
factory here builds the policy for one identity: :func:`ipc_access_fast_path` for ipcserverd,
:func:`tcp_access_fast_path` for the TCP daemons. The access modules are imported only when a
daemon's prog asks for them.
"""

from __future__ import annotations

from ..base.errors import BadInput
from ..base.execution import Spawner
from ..base.messages import Reporter
from ..base.options import UsageError
from ..base.typeshim import cast
from .run import own_program_call

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Sequence

    from ..serve.loop import ConnectionPolicy, ServerConfig

__all__ = ["ipc_access_fast_path", "tcp_access_fast_path"]


def ipc_access_fast_path(config: ServerConfig) -> Optional[ConnectionPolicy]:
    """ipcserverd's in-process policy replacing our own ipcserver-access as prog, or None.

    Applies with valid options and credential lookup (``-p``: with ``-P`` there are no ids, the
    program would only fail, which it then does itself). The daemon's identity is
    :class:`s6ipc.serve.peers.UnixPeers`, whose peers carry the ``uid``/``gid`` the policy reads.
    """
    call = own_program_call(config.argv)
    if not config.lookup or call is None or call.name != "ipcserver-access":
        return None
    from ..access.fastpath import refusal_standin
    from ..access.ipc import FastAccess, parse_options

    try:
        options = parse_options(call.args)
    except UsageError:
        return None
    policy = FastAccess(options, Reporter(call.word), Spawner(config.argv), refusal_standin(config.verbosity))
    return cast("ConnectionPolicy", policy)  # its peers are UnixPeers' (an IpcClient each)


def tcp_access_fast_path(argv: Sequence[str], verbosity: int) -> Optional[ConnectionPolicy]:
    """A TCP daemon's in-process policy replacing our own tcpserver-access as prog *argv*, or None.

    *verbosity* is the daemon's: at 2 and more a refusal spawns a stand-in (``false``) so that the
    daemon's own allow/end lines stay those of a real child. The daemon's identity is
    :class:`s6ipc.serve.tcppeer.TcpPeers`, whose peers carry the address bytes the policy reads.
    """
    call = own_program_call(argv)
    if call is None or call.name != "tcpserver-access":
        return None
    from ..access.fastpath import refusal_standin
    from ..access.tcp import FastTcpAccess, parse_options

    try:
        options = parse_options(call.args)
    except (UsageError, BadInput):
        return None
    policy = FastTcpAccess(options, Reporter(call.word), Spawner(argv), refusal_standin(verbosity))
    return cast("ConnectionPolicy", policy)  # its peers are TcpPeers' (a TcpClient each)
