"""A minimal HTTP client over a Unix socket, for the daemons that speak HTTP (gunicorn, uvicorn, nginx)."""

from __future__ import annotations

import socket


def http_get(path: str, timeout: float = 15.0) -> bytes:
    """``GET /`` over the Unix socket *path* (HTTP/1.0: the server closes); the whole reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"GET / HTTP/1.0\r\nHost: s6ipc\r\n\r\n")
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def ok(reply: bytes) -> bool:
    """A complete 200 reply from one of the demo apps (``hello from …``)."""
    return (reply.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")) and reply.endswith(b"\n")
            and b"hello from" in reply)
