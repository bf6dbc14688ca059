"""Values from outside the process, as s6's C programs carry them into environments, argv and logs.

Some facts about the C side (skalibs 2.13, s6 2.11, s6-networking 2.5/2.7), checked in the sources:

* Every value that reaches an environment variable or an argv word goes through a ``char *``:
  ``env_addmodif``/``env_mexec`` take the value's ``strlen``, ``execve`` takes NUL-terminated
  strings, ``strerr`` writes each piece up to its NUL. A value holding a NUL therefore *ends at
  the first NUL* and the program goes on: an ident reply ``al\\0ice`` gives ``TCPREMOTEINFO=al``.
* The other bytes are passed as they are: no UTF-8 check, no escaping of control characters
  (a CR stays in ``TCPREMOTEINFO``, a newline stays in a value).
* Lengths are bounded where the value is read (ident replies, DNS names, socket paths, PROXY
  headers, envdir files each have their limit); nothing is bounded again at the exec.

CPython refuses what C silently cuts: ``os.execve``, ``os.posix_spawn``, ``os.putenv`` and an
assignment to ``os.environ`` raise ValueError ("embedded null byte") for a NUL in a name, a value
or an argv word. So every value from outside goes through this module on its way in
(:func:`peer_text`: cut, bounded, decoded with surrogateescape so that any byte survives the round
trip to ``execve``), and the exec and spawn boundaries (:mod:`s6ipc.base.execution`,
:mod:`s6ipc.base.environment`) cut what still holds a NUL (:func:`c_environment`, :func:`c_words`),
so that no path can turn a peer's byte into a traceback. ``tests/unit/base/test_cstrings.py``
finds the places that set an environment or exec without these.

The values from outside, where each goes, and its treatment (the test that runs it through the
real program, beside s6's where Debian has it):

============================ ============================== ========================================
value                        reaches                        treatment (test)
============================ ============================== ========================================
ident reply (peer's identd)  ``TCPREMOTEINFO``              cut at NUL, ≤ 511 bytes with the CR,
                                                            bytes kept (test_peer_bytes)
PTR / A names (peer's zone)  ``TCPREMOTEHOST``,             cut at NUL for env, ``reversedns/`` keys
                             ``TCPLOCALHOST``, rule keys    and ``-p``; ≤ 255 bytes (test_peer_bytes)
Unix peer path (abstract)    ``IPCREMOTEPATH``              C string of ``sun_path``: abstract → ""
                                                            (test_ipcserverd, = s6-ipcserverd)
fd-holder ids (clients)      ``S6_FDID_n``, list output     C string, ≤ 255, bytes kept
                                                            (test_fdholder_programs, = s6's getdump)
``LISTEN_FDNAMES`` names     ``LISTEN_FDNAMES``             systemd's name rule, refused otherwise
                                                            (test_peer_bytes, test_listen_fds)
sd_notify datagrams          sdnotify-bridge ``-v`` log     a NUL → ignored (as systemd); bytes kept
                                                            (test_peer_bytes)
rules ``env/`` files         the child's environment        skalibs envdir: first line, NUL → LF
                                                            (test_peer_bytes, test_access_bad_input)
rules ``exec`` files         ``execlineb -c`` argv word     cut at NUL, 4096 bytes
                                                            (test_ipcserver_access, = s6's)
PROXY header (the proxy)     ``TCP*``/``IPC*``/``SSL_*``    parsed, C strings, ≤ 107 / 16+65535
                                                            bytes (test_proxy_server, serve/test_proxy)
the environment inherited    passed on                      entries CPython cannot hold kept exactly
                                                            (base.environment, hostile sweep)
============================ ============================== ========================================
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, List, Mapping, MutableMapping, Optional, Tuple

__all__ = ["cut", "cut_bytes", "peer_text", "c_environment", "c_words", "assign"]


def cut_bytes(raw: bytes, limit: Optional[int] = None) -> bytes:
    """*raw* as a C string: the bytes before the first NUL, at most *limit* of them."""
    end = raw.find(b"\0")
    if end >= 0:
        raw = raw[:end]
    return raw if limit is None else raw[:limit]


def cut(text: str) -> str:
    """*text* as a C string: what comes before its first NUL."""
    return text if "\0" not in text else text[: text.index("\0")]


def peer_text(raw: bytes, limit: Optional[int] = None) -> str:
    """Bytes from outside (a peer, a file, a datagram) as the ``str`` an environment, argv or log
    line holds: cut at the first NUL, at most *limit* bytes, any other byte kept (surrogateescape)."""
    return os.fsdecode(cut_bytes(raw, limit))


def _placeholder(key: str) -> bool:
    return key.startswith("\0")  # s6ipc.base.environment's stand-ins for entries CPython cannot hold


def c_environment(env: Mapping[str, str]) -> Mapping[str, str]:
    """*env* as ``execve`` sees it from C: names and values cut at their first NUL (the
    environment module's placeholders kept). *env* itself when nothing needs cutting (the
    per-connection case)."""
    if "\0" not in "".join(env.values()) and "\0" not in "".join(env):  # one C-level scan each
        return env
    result = {}
    for key, value in env.items():
        if _placeholder(key):
            result[key] = value
            continue
        name = cut(key)
        if name and name not in result:
            result[name] = cut(value)
    return result


def c_words(words: Iterable[str]) -> List[str]:
    """argv words as ``execve`` passes them from C: each cut at its first NUL."""
    return [cut(w) for w in words]


def assign(environ: MutableMapping[str, str], items: Iterable[Tuple[str, str]]) -> None:
    """Set variables in *environ* (``os.environ``) from values that may come from outside, each
    cut at its first NUL as a C program's ``env_mexec`` would; a name empty after the cut is skipped."""
    for name, value in items:
        name = cut(name)
        if name:
            environ[name] = cut(value)
