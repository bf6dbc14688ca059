"""httpexport: one HTTP/1.x request head, read within bounds, parsed without trust, answered."""

from __future__ import annotations

import os
import time

import pytest

from s6ipc.daemon import httpexport
from s6ipc.daemon.httpexport import BadRequest, Request


def _head(data: bytes, timeout: float = 1.0, close: bool = True) -> bytes:
    r, w = os.pipe()
    try:
        os.write(w, data)
        if close:
            os.close(w)
            w = -1
        return httpexport.read_head(r, time.monotonic() + timeout)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_reads_up_to_the_empty_line() -> None:
    assert _head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nBODY") == b"GET /metrics HTTP/1.1\r\nHost: x"
    assert _head(b"GET / HTTP/1.0\n\n") == b"GET / HTTP/1.0"


@pytest.mark.parametrize(
    "data,close,status",
    [
        (b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"a" * 9000, False, 431),
        (b"GET /metrics HTTP/1.1\r\n", False, 408),
        (b"GET /metrics HTTP/1.1\r\n", True, 400),
        (b"", True, 0),
    ],
)
def test_bounded_in_size_and_time(data: bytes, close: bool, status: int) -> None:
    started = time.monotonic()
    with pytest.raises(BadRequest) as caught:
        _head(data, timeout=0.3, close=close)
    assert caught.value.status == status and caught.value.exit_code == 1
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "head",
    [
        b"\xff\xfe",
        b"GET /metrics",
        b"GET /metrics HTTP/2.0",
        b"get /metrics HTTP/1.1",
        b"GET  /metrics HTTP/1.1",
        b"GET /met\x01rics HTTP/1.1",
        b"GET /metrics HTTP/1.1\r\nno colon",
        b"GET /metrics HTTP/1.1\r\nBad Name: x",
        b"GET /metrics HTTP/1.1\r\n: empty",
    ],
)
def test_malformed_is_400(head: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        httpexport.parse(head)
    assert caught.value.status == 400 and "\n" not in str(caught.value)


def test_parse() -> None:
    request = httpexport.parse(b"GET /metrics?x=1 HTTP/1.0\r\nAccept: text/plain\r\nHOST:  h ")
    assert (request.method, request.path, request.version) == ("GET", "/metrics", "HTTP/1.0")
    assert request.headers == {"accept": "text/plain", "host": "h"}


def _answer(method: str, path: str, accept: str = "") -> bytes:
    asked = []

    def body(openmetrics: bool) -> bytes:
        asked.append(openmetrics)
        return b"OM\n" if openmetrics else b"TEXT\n"

    headers = {"accept": accept} if accept else {}
    status, data = httpexport.answer(Request(method, path, "HTTP/1.1", headers), body)
    assert data.startswith(f"HTTP/1.1 {status} ".encode())
    return data


def test_answers() -> None:
    data = _answer(
        "GET", "/metrics", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    )
    assert b"Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n" in data
    assert data.endswith(b"\r\n\r\nOM\n") and b"Content-Length: 3\r\n" in data
    data = _answer("GET", "/metrics")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n" in data and data.endswith(b"TEXT\n")
    head = _answer("HEAD", "/metrics")
    assert head.endswith(b"\r\n\r\n") and b"Content-Length: 5\r\n" in head
    assert _answer("GET", "/").startswith(b"HTTP/1.1 404 Not Found\r\n")
    refused = _answer("POST", "/metrics")
    assert refused.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n") and b"Allow: GET, HEAD\r\n" in refused


def test_a_reader_that_never_reads_is_given_up() -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        started = time.monotonic()
        with pytest.raises(httpexport.Refused, match="unable to write the answer: Connection timed out"):
            httpexport.write_all(w, b"x" * (1 << 22), time.monotonic() + 0.3)
        assert time.monotonic() - started < 1.0
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(
    "header,budget",
    [(None, 5.0), ("1", 0.8), ("10", 5.0), ("0.01", 0.05), ("nan", 5.0), ("-1", 5.0), ("soon", 5.0),
     ("1e3", 5.0), ("1" * 400, 5.0), ("0.5.", 5.0), ("\u0663", 5.0), ("0", 5.0)],
)
def test_the_scrape_fits_in_prometheus_timeout(header: object, budget: float) -> None:
    headers = {} if header is None else {"x-prometheus-scrape-timeout-seconds": str(header)}
    assert httpexport.scrape_budget(Request("GET", "/metrics", "HTTP/1.1", headers), 5.0) == pytest.approx(
        budget
    )
