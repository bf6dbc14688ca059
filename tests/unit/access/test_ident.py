"""s6ipc.access.ident: RFC 1413 replies as s6-networking's s6net_ident_reply_parse reads them."""

from __future__ import annotations

import errno

import pytest

from s6ipc.access import ident


@pytest.mark.parametrize("line,result", [
    ("5 , 6 : USERID : UNIX : alice\r", "alice\r"),
    ("  5,6:USERID:UNIX,utf8:  two spaces", " two spaces"),
    ("5 , 6 : USERID : OS :", ""),
    ("5 , 6 : ERROR : NO-USER", errno.ESRCH),
    ("5 , 6 : ERROR : INVALID-PORT", errno.EINVAL),
    ("5 , 6 : ERROR : UNKNOWN-ERROR", errno.EIO),
    ("5 , 6 : ERROR : Xfoo", errno.EEXIST),
    ("5 , 6 : ERROR : other", "EPROTO"),
    ("5 , 7 : USERID : UNIX : alice", "EPROTO"),
    ("5 , 6 : USERID : UNIX", "EPROTO"),
    ("", "EPROTO"),
    ("5 , 6 : USERID : UNIX : " + "x" * 512, "ENAMETOOLONG"),
    ("5 , 6 : USERID : UNIX : " + "x" * 511, "x" * 511),
])
def test_ident_replies(line: str, result: object) -> None:
    if isinstance(result, str) and not result.startswith("E"):
        assert ident.parse_reply(line, 5, 6) == result
    elif isinstance(result, int):
        with pytest.raises(ident.IdentRefused) as refused:
            ident.parse_reply(line, 5, 6)
        assert refused.value.code == result
    else:
        with pytest.raises(OSError) as failed:
            ident.parse_reply(line, 5, 6)
        assert failed.value.errno == getattr(errno, str(result))
