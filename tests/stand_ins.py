"""Helpers for tests that need a small HTTP server of their own on 127.0.0.1, or that wait for
something to happen (on a loaded 2-core machine a fixed sleep is either too short or wasted)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextlib.contextmanager
def serve_http(handler: Callable[..., BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free 127.0.0.1 port in a thread; yield its base URL
    ("http://127.0.0.1:PORT", no trailing slash) and always shut the server down."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.02):
    """Ask `condition()` every `every` seconds until it is true, and return its value; fail,
    saying what was awaited, once `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(every)
    return value


def local_client(app):
    """Starlette's TestClient for `app`, calling it as localhost: its default Host, "testserver",
    is refused by the service's Host allow-list (lab_code.serving.guard)."""
    from starlette.testclient import TestClient

    return TestClient(app, base_url="http://localhost")
