"""The recognizer as a serverless HTTP backend: `create_app(recognizer)` builds the FastAPI app
that AWS Lambda runs through Mangum (`make_handler`, see `lab_code.lambda_function`) and that
uvicorn serves locally, with the model loaded in the app's lifespan hook.

    python -m lab_code.serverless --port 8000      # then POST {"image": "<base64 PNG>"} to /

It is built to face the public internet: `image_url` is fetched under lab_code.urlfetch's policy,
every image is held to work limits before the model runs, each request has a deadline (504),
requests waiting for the model are bounded (503 with Retry-After beyond), bodies over 6 MB are
refused from their Content-Length (413), /health answers at once and says whether the model is
loaded, and every error, expected or not, is JSON with one sentence.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lab_code import images, preprocess, urlfetch
from lab_code.artifacts import bundled_model_path, model_version
from lab_code.ports import in_use_message, port_in_use
from lab_code.recognizer import TextRecognizer, page_text
from lab_code.threads import limit_children, serving_threads

MODEL_ENV = "MODEL_PATH"  # environment variable: a TorchScript file to serve instead of the bundled
MAX_BODY_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit (6 MB)
EXAMPLE = '{"image": "<base64 PNG>"}'


@dataclass(frozen=True)
class ServiceLimits:
    """How much the service takes on at once, and for how long."""

    deadline_s: float = 25.0  # one request, from its body to its answer (504 beyond)
    max_waiting: int = 64  # requests admitted at once (waiting or running); 503 beyond
    max_fetches: int = 8  # image_url downloads at once; 503 beyond (slow upstreams hold them)
    max_decoding: int = 2  # images decoded and split into lines at once (each may take ~300 MB)
    retry_after_s: int = 2  # the Retry-After a 503 carries
    stuck_after_s: float = 60.0  # /health says unhealthy while one model call runs longer
    cache_entries: int = 0  # texts of recent images kept by content hash (0: no cache)
    url_policy: urlfetch.UrlPolicy = field(default_factory=urlfetch.UrlPolicy)
    work: images.WorkLimits = images.LIMITS


class ApiError(Exception):
    """A request the service refuses: an HTTP status and one sentence for the caller."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def load_recognizer(model_path: str | os.PathLike | None = None,
                    optimize: bool = True) -> TextRecognizer:
    """The recognizer to serve: `model_path`, else $MODEL_PATH, else the bundled model; frozen
    for the CPU at load unless `optimize` is false. Each model call runs on one torch thread
    (or $OMP_NUM_THREADS), on whichever thread calls it: lab_code.threads says why."""
    return TextRecognizer(model_path or os.environ.get(MODEL_ENV) or None, optimize=optimize,
                          threads=serving_threads())


def warm_up(recognizer: TextRecognizer) -> None:
    """One pass on a blank line: TorchScript optimizes the graph on its first calls, so a cold
    start pays for it here rather than in the first request."""
    recognizer.predict_lines([np.zeros((preprocess.HEIGHT, 4 * preprocess.HEIGHT), np.float32)])


@contextlib.contextmanager
def stage(timings: dict[str, float] | None, name: str):
    """Add the milliseconds the block takes to timings[name] (nothing when timings is None)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + (time.perf_counter() - start) * 1000


def server_timing(timings: dict[str, float]) -> str:
    """A Server-Timing header value (`read;dur=0.41, model;dur=2.3`): browsers' network panels
    and lab_code.loadgen read it, so each response says where its time went."""
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in timings.items())


class ResultCache:
    """The texts of recently read images, keyed by the SHA-256 of their bytes and the model's
    version, at most `max_entries` (least recently used out first); safe across threads.

    Identical bytes always give the same text with the same model, so a hit is never wrong. What
    it costs: a caller can tell (by the time, or the `cache;desc=hit` timing) that someone sent
    the same image before, so a shared cache suits public images, not private documents."""

    def __init__(self, max_entries: int, version: str = "") -> None:
        self.max_entries, self.version = max_entries, version
        self._items: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def key(self, data: bytes) -> str:
        return hashlib.sha256(self.version.encode() + b"\0" + data).hexdigest()

    def get(self, key: str) -> tuple[str, int] | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: str, text: str, lines: int) -> None:
        with self._lock:
            self._items[key] = (text, lines)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class DeadlinePassed(Exception):
    """A request's deadline passed before the model got to it: its forward pass is skipped."""


