"""The service's one middleware, in front of every route: it refuses bodies over 6 MB (413),
turns anything unexpected into a JSON 500 with the request id (never a traceback), adds an
x-request-id header, and logs one JSON line per request."""

from __future__ import annotations

import time
import uuid
from typing import Any

from lab_code import urlfetch
from lab_code.serving.errors import error_response
from lab_code.serving.limits import MAX_BODY_BYTES
from lab_code.serving.logs import log_request


def request_id(scope: dict[str, Any]) -> str:
    """Lambda's request id when there is one (context, then event), else a fresh one."""
    context, event = scope.get("aws.context"), scope.get("aws.event") or {}
    rid = getattr(context, "aws_request_id", None)
    rid = rid or (event.get("requestContext") or {}).get("requestId")
    return str(rid)[:64] if rid else uuid.uuid4().hex[:16]



def _declared_length(scope: dict[str, Any]) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length" and value.isdigit():
            return int(value)
    return None


class RequestGuard:
    """ASGI middleware: refuses bodies over MAX_BODY_BYTES with 413 (from the Content-Length
    header before reading anything, else while reading), turns any unexpected exception into a
    JSON 500 with the request id (never a traceback), adds an x-request-id header, and logs
    status, latency, size and text length."""

    def __init__(self, app, watch=None) -> None:
        self.app = app
        self.watch = watch  # lab_code.serving.watch.Watch: metrics, EMF (None: not watched)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, started = time.perf_counter(), 500, False
        state = scope.setdefault("state", {})
        state["request_id"] = rid = request_id(scope)

        async def send_with_id(message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                app_ms = (time.perf_counter() - start) * 1000  # body, JSON, validation, handler
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode()),
                                      (b"server-timing", f"app;dur={app_ms:.2f}".encode())]
            await send(message)

        size = _declared_length(scope) or 0
        if self.watch is not None:
            self.watch.request_started()
        try:
            if size > MAX_BODY_BYTES:  # refused before a byte of the body is read
                await self._too_large(state, size, scope, receive, send_with_id)
                return
            chunks, size, complete = [], 0, False
            while not complete:  # read the whole body, keeping at most MAX_BODY_BYTES of it
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    await self._too_large(state, size, scope, receive, send_with_id)
                    return
                chunks.append(chunk)
                complete = not message.get("more_body", False)
            await self.app(scope, _replay(b"".join(chunks), receive), send_with_id)
        except Exception as err:  # anything unexpected: JSON, one sentence, no traceback
            state["error"] = (f"Something went wrong on the server ({type(err).__name__}): "
                              f"report request {rid}.")
            if not started:
                await error_response(500, state["error"])(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            log_request(request_id=rid, method=scope["method"],
                        path=urlfetch.shown(scope["path"]), status=status,
                        latency_ms=round(seconds * 1000, 2), bytes=size,
                        text_chars=state.get("text_chars"), error=state.get("error"))
            if self.watch is not None:
                self.watch.request_finished(scope["path"], status, seconds, state)

    @staticmethod
    async def _too_large(state, size, scope, receive, send) -> None:
        state["error"] = (f"The request is at least {size:,} bytes, over Lambda's 6 MB "
                          f"({MAX_BODY_BYTES:,} bytes) limit: send a smaller image.")
        await error_response(413, state["error"], headers={"connection": "close"})(
            scope, receive, send)


def _replay(body: bytes, receive):
    """An ASGI receive() that hands the already-read body to the app, then waits as usual."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
