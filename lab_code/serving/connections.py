"""Connection limits for a self-hosted uvicorn, the ones a reverse proxy (nginx) would otherwise
give it: a deadline for a request's line and headers, a cap on their size, and JSON answers when
either is broken.

uvicorn has no timeout for receiving a request: its keep-alive timer runs only between requests,
and every byte received resets it, so a client that sends one header byte every few seconds
(slowloris) holds its connection, and a slot, forever. ASGI middleware cannot help: it runs only
once the headers are complete. So this is a subclass of uvicorn's h11 protocol, passed to
uvicorn as `http=GuardedH11Protocol` (see UVICORN_LIMITS). The request *body* has its deadline in
lab_code.serving.guard, where the app reads it.

Behind AWS Lambda none of this runs: the Function URL front end receives the whole request and
invokes the function with it (at most 6 MB), so slow clients hold AWS's connections, not yours.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0  # a request line and headers must arrive within this (then: closed)
MAX_HEAD_BYTES = 16 * 1024  # request line and headers together (h11's own default)
KEEP_ALIVE_S = 5  # an idle connection between requests is closed after this (uvicorn's default)
MAX_CONNECTIONS = 512  # per server process; uvicorn answers 503 beyond (under the usual 1024 fds)


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus: the request line and headers must be complete within
    HEADER_TIMEOUT_S of the connection opening (or of the previous response), else the server
    answers 408 (or, if nothing came at all, just closes); a head over
    h11_max_incomplete_event_size is a JSON 400."""

    _head_timer = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_started = False
        self._head_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_started:  # part of a request came: say why it is cut off
            self.transport.write(_raw_response(
                408, "Request Timeout", f"The request's headers did not arrive within "
                f"{HEADER_TIMEOUT_S:.0f} s: send the request again."))
        self.transport.close()  # an idle connection is closed without a word, as keep-alive does

    def data_received(self, data: bytes) -> None:
        self._head_started = True
        super().data_received(data)
        if self._head_timer is not None and self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()  # the head is complete: the body has its own deadline

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request on this connection, if any

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._cancel_head_timer()
        self.transport.write(_raw_response(
            400, "Bad Request", "The request is not valid HTTP/1.1, or its request line and "
            f"headers are over {MAX_HEAD_BYTES // 1024} KB: send a smaller, well-formed request."))
        self.transport.close()


# What every self-hosted server of this course passes to uvicorn (serverless, batching).
UVICORN_LIMITS = {"http": GuardedH11Protocol, "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
                  "timeout_keep_alive": KEEP_ALIVE_S, "limit_concurrency": MAX_CONNECTIONS}
