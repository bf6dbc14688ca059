"""fdholder-getdump: get every descriptor an fd-holder daemon holds, then exec a program with
them open and described in ``S6_FD#``, ``S6_FD_i``, ``S6_FDID_i`` and ``S6_FDLIMIT_i``."""

from __future__ import annotations

import errno
import os

from ..base import environment
from ..base.envdir import merge_env
from ..base.errors import SystemFailure
from ..base.messages import Reporter
from ..chain.options import holder_client
from ..chain.run import exec_into
from ..fdholder import tai
from ..fdholder.dump import dump_modifs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, NoReturn

USAGE = "[ -t timeout ] socket prog..."


def main(reporter: Reporter, args: List[str]) -> NoReturn:
    holder, rest = holder_client(args, 2)
    dump = holder.getdump()
    holder.close()
    for held in dump:
        try:
            os.set_inheritable(held.fd, True)
        except OSError as e:
            raise SystemFailure("uncoe", e.errno or errno.EBADF) from None
    environment.replace(os.environ, merge_env(os.environ, dump_modifs(dump, tai.now())))
    exec_into(reporter, rest[1:])
