"""skalibs' and libs6's own address and rule-key functions, called through ctypes.

Debian's s6 package pulls in libskarnet and libs6: 2.13.1.1 and 2.11.3.2 on Debian 12
(``libskarnet.so.2.13``, ``libs6.so.2.11``), 2.14.3.0 and 2.13.1.0 on Debian 13 (``.so.2.14``,
``.so.2.13``). Their ``ip4_scan``, ``ip6_scan``, ``ip6_fmt``, ``*_scanlist`` and
``s6_accessrules_keycheck_ip4/6`` (the same interfaces in both) are the real peers of
:mod:`s6ipc.inet` and of the ip rule keys in :mod:`s6ipc.accessrules`. The libraries are found by
what the dynamic linker knows (``ldconfig -p``: the newest soname installed), never by a version
written here. A test that needs them skips when they are missing, saying so.
"""

from __future__ import annotations

import ctypes
import functools
import re
import subprocess
from typing import Callable, List, Optional, Tuple

import pytest


@functools.cache
def installed_soname(stem: str) -> Optional[str]:
    """The newest ``STEM.so.X.Y`` the dynamic linker's cache lists for this machine, or None."""
    try:
        listing = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    found = re.findall(rf"^\s*({re.escape(stem)}\.so\.(\d+)\.(\d+))\s", listing, re.M)
    if not found:
        return None
    return max(found, key=lambda f: (int(f[1]), int(f[2])))[0]


def _load(stem: str) -> ctypes.CDLL:
    name = installed_soname(stem)
    if name is None:
        pytest.skip(f"no {stem}.so.* is installed (`ldconfig -p` lists none): it comes with Debian's s6 "
                    "(apt-get install s6)")
    return ctypes.CDLL(name)


def skarnet() -> ctypes.CDLL:
    lib = _load("libskarnet")
    for fn in ("ip4_scan", "ip6_scan"):
        getattr(lib, fn).argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        getattr(lib, fn).restype = ctypes.c_size_t
    for fn in ("ip4_fmt", "ip6_fmt"):
        getattr(lib, fn).argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        getattr(lib, fn).restype = ctypes.c_size_t
    for fn in ("ip4_scanlist", "ip6_scanlist", "ip46full_scanlist"):
        getattr(lib, fn).argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                     ctypes.POINTER(ctypes.c_size_t)]
        getattr(lib, fn).restype = ctypes.c_size_t
    return lib


def c_scan(lib: ctypes.CDLL, fn: str, text: bytes) -> Optional[Tuple[bytes, int]]:
    """skalibs ``ip4_scan``/``ip6_scan``: (address bytes, used) or None."""
    size = 4 if fn == "ip4_scan" else 16
    out = ctypes.create_string_buffer(size)
    used = getattr(lib, fn)(text, out)
    return (out.raw, used) if used else None


def c_fmt(lib: ctypes.CDLL, ip: bytes) -> str:
    out = ctypes.create_string_buffer(64)
    n = (lib.ip4_fmt if len(ip) == 4 else lib.ip6_fmt)(out, ip)
    return out.raw[:n].decode()


def c_scanlist(lib: ctypes.CDLL, fn: str, text: bytes, limit: int = 16) -> List[bytes]:
    """skalibs ``ip4_scanlist``/``ip6_scanlist``/``ip46full_scanlist``: the addresses found."""
    # ip46full_t is { char ip[16]; is6 } padded to 20 bytes (an unsigned int bit field)
    size = {"ip4_scanlist": 4, "ip6_scanlist": 16, "ip46full_scanlist": 20}[fn]
    out = ctypes.create_string_buffer(size * limit)
    num = ctypes.c_size_t(0)
    getattr(lib, fn)(out, limit, text, ctypes.byref(num))
    found = []
    for i in range(num.value):
        chunk = out.raw[i * size : (i + 1) * size]
        if fn == "ip46full_scanlist":
            chunk = chunk[:16] if chunk[16] & 1 else chunk[:4]
        found.append(chunk)
    return found


class _Stralloc(ctypes.Structure):
    _fields_ = [("s", ctypes.c_char_p), ("len", ctypes.c_size_t), ("a", ctypes.c_size_t)]


class _Params(ctypes.Structure):
    _fields_ = [("env", _Stralloc), ("exec", _Stralloc)]


# s6_accessrules_result_t (*)(char const *key, size_t keylen, void *data, s6_accessrules_params_t *)
_BACKEND = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                            ctypes.POINTER(_Params))


def s6_keys(family: int, ip: bytes) -> List[str]:
    """Every key libs6's ``s6_accessrules_keycheck_ip4``/``_ip6`` looks up for *ip*, in
    order, when none is found (the backend is a recorder that always answers NOTFOUND)."""
    lib = _load("libs6")
    _load("libskarnet")
    fn = lib.s6_accessrules_keycheck_ip4 if family == 4 else lib.s6_accessrules_keycheck_ip6
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(_Params), _BACKEND]
    fn.restype = ctypes.c_int
    keys: List[str] = []

    def record(key: int, keylen: int, data: int, params: object) -> int:
        keys.append(ctypes.string_at(key, keylen).decode())
        return 2  # S6_ACCESSRULES_NOTFOUND (ERROR -1, DENY 0, ALLOW 1)

    callback: Callable[..., int] = _BACKEND(record)
    params = _Params()
    fn(ip, None, ctypes.byref(params), callback)
    return keys