class ModelWorker:
    """Every forward pass runs on one thread, one at a time: torch already uses the cores for one
    pass, and a single thread keeps a single pool of torch's worker threads. A job whose request
    has given up (deadline passed) is skipped; `stuck_for` says how long the current pass runs."""

    def __init__(self, recognizer: TextRecognizer) -> None:
        self.recognizer = recognizer
        self.version = model_version(recognizer.model_path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._busy_since: float | None = None

    def submit(self, lines: list[np.ndarray], deadline: float,
               timings: dict[str, float] | None = None) -> Future:
        """Queue one forward pass; `timings` gets its "queue" and "model" milliseconds."""
        return self._pool.submit(self._run, lines, deadline, time.perf_counter(),
                                 {} if timings is None else timings)

    def _run(self, lines: list[np.ndarray], deadline: float, queued: float,
             timings: dict[str, float]) -> list[str]:
        if time.monotonic() > deadline:
            raise DeadlinePassed
        self._busy_since = time.monotonic()
        timings["queue"] = (time.perf_counter() - queued) * 1000
        try:
            with stage(timings, "model"):
                return self.recognizer.predict_lines(lines)
        finally:
            self._busy_since = None

    def stuck_for(self) -> float:
        """Seconds the pass now running has taken (0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Counter:
    """A count of things in progress with a ceiling, safe across threads."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling, self.value, self._lock = ceiling, 0, threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.value >= self.ceiling:
                return False
            self.value += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.value -= 1

    def slot(self):
        """Take one; returns a give-back that works once however often it is called, or None
        when the ceiling is reached."""
        if not self.take():
            return None
        given = threading.Event()

        def give_once() -> None:
            with self._lock:
                if given.is_set():
                    return
                given.set()
                self.value -= 1

        return give_once


# --- request and response shapes (they also document the API at /docs) ----------------------
class PredictRequest(BaseModel):
    """Exactly one of the two fields."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = Field(None, description="a PNG or JPEG, base64-encoded or as a data URL")
    image_url: str | None = Field(None, description="an http(s) URL of a PNG or JPEG (public "
                                                    "addresses only)")


class PredictResponse(BaseModel):
    text: str = Field(description="the recognized text; one line per text line in the image")
    model_version: str = Field(description="first 12 hex digits of the model file's SHA-256")
    latency_ms: float = Field(description="time spent decoding and recognizing, in milliseconds")
    lines: int = Field(description="how many text lines were found")


class ErrorResponse(BaseModel):
    error: str = Field(description="one sentence: what went wrong and what to do")


# --- turning a request into line arrays ----------------------------------------------------
def request_bytes(req: PredictRequest, limits: ServiceLimits) -> tuple[bytes, str]:
    """The image bytes a request carries or names, and a name for them in messages."""
    if req.image is not None and req.image_url is not None:
        raise ApiError(400, 'Send either "image" or "image_url", not both.')
    if req.image is None and req.image_url is None:
        raise ApiError(400, f'Send "image" (base64 PNG or JPEG) or "image_url" (http/https), '
                            f"like {EXAMPLE}.")
    try:
        if req.image is not None:
            return images.decode_base64(req.image, 'Field "image"'), 'The "image" field'
        return urlfetch.fetch(req.image_url, limits.url_policy), urlfetch.shown(req.image_url)
    except images.ImageInputError as err:
        raise ApiError(err.status, str(err)) from err
    except urlfetch.UrlError as err:
        raise ApiError(err.status, f"image_url: {err}") from err


def bytes_lines(data: bytes, name: str, limits: ServiceLimits,
                decoding: threading.Semaphore | None = None,
                timings: dict[str, float] | None = None) -> list[np.ndarray]:
    """Decode image bytes and split them into lines, within the work limits (422). `decoding`
    bounds how many images are decoded at once (memory); `timings` gets "decode" and "lines"."""
    with decoding or contextlib.nullcontext():
        try:
            with stage(timings, "decode"):
                img = images.open_image_bytes(data, name=name, limits=limits.work)
            with stage(timings, "lines"):
                return images.page_lines(img, limits.work)
        except images.ImageInputError as err:
            raise ApiError(err.status, str(err)) from err


def request_lines(req: PredictRequest, limits: ServiceLimits,
                  decoding: threading.Semaphore | None = None,
                  fetched: Any = None, timings: dict[str, float] | None = None) -> list[np.ndarray]:
    """The request's image as line arrays: its bytes (base64 or download: "read" in `timings`),
    decoded and split by bytes_lines. `fetched()` is called once the bytes are in hand (a
    download slot given back)."""
    try:
        with stage(timings, "read"):
            data, name = request_bytes(req, limits)
    finally:
        if fetched is not None:
            fetched()
    return bytes_lines(data, name, limits, decoding, timings)


ERRORS = {status: {"model": ErrorResponse}
          for status in (400, 404, 405, 413, 415, 422, 500, 502, 503, 504)}


def error_response(status: int, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape of this API: {"error": "<one sentence>"}."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# --- the app ----------------------------------------------------------------------------------
def create_app(recognizer: TextRecognizer | None = None, *,
               model_path: str | os.PathLike | None = None,
               limits: ServiceLimits | None = None, optimize: bool = True) -> FastAPI:
    """The backend's FastAPI app. Given a recognizer (Lambda, tests) it serves that one; without,
    its lifespan hook loads `model_path` (else $MODEL_PATH, else the bundled model; frozen for
    the CPU unless `optimize` is false) at startup and /health answers 503 until it is ready."""
    limits = limits or ServiceLimits()
    state: dict[str, Any] = {"worker": ModelWorker(recognizer) if recognizer else None,
                             "cache": None}
    waiting, fetching = Counter(limits.max_waiting), Counter(limits.max_fetches)
    decoding = threading.BoundedSemaphore(limits.max_decoding)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if state["worker"] is None:
            loaded = await run_in_threadpool(load_recognizer, model_path, optimize)
            await run_in_threadpool(warm_up, loaded)
            state["worker"] = ModelWorker(loaded)
            log_request(event="ready", pid=os.getpid(), model_version=state["worker"].version)
        if limits.cache_entries > 0:
            state["cache"] = ResultCache(limits.cache_entries, state["worker"].version)
        try:
            yield
        finally:
            state["worker"].close()

    # strict_content_type=False: a body sent without a Content-Type header (curl --data-binary,
    # which a Function URL then hands over base64-encoded) is still read as JSON.
    app = FastAPI(title="Text recognizer", responses=ERRORS, lifespan=lifespan,
                  description=f"POST {EXAMPLE} or {{\"image_url\": \"https://...\"}} to `/`.",
                  strict_content_type=False)
    busy = {"Retry-After": str(limits.retry_after_s)}

    def prepare(req: PredictRequest, started: threading.Event, give_fetch,
                timings: dict[str, float]) -> tuple[list[np.ndarray], str | None, Any]:
        """The request's lines, and its cache key and cached (text, lines) when caching."""
        started.set()
        try:  # a download's slot comes back when it really ends, not at the 504
            with stage(timings, "read"):
                data, name = request_bytes(req, limits)
        finally:
            give_fetch()
        cache: ResultCache | None = state["cache"]
        key = cache.key(data) if cache is not None else None
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            return [], key, hit
        return bytes_lines(data, name, limits, decoding, timings), key, None

    @app.post("/", response_model=PredictResponse)
    async def predict(req: PredictRequest, request: Request,
                      response: Response) -> PredictResponse:
        """Read the text in one image."""
        start, deadline = time.perf_counter(), time.monotonic() + limits.deadline_s
        timings: dict[str, float] = {}
        worker: ModelWorker | None = state["worker"]
        if worker is None:
            raise ApiError(503, "The model is still loading: try again in a few seconds.", busy)
        if not waiting.take():
            raise ApiError(503, f"The service is busy ({limits.max_waiting} requests waiting): "
                                f"try again in {limits.retry_after_s} s.", busy)
        started, give_fetch = threading.Event(), lambda: None
        try:
            if req.image_url is not None:
                give_fetch = fetching.slot()
                if give_fetch is None:
                    give_fetch = lambda: None  # noqa: E731 - nothing was taken
                    raise ApiError(503, "The service is already downloading "
                                        f"{limits.max_fetches} images: try again in "
                                        f"{limits.retry_after_s} s.", busy)
            try:
                lines, key, hit = await asyncio.wait_for(
                    run_in_threadpool(prepare, req, started, give_fetch, timings),
                    deadline - time.monotonic())
                texts: list[str] = [hit[0]] if hit else []
                if lines:
                    job = worker.submit(lines, deadline, timings)
                    try:
                        texts = await asyncio.wait_for(asyncio.wrap_future(job),
                                                       max(0.0, deadline - time.monotonic()))
                    finally:
                        job.cancel()  # still queued: the model never reads it
            except (TimeoutError, DeadlinePassed) as err:
                raise ApiError(504, f"The request took longer than {limits.deadline_s:.0f} s: "
                                    "send a smaller image or try again later.") from err
        finally:
            waiting.give()
            if not started.is_set():  # the thread never ran: nothing else gives the slot back
                give_fetch()
        text, count = page_text(texts), hit[1] if hit else len(lines)
        if key is not None and hit is None:
            state["cache"].put(key, text, count)
        request.state.text_chars = len(text)
        latency_ms = (time.perf_counter() - start) * 1000
        response.headers["server-timing"] = server_timing(
            {**timings, "handler": latency_ms}) + (", cache;desc=hit" if hit else "")
        return PredictResponse(text=text, model_version=worker.version, lines=count,
                               latency_ms=round(latency_ms, 2))

    @app.get("/health")
    async def health() -> JSONResponse:
        """Readiness: 200 when the model is loaded and not stuck, else 503 (answered at once,
        on the event loop, whatever the model is doing)."""
        worker: ModelWorker | None = state["worker"]
        if worker is None:
            return JSONResponse({"status": "loading", "model_loaded": False}, status_code=503,
                                headers=busy)
        body = {"status": "ok", "model_loaded": True, "model_version": worker.version,
                "waiting": waiting.value}
        if state["cache"] is not None:
            cache = state["cache"]
            body["cache"] = {"entries": len(cache), "hits": cache.hits, "misses": cache.misses}
        stuck = worker.stuck_for()
        if stuck > limits.stuck_after_s:
            body["status"] = "unhealthy"
            body["error"] = f"One model call has run for {stuck:.0f} s: restart the service."
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(RequestGuard)
    app.state.limits = limits
    app.state.worker = lambda: state["worker"]
    return app


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    request.state.error = exc.message
    return error_response(exc.status, exc.message, headers=exc.headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    method, path = request.method, urlfetch.shown(request.url.path)
    if exc.status_code == 404:
        message = f"Nothing at {path}: POST your JSON to / (and GET /health to check the service)."
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "POST")
        message = f"{method} is not allowed on {path}: use {allowed}"
        message += f" with a JSON body like {EXAMPLE}." if "POST" in allowed else "."
    else:
        message = f"{exc.detail}."
    request.state.error = message
    return error_response(exc.status_code, message, headers=exc.headers)


def validation_message(request: Request, exc: RequestValidationError) -> str:
    """One sentence for FastAPI's validation errors (instead of its default list of details)."""
    first = exc.errors()[0]
    kind, loc = first.get("type", ""), [str(x) for x in first.get("loc", ())]
    field_name = urlfetch.shown(loc[1]) if len(loc) > 1 else None
    content_type = request.headers.get("content-type", "")
    if kind == "missing" and field_name is None:
        return f"The request body is empty: send JSON like {EXAMPLE}."
    if kind == "json_invalid":
        return f"The request body is not valid JSON: send JSON like {EXAMPLE}."
    if field_name is None and content_type and "json" not in content_type:
        return (f"The body is {urlfetch.shown(content_type.split(';')[0])}: send JSON with "
                "Content-Type: application/json.")
    if field_name is None:
        return f"The request body must be a JSON object like {EXAMPLE}."
    if kind == "extra_forbidden":
        return f'Unknown field "{field_name}": send only "image" or "image_url".'
    if kind == "string_type":
        return f'Field "{field_name}" must be a string, not {type(first.get("input")).__name__}.'
    return f'Field "{field_name}" is invalid: check its value.'


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    message = validation_message(request, exc)
    request.state.error = message
    return error_response(400, message)


# --- one middleware: the 6 MB limit, a catch-all 500, one JSON log line per request ----------
def request_id(scope: dict[str, Any]) -> str:
    """Lambda's request id when there is one (context, then event), else a fresh one."""
    context, event = scope.get("aws.context"), scope.get("aws.event") or {}
    rid = getattr(context, "aws_request_id", None)
    rid = rid or (event.get("requestContext") or {}).get("requestId")
    return str(rid)[:64] if rid else uuid.uuid4().hex[:16]


READY_EVENT = '"event": "ready"'  # what each worker logs once its model is loaded


def wait_for_workers(log: str | os.PathLike, workers: int, timeout: float = 120.0) -> bool:
    """Wait until `workers` processes have logged READY_EVENT in the service's `log` (True) or
    `timeout` passes (False). /health answers once the first worker is up; connections opened
    before the others are ready would all go to it, and keep-alive would keep them there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = Path(log)
        if path.exists() and path.read_text(errors="replace").count(READY_EVENT) >= workers:
            return True
        time.sleep(0.2)
    return False


def log_request(**fields: Any) -> None:
    """One JSON line on stdout (Lambda sends stdout to CloudWatch Logs)."""
    print(json.dumps(fields, ensure_ascii=False), flush=True)


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

    def __init__(self, app) -> None:
        self.app = app

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
            log_request(request_id=rid, method=scope["method"],
                        path=urlfetch.shown(scope["path"]), status=status,
                        latency_ms=round((time.perf_counter() - start) * 1000, 2), bytes=size,
                        text_chars=state.get("text_chars"), error=state.get("error"))

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


# --- Lambda: the app behind Mangum ------------------------------------------------------------
def direct_event(payload: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Wrap the JSON of a direct invocation (`aws lambda invoke`) as a Function URL POST to /."""
    rid = getattr(context, "aws_request_id", None) or uuid.uuid4().hex[:16]
    now = time.time()
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "accountId": "direct-invoke", "apiId": "direct-invoke", "requestId": rid,
            "routeKey": "$default", "stage": "$default", "timeEpoch": int(now * 1000),
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "direct-invoke"},
        },
        "body": json.dumps(payload), "isBase64Encoded": False,
    }


