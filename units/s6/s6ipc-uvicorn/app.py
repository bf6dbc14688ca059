"""A tiny ASGI app: the PID that served the request (so restarts can be seen)."""

import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"hello from uvicorn pid {os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
