"""A tiny WSGI app: the PID that served the request (so restarts can be seen)."""

import os


def app(environ, start_response):
    body = f"hello from gunicorn pid {os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