def lambda_error(status: int, message: str) -> dict[str, Any]:
    """A Function URL response with a JSON error body, for events the app never sees."""
    log_request(status=status, error=message)
    return {"statusCode": status, "headers": {"content-type": "application/json"},
            "body": json.dumps({"error": message}), "isBase64Encoded": False}


def make_handler(app: FastAPI):
    """An AWS Lambda handler(event, context) for `app`. It takes a Function URL event (payload
    2.0) or, for a direct invocation, the request JSON itself; returns a Function URL response
    either way: {"statusCode", "headers", "body": "<JSON string>", "isBase64Encoded"}."""
    from mangum import Mangum

    mangum = Mangum(app, lifespan="off")  # the recognizer is loaded already: nothing to start
    loops = threading.local()  # one asyncio loop per thread that calls the handler, reused

    def run_mangum(event: dict[str, Any], context: Any) -> dict[str, Any]:
        """Mangum runs the app on the thread's current asyncio loop. Give it one of its own
        (after an asyncio.run() there is none), and inside a running loop (a Jupyter cell), a
        worker thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: Lambda, scripts, tests
            loop = getattr(loops, "loop", None)
            if loop is None or loop.is_closed():
                loop = loops.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            return mangum(event, context)

        def in_new_loop() -> dict[str, Any]:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                return mangum(event, context)
            finally:
                asyncio.set_event_loop(None)
                loop.close()

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(in_new_loop).result()

    def handler(event: Any, context: Any = None) -> dict[str, Any]:
        if not isinstance(event, dict):
            return lambda_error(400, f"The event must be a JSON object like {EXAMPLE}.")
        if "requestContext" not in event:  # direct invocation: the event is the request body
            event = direct_event(event, context)
        elif event.get("isBase64Encoded"):
            try:
                base64.b64decode(event.get("body") or "", validate=True)
            except (binascii.Error, ValueError, TypeError):
                return lambda_error(400, "The event says isBase64Encoded but its body is not "
                                         "base64.")
        try:
            return run_mangum(event, context)
        except Exception as err:  # a malformed event must not crash the function
            return lambda_error(400, f"The event is not a Function URL request "
                                     f"({type(err).__name__}): send a Function URL event or a "
                                     f"JSON object like {EXAMPLE}.")

    return handler


# --- local service --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    defaults = ServiceLimits()
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.serverless",
        description="Serve the Lambda backend's FastAPI app over HTTP with uvicorn, so it can be "
                    f"called like a Function URL: POST {EXAMPLE} to http://HOST:PORT/.",
        epilog=f"Environment: {MODEL_ENV} = a TorchScript model file to serve (default: bundled); "
               f"{urlfetch.ALLOW_PRIVATE_ENV}=1 = the same as {urlfetch.ALLOW_PRIVATE_FLAG}.",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument(urlfetch.ALLOW_PRIVATE_FLAG, action="store_true",
                        help="let image_url reach this machine and private networks, for a "
                             "trusted local demo (default: public addresses only)")
    parser.add_argument("--deadline", type=float, default=defaults.deadline_s, metavar="SECONDS",
                        help=f"answer 504 after this long (default: {defaults.deadline_s:.0f})")
    parser.add_argument("--max-waiting", type=int, default=defaults.max_waiting, metavar="N",
                        help="answer 503 when this many requests are already in progress, per "
                             f"worker (default: {defaults.max_waiting})")
    parser.add_argument("--workers", type=int, default=default_workers(), metavar="N",
                        help="server processes, each with its own copy of the model and one "
                             "torch thread (default: one per CPU core, at most "
                             f"{MAX_DEFAULT_WORKERS}: here {default_workers()})")
    parser.add_argument("--cache", type=int, default=defaults.cache_entries, metavar="N",
                        help="keep the texts of the last N distinct images per worker and answer "
                             "a repeat without the model (default: 0, off; see ResultCache for "
                             "when it is safe)")
    parser.add_argument("--no-optimize", dest="optimize", action="store_false",
                        help="run the model as its file holds it, not frozen for the CPU at load "
                             "(lesson 07 compares the two)")
    return parser


MAX_DEFAULT_WORKERS = 4
CONFIG_ENV = "LAB_SERVICE_CONFIG"  # how `main` hands its settings to uvicorn's worker processes


def default_workers() -> int:
    """One worker process per CPU core this process may use, at most MAX_DEFAULT_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def app_from_environment() -> FastAPI:
    """The app that each of uvicorn's worker processes builds (uvicorn's `factory=True`): its
    settings come from $LAB_SERVICE_CONFIG, which `main` writes, and its model from $MODEL_PATH."""
    config = json.loads(os.environ.get(CONFIG_ENV) or "{}")
    policy = urlfetch.UrlPolicy(allow_private=True if config.pop("allow_private", False) else None)
    optimize = bool(config.pop("optimize", True))
    return create_app(limits=replace(ServiceLimits(), url_policy=policy, **config),
                      optimize=optimize)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if port_in_use(args.host, args.port):
        print(f"error: {in_use_message(args.host, args.port)}", file=sys.stderr)
        return 1
    model_path = Path(os.environ.get(MODEL_ENV) or bundled_model_path())
    if not model_path.is_file():
        print(f"error: No model file at {model_path}: run `make model` or set {MODEL_ENV} to a "
              ".pt TorchScript file.", file=sys.stderr)
        return 1
    if args.workers < 1 or args.cache < 0 or args.max_waiting < 1:
        print("error: --workers and --max-waiting must be at least 1, and --cache at least 0.",
              file=sys.stderr)
        return 2
    import uvicorn

    # the worker processes load torch, OpenMP and OpenBLAS with one thread each (or what the
    # environment already says); this process's own model thread is set by load_recognizer
    limit_children(serving_threads())
    os.environ[MODEL_ENV] = str(model_path)
    os.environ[CONFIG_ENV] = json.dumps({
        "deadline_s": args.deadline, "max_waiting": args.max_waiting,
        "cache_entries": args.cache, "allow_private": args.allow_private_urls,
        "optimize": args.optimize})
    workers = f"{args.workers} worker{'s' if args.workers > 1 else ''}"
    print(f"Serving model {model_version(model_path)} on http://{args.host}:{args.port}/ with "
          f"{workers} (POST JSON, GET /health, docs at /docs); Ctrl+C stops it.", flush=True)
    if args.workers > 1 and hasattr(socket, "SO_REUSEPORT") and sys.platform == "linux":
        return serve_workers(args.host, args.port, args.workers)
    uvicorn.run(APP_FACTORY, factory=True, host=args.host, port=args.port, workers=args.workers,
                **UVICORN_SETTINGS)
    return 0


