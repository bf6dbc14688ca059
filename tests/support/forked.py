"""Running a piece of test code in a forked child, for what must not touch pytest's own process
(ids, signal dispositions, descriptors 0-7)."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Tuple, Type


def in_child(work: Callable[[], Any], expected: Tuple[Type[BaseException], ...] = ()) -> Any:
    """*work*'s JSON-able result, computed in a forked child. An exception of *expected* types
    comes back as ``["raised", str(e), e.exit_code or None]``; anything else leaves the child
    with no result (a JSONDecodeError here names the test that broke)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            try:
                result = work()
            except expected as e:
                result = ["raised", str(e), getattr(e, "exit_code", None)]
            os.write(w, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)
