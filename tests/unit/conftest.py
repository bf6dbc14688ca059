"""Fixtures the unit tests of several packages share (tests/conftest.py has the suite's)."""

from __future__ import annotations

import socket
from typing import Iterator, List, Tuple

import pytest


@pytest.fixture
def pair() -> Iterator[Tuple[socket.socket, socket.socket]]:
    """A connected pair of Unix stream sockets, closed after the test."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def opened() -> Iterator[List[socket.socket]]:
    """The sockets a test makes (it appends them), closed after it."""
    made: List[socket.socket] = []
    yield made
    for s in made:
        s.close()