APP_FACTORY = "lab_code.serverless:app_from_environment"
UVICORN_SETTINGS = {"log_level": "warning", "access_log": False, "timeout_graceful_shutdown": 5}


def _serve_one(host: str, port: int) -> None:
    """One worker process: its own listening socket on the shared port (SO_REUSEPORT), so the
    kernel spreads new connections evenly over the workers."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    config = uvicorn.Config(APP_FACTORY, factory=True, **UVICORN_SETTINGS)
    uvicorn.Server(config).run(sockets=[sock])


def serve_workers(host: str, port: int, workers: int) -> int:
    """Run `workers` processes that each listen on host:port with SO_REUSEPORT (Linux), and stop
    them all on Ctrl+C or SIGTERM, or when one of them ends.

    Why not uvicorn's own `workers=N`: its workers share one listening socket, and whichever is
    awake first accepts a burst of new connections; with keep-alive, 64 clients that connect at
    once can all stay on one worker while the other idles. With a socket each, the kernel hashes
    every new connection to one of them."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_serve_one, args=(host, port), name=f"worker-{i}")
             for i in range(workers)]
    stopping = threading.Event()

    def stop(signum=None, frame=None) -> None:
        stopping.set()

    previous = signal.signal(signal.SIGTERM, stop)
    for proc in procs:
        proc.start()
    try:
        while not stopping.is_set() and all(p.is_alive() for p in procs):
            stopping.wait(0.5)
    except KeyboardInterrupt:  # Ctrl+C: every worker got it too, and shuts down on its own
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for proc in procs:
            proc.join(UVICORN_SETTINGS["timeout_graceful_shutdown"] + 5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    failed = [p for p in procs if p.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    if failed and not stopping.is_set():
        print(f"error: worker {failed[0].name} stopped with exit code {failed[0].exitcode}: "
              "see its messages above.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
