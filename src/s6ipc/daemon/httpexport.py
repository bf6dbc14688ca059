"""One HTTP/1.x request on a UCSPI connection: the scrape endpoint ``s6ipc metrics-http``.

Some facts about HTTP (RFC 9112, 9110) and a UCSPI handler that this module relies on:

* **A UCSPI handler** reads the connection on fd 0 and writes it on fd 1 (``tcpserver``,
  ``ipcserver``, systemd's ``Accept=yes``, ``systemd-socket``): one process per connection, so
  one request, answered with ``Connection: close``, is the whole protocol.
* **A request head** is a request line ``METHOD SP TARGET SP HTTP/1.x`` then header lines, ended by
  an empty line (CRLF; a bare LF is tolerated). Bytes from the client are untrusted: the head is
  bounded (:data:`HEAD_MAX`) and so is the time to receive it (a slow client is cut at the
  deadline), and anything malformed is answered ``400``.
* **Methods**: ``GET`` and ``HEAD`` (the same answer without its body) of ``/metrics`` are served,
  another path is ``404``, another method ``405`` with ``Allow: GET, HEAD``. HTTP/1.0 and 1.1 are
  answered alike (``HTTP/1.1``, which a 1.0 client accepts).
* **Content negotiation**: Prometheus asks for ``application/openmetrics-text`` first; any other
  ``Accept`` gets the Prometheus text format 0.0.4.

What that means for us: :func:`read_head` and :func:`parse` (pure, tested with hostile bytes),
:func:`response` (the bytes to write), :func:`write_all` (bounded by the same deadline).
"""

from __future__ import annotations

import errno
import os
import select
import time

from ..base.errors import Refused

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["HEAD_MAX", "Request", "BadRequest", "read_head", "parse", "response", "write_all", "answer",
           "scrape_budget"]

#: The largest request head read (request line and headers).
HEAD_MAX = 8192
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class BadRequest(Refused):
    """A request this endpoint cannot read: *status* is the HTTP answer (400, 408, 431; 0: the
    client left without a word, there is nobody to answer)."""

    def __init__(self, status: int, operation: str, code: int) -> None:
        super().__init__(operation, code)
        self.status = status


class Request:
    """A request head: *method*, *path* (without the query), *version* (``HTTP/1.0``…), *headers*
    (lower-case names)."""

    def __init__(self, method: str, path: str, version: str, headers: Dict[str, str]) -> None:
        self.method, self.path, self.version, self.headers = method, path, version, headers


def read_head(fd: int, deadline: float, monotonic: Callable[[], float] = time.monotonic) -> bytes:
    """The request head from *fd*, up to its empty line (what follows is ignored). Raises
    :class:`BadRequest`: 431 beyond :data:`HEAD_MAX`, 408 at *deadline*, 400 when the client
    closes in the middle, 0 when it closes without sending a byte."""
    data = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        end = _end_of_head(data)
        if end >= 0:
            return data[:end]
        if len(data) > HEAD_MAX:
            raise BadRequest(431, f"read a request head of at most {HEAD_MAX} bytes", errno.EMSGSIZE)
        left = deadline - monotonic()
        if left <= 0 or not poller.poll(max(1, int(left * 1000))):
            raise BadRequest(408, "read the request", errno.ETIMEDOUT)
        try:
            chunk = os.read(fd, HEAD_MAX + 1 - len(data) + 4)
        except BlockingIOError:
            continue
        except OSError as e:
            raise BadRequest(400, "read the request", e.errno or errno.EIO) from None
        if not chunk:  # status 0: gone without a word (a port probe), nothing to answer or say
            raise BadRequest(400 if data else 0, "read the request", errno.EPIPE)
        data += chunk


def _end_of_head(data: bytes) -> int:
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else -1


def parse(head: bytes) -> Request:
    """The request in *head* (without its empty line). Raises :class:`BadRequest` (400)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "read the request: it is not ASCII", errno.EPROTO) from None
    lines = text.replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper() or not parts[1]:
        raise BadRequest(400, "read the request line", errno.EPROTO)
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(400, "read the request line: not HTTP/1.0 or HTTP/1.1", errno.EPROTO)
    if any(c <= " " or c == "\x7f" for c in target):
        raise BadRequest(400, "read the request target", errno.EPROTO)
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or any(c <= " " for c in name):
            raise BadRequest(400, "read a header line", errno.EPROTO)
        headers[name.lower()] = value.strip()
    path = target.split("?", 1)[0]
    return Request(method, path, version, headers)


def response(status: int, body: bytes, content_type: str, *, head_only: bool = False,
             extra: Optional[List[Tuple[str, str]]] = None) -> bytes:
    """The bytes of an answer (``Connection: close``; *body* left out for HEAD)."""
    fields = [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close")]
    fields += extra or []
    head = f"HTTP/1.1 {status} {_REASONS[status]}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\n"
    return head.encode("ascii") + (b"" if head_only else body)


def write_all(fd: int, data: bytes, deadline: float, monotonic: Callable[[], float] = time.monotonic) -> None:
    """Write *data* on *fd* before *deadline* (*fd* is made non-blocking: a blocking write could
    outlive the deadline). Raises :class:`Refused` (ETIMEDOUT or the error): a client that does
    not read is given up."""
    try:
        os.set_blocking(fd, False)
    except OSError as e:
        raise Refused("write the answer", e.errno or errno.EBADF) from None
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    view = memoryview(data)
    while view:
        left = deadline - monotonic()
        if left <= 0 or not poller.poll(max(1, int(left * 1000))):
            raise Refused("write the answer", errno.ETIMEDOUT)
        try:
            view = view[os.write(fd, view[:65536]):]
        except BlockingIOError:
            continue
        except OSError as e:
            raise Refused("write the answer", e.errno or errno.EIO) from None


def scrape_budget(request: Request, limit: float) -> float:
    """Seconds the scrape may take: *limit*, or less when Prometheus says it gives up sooner
    (``X-Prometheus-Scrape-Timeout-Seconds``: 80 % of it, so that a hung daemon is left out
    rather than the whole scrape failing)."""
    text = request.headers.get("x-prometheus-scrape-timeout-seconds", "")
    digits = text.replace(".", "", 1)
    if not (0 < len(text) <= 16 and digits.isascii() and digits.isdigit()):
        return limit  # peer bytes: a plain decimal number of 16 characters at most, or nothing
    theirs = float(text)
    if not theirs > 0:
        return limit
    return max(0.05, min(limit, 0.8 * theirs))


def answer(request: Request, metrics: Callable[[bool], bytes]) -> Tuple[int, bytes]:
    """The status and bytes answering *request*; *metrics(openmetrics)* gives the body of a scrape
    (and may raise :class:`~s6ipc.base.errors.S6ipcError`: the caller answers 503)."""
    from .metrics import OPENMETRICS, PROMETHEUS_TEXT

    plain = "text/plain; charset=utf-8"
    head_only = request.method == "HEAD"
    if request.method not in ("GET", "HEAD"):
        return 405, response(405, b"only GET and HEAD\n", plain, extra=[("Allow", "GET, HEAD")])
    if request.path != "/metrics":
        return 404, response(404, b"the metrics are at /metrics\n", plain, head_only=head_only)
    openmetrics = "application/openmetrics-text" in request.headers.get("accept", "")
    body = metrics(openmetrics)
    return 200, response(200, body, OPENMETRICS if openmetrics else PROMETHEUS_TEXT, head_only=head_only)
