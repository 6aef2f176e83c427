"""What the Gradio app refuses before Gradio sees a request: an ASGI middleware that `app.launch`
installs on every launch (through Gradio's `app_kwargs`).

- Host: an IP address, localhost, or a name the app was told about (its --share or --tunnel
  domain, --allowed-hosts): a DNS-rebinding page on another name cannot drive it.
- URLs: Gradio fetches any public http(s) URL handed to `/gradio_api/file=<url>` (and
  `/file/<url>`, `/proxy=<url>`) with no size cap, no total deadline and 20 redirects. This app
  only ever serves files it made, so those are refused (the image input's own URL fetching is
  switched off in `app.image_input`).
- Bodies: an upload is at most `max_upload_bytes` for the whole request, whatever `launch` was
  given, and holds at most `max_files` files; any other body at most `max_body_bytes`.
- Logins: after `max_failed_logins` failures from one client within `login_window_s`, 429 until
  the window passes; the session cookie gets SameSite=Lax (Gradio sets None, for embedding in
  other sites) and an expiry, and the server forgets a session once that has passed.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from http.cookies import SimpleCookie
from typing import Any

from starlette.responses import JSONResponse

from lab_code import urlfetch
from lab_code.serving.guard import allowed_hosts, host_allowed, host_name
from lab_code.serving.logs import log_request

_FETCHING = re.compile(r"/(?:file=|file/|proxy=)(.*)$", re.IGNORECASE | re.DOTALL)
_TOKEN_COOKIE = re.compile(r"access-token(?:-unsecure)?-")
MAX_CLIENTS = 10_000  # clients whose failed logins are remembered at once (oldest forgotten)


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def client_key(scope: dict[str, Any]) -> str:
    """Who is asking: the peer address, or, when the peer is this machine (an ngrok agent, a
    proxy), the last address in X-Forwarded-For, which the proxy itself appended."""
    peer = (scope.get("client") or ("?", 0))[0]
    forwarded = _header(scope, b"x-forwarded-for")
    if forwarded and peer in ("127.0.0.1", "::1"):
        return forwarded.decode("latin-1").split(",")[-1].strip()[:64] or peer
    return peer


class AppGuard:
    """See the module's docstring. `hosts` is a list the app may add to while it runs (the
    tunnel's host name is known only once the tunnel is open)."""

    def __init__(self, app, *, hosts: list[str], max_upload_bytes: int, max_files: int,
                 max_body_bytes: int, max_failed_logins: int, login_window_s: float,
                 session_s: int) -> None:
        self.app, self.hosts = app, hosts
        self.max_upload_bytes, self.max_files = max_upload_bytes, max_files
        self.max_body_bytes = max_body_bytes
        self.max_failed_logins, self.login_window_s = max_failed_logins, login_window_s
        self.session_s = session_s
        self.failures: OrderedDict[str, list[float]] = OrderedDict()
        self.sessions: dict[str, float] = {}  # token -> when it expires

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            self._check_head(scope)
            if scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/login"):
                await self._login(scope, receive, sending)
                return
            self._forget_expired_session(scope)
            await self.app(scope, self._counting(scope, receive), sending)
        except _Refused as refused:
            log_request(event="app_refused", status=refused.status, method=scope["method"],
                        path=urlfetch.shown(scope["path"]), error=refused.message)
            if not started:
                await JSONResponse({"error": refused.message}, refused.status,
                                   headers=refused.headers)(scope, receive, send)

    # -- before the body
    def _check_head(self, scope) -> None:
        host = _header(scope, b"host")
        names = allowed_hosts(tuple(self.hosts))
        if not host_allowed(host.decode("latin-1") if host else None, names):
            name = urlfetch.shown(host_name(host.decode("latin-1")))
            raise _Refused(400, f"This app does not answer to the host name {name}: open it by "
                                "its IP address or as localhost, or start it with "
                                f"--allowed-hosts {name}.")
        fetching = _FETCHING.search(scope["path"])
        if fetching and ("://" in fetching.group(1) or fetching.group(1).startswith("//")):
            raise _Refused(403, "This app serves only the files it made; it does not fetch "
                                "URLs: upload the image instead.")
        length = _header(scope, b"content-length")
        declared = int(length) if length and length.isdigit() else None
        limit = self._limit(scope)
        if declared is not None and declared > limit:
            raise self._too_large(limit)

    def _limit(self, scope) -> int:
        return self.max_upload_bytes if self._is_upload(scope) else self.max_body_bytes

    @staticmethod
    def _is_upload(scope) -> bool:
        return scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/upload")

    def _too_large(self, limit: int) -> _Refused:
        return _Refused(413, f"The request is over {limit / 2**20:.0f} MB, all files together: "
                             "send a smaller image.", {"connection": "close"})

    # -- while the app reads the body
    def _counting(self, scope, receive):
        """receive(), counting the body's bytes and, for an upload, its files (the multipart
        boundaries), and refusing as soon as either is over its limit."""
        limit = self._limit(scope)
        boundary = None
        if self._is_upload(scope):
            kind = (_header(scope, b"content-type") or b"").decode("latin-1")
            found = re.search(r'boundary="?([^";]+)', kind)
            boundary = b"--" + found.group(1).encode("latin-1") if found else None
        seen, tail, parts = 0, b"", 0

        async def counting():
            nonlocal seen, tail, parts
            message = await receive()
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                raise self._too_large(limit)
            if boundary is not None and chunk:
                window = tail + chunk
                parts += window.count(boundary) - tail.count(boundary)
                tail = window[-(len(boundary) - 1):] if len(boundary) > 1 else b""
                if parts - 1 > self.max_files:  # the closing delimiter is one more boundary
                    raise _Refused(400, f"One upload may hold at most {self.max_files} "
                                        f"file{'s' if self.max_files > 1 else ''}: upload one "
                                        "image at a time.", {"connection": "close"})
            return message

        return counting

    # -- logins and sessions
    async def _login(self, scope, receive, send) -> None:
        who, now = client_key(scope), time.monotonic()
        recent = [t for t in self.failures.get(who, []) if now - t < self.login_window_s]
        if len(recent) >= self.max_failed_logins:
            wait = int(self.login_window_s - (now - recent[0])) + 1
            raise _Refused(429, f"Too many failed logins from here: try again in {wait} s.",
                           {"retry-after": str(wait)})

        async def watching(message) -> None:
            if message["type"] == "http.response.start":
                if message["status"] >= 400:
                    self._failed(who, recent + [now])
                    log_request(event="login_failed", client=who, failures=len(recent) + 1)
                elif message["status"] < 300:
                    self.failures.pop(who, None)
                    message["headers"] = [self._session_cookie(k, v) if k == b"set-cookie"
                                          else (k, v) for k, v in message.get("headers", [])]
            await send(message)

        await self.app(scope, self._counting(scope, receive), watching)

    def _failed(self, who: str, times: list[float]) -> None:
        self.failures[who] = times
        self.failures.move_to_end(who)
        while len(self.failures) > MAX_CLIENTS:
            self.failures.popitem(last=False)

    def _session_cookie(self, key: bytes, value: bytes) -> tuple[bytes, bytes]:
        text = value.decode("latin-1")
        name, _, rest = text.partition("=")
        if not _TOKEN_COOKIE.match(name):
            return key, value
        token = rest.split(";", 1)[0]
        self.sessions[token] = time.time() + self.session_s
        attrs = [a for a in text.split(";") if a.strip().lower().split("=")[0]
                 not in ("samesite", "max-age", "expires")]
        attrs += ["SameSite=Lax", f"Max-Age={self.session_s}"]
        return key, "; ".join(a.strip() for a in attrs).encode("latin-1")

    def _forget_expired_session(self, scope) -> None:
        cookie = _header(scope, b"cookie")
        if not cookie or not self.sessions:
            return
        jar = SimpleCookie()
        try:
            jar.load(cookie.decode("latin-1"))
        except Exception:  # a malformed Cookie header: Gradio will not find a session in it
            return
        now = time.time()
        for name, morsel in jar.items():
            expires = self.sessions.get(morsel.value)
            if _TOKEN_COOKIE.match(name) and expires is not None and expires < now:
                self.sessions.pop(morsel.value, None)
                tokens = getattr(scope.get("app"), "tokens", None)
                if isinstance(tokens, dict):
                    tokens.pop(morsel.value, None)  # Gradio's own record of the session
