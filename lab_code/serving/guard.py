"""The service's one middleware, in front of every route. Before anything parses a request it
checks where the request is addressed (a Host allow-list), what it says it sends (JSON), and how
big and how slow its body is; then it checks the body's keys; and it turns anything unexpected
into a JSON 500 with the request id (never a traceback), adds an x-request-id header, and logs
one JSON line per request.

Behind AWS Lambda (Mangum) the Function URL has already done part of this: it hands the function
whole requests of at most 6 MB, and sets the Host to its own name. The Host and Content-Type
checks are for a server that a browser on this machine can reach (DNS rebinding, a page's
no-cors fetch); they apply everywhere but behind Mangum."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import threading
import time
import uuid
from typing import Any

from lab_code import urlfetch
from lab_code.serving.errors import error_response
from lab_code.serving.limits import MAX_BODY_BYTES, ServiceLimits
from lab_code.serving.logs import log_request
from lab_code.serving.schemas import shape_error

HOSTS_ENV = "LAB_ALLOWED_HOSTS"  # more host names to answer to, comma-separated
DISCONNECTED = 499  # what the log says of a client that left before sending its whole request
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id(scope: dict[str, Any]) -> str:
    """Lambda's request id when there is one (context, then event) and it looks like one (up
    to 64 letters, digits and ._:-; anything else could break a header or a log line), else a
    fresh one."""
    context, event = scope.get("aws.context"), scope.get("aws.event") or {}
    rid = getattr(context, "aws_request_id", None)
    rid = rid or (event.get("requestContext") or {}).get("requestId")
    return str(rid) if rid and _SAFE_ID.fullmatch(str(rid)) else uuid.uuid4().hex[:16]


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def _declared_length(scope: dict[str, Any]) -> int | None:
    value = _header(scope, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


def host_name(host: str) -> str:
    """The name in a Host header, without its port: "[::1]:8000" -> "::1"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_hosts(extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The host names a server answers to besides IP addresses: localhost, `extra`, and
    $LAB_ALLOWED_HOSTS (comma-separated). A name that starts with a dot allows its subdomains."""
    from_env = tuple(h.strip().lower() for h in os.environ.get(HOSTS_ENV, "").split(",")
                     if h.strip())
    return ("localhost", *(h.lower() for h in extra), *from_env)


def host_allowed(host: str | None, names: tuple[str, ...]) -> bool:
    """Whether a request's Host is an IP address (a DNS-rebinding page always has a name of its
    own) or one of `names` (".example.com" allows its subdomains); no Host at all passes."""
    if host is None:
        return True
    name = host_name(host)
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return any(name == n or (n.startswith(".") and (name.endswith(n) or name == n[1:]))
               for n in names)


class ByteBudget:
    """Bytes of request bodies held at once, with a ceiling, safe across threads."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling, self.held, self._lock = ceiling, 0, threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.held + n > self.ceiling:
                return False
            self.held += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.held -= n


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class RequestGuard:
    """ASGI middleware. In order, answering with JSON and one sentence:
    - a Host that is neither an IP address nor an allowed name: 400 (not behind Mangum);
    - a body whose Content-Type is not application/json: 415 (not behind Mangum);
    - a body over MAX_BODY_BYTES: 413, from Content-Length before reading anything, else while
      reading;
    - a body that has not arrived within `limits.body_deadline_s`: 408, and the connection is
      closed;
    - a body that would take the bodies held at once past `limits.max_buffered_bytes`: 503;
    - a JSON object with a key outside `fields` (when given: for every POST, or per path when
      a dict) or a key twice: 400;
    then anything unexpected becomes a JSON 500 with the request id. A client that disconnects
    before its body has arrived is logged as 499, not as a server error."""

    def __init__(self, app, limits: ServiceLimits | None = None,
                 fields: tuple[str, ...] | dict[str, tuple[str, ...]] | None = None,
                 watch=None) -> None:
        self.app, self.limits, self.fields = app, limits or ServiceLimits(), fields
        self.watch = watch  # lab_code.serving.watch.Watch: metrics, EMF (None: not watched)
        self.hosts = allowed_hosts(self.limits.allowed_hosts)
        self.budget = ByteBudget(self.limits.max_buffered_bytes)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status, started, held = time.perf_counter(), 500, False, 0
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
            self._check_head(scope, size)
            chunks, size, complete = [], 0, False
            deadline = time.monotonic() + self.limits.body_deadline_s
            while not complete:  # read the whole body, keeping at most MAX_BODY_BYTES of it
                try:
                    message = await asyncio.wait_for(receive(), deadline - time.monotonic())
                except TimeoutError:
                    raise _Refused(408, f"The request body did not arrive within "
                                        f"{self.limits.body_deadline_s:.0f} s: send it again "
                                        "on a faster connection.",
                                   {"connection": "close"}) from None
                if message["type"] == "http.disconnect":
                    status, state["error"] = DISCONNECTED, (
                        "The client disconnected before sending the whole request.")
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise self._too_large(size)
                if not self.budget.take(len(chunk)):
                    raise _Refused(503, "The server is receiving too many large requests at "
                                        f"once: try again in {self.limits.retry_after_s} s.",
                                   {"retry-after": str(self.limits.retry_after_s),
                                    "connection": "close"})
                held += len(chunk)
                chunks.append(chunk)
                complete = not message.get("more_body", False)
            body = b"".join(chunks)
            del chunks
            fields = (self.fields.get(scope["path"]) if isinstance(self.fields, dict)
                      else self.fields)
            if fields is not None and scope["method"] == "POST":
                problem = shape_error(body, fields)
                if problem is not None:
                    raise _Refused(400, problem)
            await self.app(scope, _replay(body, receive), send_with_id)
        except _Refused as refused:
            state["error"] = refused.message
            if not started:
                await error_response(refused.status, refused.message, refused.headers)(
                    scope, receive, send_with_id)
        except Exception as err:  # anything unexpected: JSON, one sentence, no traceback
            state["error"] = (f"Something went wrong on the server ({type(err).__name__}): "
                              f"report request {rid}.")
            if not started:
                await error_response(500, state["error"])(scope, receive, send_with_id)
        finally:
            self.budget.give(held)
            seconds = time.perf_counter() - start
            log_request(request_id=rid, method=scope["method"],
                        path=urlfetch.shown(scope["path"]), status=status,
                        latency_ms=round(seconds * 1000, 2), bytes=size,
                        text_chars=state.get("text_chars"), error=state.get("error"))
            if self.watch is not None:
                self.watch.request_finished(scope["path"], status, seconds, state)

    def _check_head(self, scope, size: int) -> None:
        """What the request line and headers alone refuse, before a byte of the body is read."""
        if "aws.event" not in scope:  # not behind Lambda: a browser on this machine may call
            host = _header(scope, b"host")
            if not host_allowed(host.decode("latin-1") if host else None, self.hosts):
                name = urlfetch.shown(host_name(host.decode("latin-1")))
                raise _Refused(400, f"This server does not answer to the host name {name}: open "
                                    "it by its IP address or as localhost, or start it with "
                                    f"--allowed-hosts {name}.", {"connection": "close"})
            kind = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
            has_body = size > 0 or _header(scope, b"transfer-encoding") is not None
            if has_body and kind != b"application/json":
                what = (f"is sent as {urlfetch.shown(kind.decode('latin-1'))}" if kind
                        else "has no Content-Type")
                raise _Refused(415, f"The request {what}: send JSON with Content-Type: "
                                    "application/json.", {"connection": "close"})
        if size > MAX_BODY_BYTES:  # refused before a byte of the body is read
            raise self._too_large(size)

    @staticmethod
    def _too_large(size: int) -> _Refused:
        return _Refused(413, f"The request is at least {size:,} bytes, over Lambda's 6 MB "
                             f"({MAX_BODY_BYTES:,} bytes) limit: send a smaller image.",
                        {"connection": "close"})


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
