"""The recognizer as a serverless HTTP backend: a FastAPI app that AWS Lambda runs through Mangum
(`handler`, for Function URL events and direct invocations) and that uvicorn serves locally.

    python -m lab_code.serverless --port 8000      # then POST {"image": "<base64 PNG>"} to /

The model loads once per process, at import time (in Lambda: the init phase of a cold start).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from mangum import Mangum
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from lab_code import images, preprocess
from lab_code.artifacts import model_version
from lab_code.ports import free_port, port_in_use  # noqa: F401 - part of this module's API
from lab_code.recognizer import TextRecognizer

MODEL_ENV = "MODEL_PATH"  # environment variable: a TorchScript file to serve instead of the bundled
MAX_BODY_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit (6 MB)
EXAMPLE = '{"image": "<base64 PNG>"}'


class ApiError(Exception):
    """A request the service refuses: an HTTP status and one sentence for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# One thread for torch's operators unless OMP_NUM_THREADS says otherwise. This service reads one
# request at a time on a vCPU or two; a small model gains little from splitting each operator
# across threads, and those threads wait for each other spinning, which collapses (seconds per
# request) when the CPU is shared or throttled: a busy machine, or Lambda below 1,769 MB, which
# gets a fraction of a vCPU.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

# Module scope runs once per process: in Lambda, during the init phase of a cold start, so warm
# requests reuse the loaded model.
try:
    RECOGNIZER = TextRecognizer(os.environ.get(MODEL_ENV) or None)
except (FileNotFoundError, ValueError) as _err:
    if __name__ != "__main__":
        raise
    sys.exit(f"error: {_err}")
MODEL_VERSION = model_version(RECOGNIZER.model_path)
# Every forward pass runs on this one thread, one at a time: torch already uses every core for
# one pass, and a single thread keeps a single pool of torch's worker threads (each new thread
# that runs the model would start a pool of its own, and they compete for the cores).
MODEL_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
# One warm-up pass: TorchScript optimizes the graph on its first calls, so a cold start pays for
# it here rather than in the first request.
MODEL_THREAD.submit(RECOGNIZER.predict_lines,
                    [np.zeros((preprocess.HEIGHT, 4 * preprocess.HEIGHT), np.float32)]).result()


# --- request and response shapes (they also document the API at /docs) ----------------------
class PredictRequest(BaseModel):
    """Exactly one of the two fields."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = Field(None, description="a PNG or JPEG, base64-encoded or as a data URL")
    image_url: str | None = Field(None, description="an http(s) URL of a PNG or JPEG")


class PredictResponse(BaseModel):
    text: str = Field(description="the recognized text; one line per text line in the image")
    model_version: str = Field(description="first 12 hex digits of the model file's SHA-256")
    latency_ms: float = Field(description="time spent decoding and recognizing, in milliseconds")
    lines: int = Field(description="how many text lines were found")


class ErrorResponse(BaseModel):
    error: str = Field(description="one sentence: what went wrong and what to do")


# --- turning a request into an image ------------------------------------------------------
def decode_base64_image(value: str) -> bytes:
    """Bytes of a base64 string or a `data:image/...;base64,` URL (line breaks are allowed)."""
    data = value.strip()
    if data.startswith("data:"):
        header, comma, data = data.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ApiError(400, 'The data URL in "image" must be base64, like '
                                '"data:image/png;base64,iVBOR...".')
    data = "".join(data.split())
    if not data:
        raise ApiError(400, f'Field "image" is empty: send a base64-encoded PNG or JPEG, '
                            f"like {EXAMPLE}.")
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ApiError(400, 'Field "image" is not valid base64: encode the file\'s bytes, for '
                            'example base64.b64encode(path.read_bytes()).decode().') from err


def fetch_image_url(url: str) -> bytes:
    """Download `image_url`; a URL that cannot be fetched is the upstream's fault (502)."""
    if not url.lower().startswith(("http://", "https://")):
        raise ApiError(400, 'Field "image_url" must start with http:// or https://, '
                            f"not {url[:60]!r}.")
    try:
        return images.fetch_url(url)
    except images.ImageInputError as err:
        if err.__cause__ is not None:  # the download itself failed (DNS, refused, 404, timeout)
            reason = type(err.__cause__).__name__
            raise ApiError(502, f"Could not fetch image_url {url} ({reason}): check that the URL "
                                "is public and serves an image.") from err
        raise ApiError(413, str(err)) from err


def image_from_request(req: PredictRequest) -> Image.Image:
    """The PIL image a request names; oversized images are refused before they are decoded."""
    if req.image is not None and req.image_url is not None:
        raise ApiError(400, 'Send either "image" or "image_url", not both.')
    if req.image is None and req.image_url is None:
        raise ApiError(400, f'Send "image" (base64 PNG or JPEG) or "image_url" (http/https), '
                            f"like {EXAMPLE}.")
    if req.image is not None:
        data, name = decode_base64_image(req.image), 'The "image" field'
    else:
        data, name = fetch_image_url(req.image_url), req.image_url
    try:
        return images.open_image_bytes(data, name=name)
    except images.ImageInputError as err:
        raise ApiError(422, str(err)) from err


def recognize(img: Image.Image) -> tuple[str, int]:
    """Text of an image and its number of lines (the same text as `TextRecognizer.predict`)."""
    lines = preprocess.line_arrays(img)  # preprocessing runs on the request's own thread
    texts = MODEL_THREAD.submit(RECOGNIZER.predict_lines, lines).result() if lines else []
    return "\n".join(texts), len(lines)


# --- the app ----------------------------------------------------------------------------------
ERRORS = {status: {"model": ErrorResponse} for status in (400, 404, 405, 413, 422, 500, 502)}
# strict_content_type=False: a body sent without a Content-Type header (curl --data-binary, which
# a Function URL then hands over base64-encoded) is still read as JSON.
app = FastAPI(title="Text recognizer", version=MODEL_VERSION, responses=ERRORS,
              description=f"POST {EXAMPLE} or {{\"image_url\": \"https://...\"}} to `/`.",
              strict_content_type=False)


@app.post("/", response_model=PredictResponse)
def predict(req: PredictRequest, request: Request) -> PredictResponse:
    """Read the text in one image."""
    start = time.perf_counter()
    img = image_from_request(req)
    try:
        text, n_lines = recognize(img)
    except Exception as err:  # noqa: BLE001 - a model failure must still answer in JSON
        raise ApiError(500, f"The model failed on this image ({type(err).__name__}): "
                            f"report request {request.state.request_id}.") from err
    request.state.text_chars = len(text)
    return PredictResponse(text=text, model_version=MODEL_VERSION, lines=n_lines,
                           latency_ms=round((time.perf_counter() - start) * 1000, 2))


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness check: the model is loaded."""
    return {"status": "ok", "model_version": MODEL_VERSION}


def error_response(status: int, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape of this API: {"error": "<one sentence>"}."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    request.state.error = exc.message
    return error_response(exc.status, exc.message)


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    method, path = request.method, request.url.path
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
    field = loc[1] if len(loc) > 1 else None
    content_type = request.headers.get("content-type", "")
    if kind == "missing" and field is None:
        return f"The request body is empty: send JSON like {EXAMPLE}."
    if kind == "json_invalid":
        return f"The request body is not valid JSON: send JSON like {EXAMPLE}."
    if field is None and content_type and "json" not in content_type:
        return (f"The body is {content_type.split(';')[0]}: send JSON with "
                "Content-Type: application/json.")
    if field is None:
        return f"The request body must be a JSON object like {EXAMPLE}."
    if kind == "extra_forbidden":
        return f'Unknown field "{field}": send only "image" or "image_url".'
    if kind == "string_type":
        return f'Field "{field}" must be a string, not {type(first.get("input")).__name__}.'
    return f'Field "{field}" is invalid: {first.get("msg", "check its value")}.'


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    message = validation_message(request, exc)
    request.state.error = message
    return error_response(400, message)


# --- one middleware: the 6 MB limit and one JSON log line per request ----------------------
def request_id(scope: dict[str, Any]) -> str:
    """Lambda's request id when there is one (context, then event), else a fresh one."""
    context, event = scope.get("aws.context"), scope.get("aws.event") or {}
    rid = getattr(context, "aws_request_id", None)
    rid = rid or (event.get("requestContext") or {}).get("requestId")
    return str(rid) if rid else uuid.uuid4().hex[:16]


def log_request(**fields: Any) -> None:
    """One JSON line on stdout (Lambda sends stdout to CloudWatch Logs)."""
    print(json.dumps(fields, ensure_ascii=False), flush=True)


class RequestGuard:
    """ASGI middleware: refuses bodies over MAX_BODY_BYTES with 413 before the app parses them,
    adds an x-request-id header, and logs status, latency, size and text length."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500
        state = scope.setdefault("state", {})
        state["request_id"] = rid = request_id(scope)

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        chunks, size, complete = [], 0, False
        while not complete:  # read the whole body, keeping at most MAX_BODY_BYTES of it
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= MAX_BODY_BYTES:
                chunks.append(chunk)
            complete = not message.get("more_body", False)
        try:
            if size > MAX_BODY_BYTES:
                state["error"] = (f"The request is {size:,} bytes, over Lambda's 6 MB "
                                  f"({MAX_BODY_BYTES:,} bytes) limit: send a smaller image.")
                await error_response(413, state["error"])(scope, receive, send_with_id)
            else:
                await self.app(scope, _replay(b"".join(chunks), receive), send_with_id)
        finally:
            log_request(request_id=rid, method=scope["method"], path=scope["path"], status=status,
                        latency_ms=round((time.perf_counter() - start) * 1000, 2), bytes=size,
                        text_chars=state.get("text_chars"), error=state.get("error"))


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


app.add_middleware(RequestGuard)


# --- the Lambda entry point -----------------------------------------------------------------
_mangum = Mangum(app, lifespan="off")


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


_loops = threading.local()  # one asyncio loop per thread that calls the handler, reused


def _run_mangum(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Mangum runs the app on the thread's current asyncio loop. Give it one of its own (after an
    asyncio.run() there is none), and inside a running loop (a Jupyter cell), a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # the usual case: Lambda, scripts, tests
        loop = getattr(_loops, "loop", None)
        if loop is None or loop.is_closed():
            loop = _loops.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        return _mangum(event, context)

    def in_new_loop() -> dict[str, Any]:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return _mangum(event, context)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(in_new_loop).result()


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """AWS Lambda entry point. Takes a Function URL event (payload 2.0) or, for a direct
    invocation, the request JSON itself; returns a Function URL response either way:
    {"statusCode", "headers", "body": "<JSON string>", "isBase64Encoded"}."""
    if not isinstance(event, dict):
        return lambda_error(400, f"The event must be a JSON object like {EXAMPLE}.")
    if "requestContext" not in event:  # direct invocation: the event is the request body
        event = direct_event(event, context)
    elif event.get("isBase64Encoded"):
        try:
            base64.b64decode(event.get("body") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            return lambda_error(400, "The event says isBase64Encoded but its body is not base64.")
    try:
        return _run_mangum(event, context)
    except Exception as err:  # noqa: BLE001 - a malformed event must not crash the function
        return lambda_error(400, f"The event is not a Function URL request ({type(err).__name__}): "
                                 f"send a Function URL event or a JSON object like {EXAMPLE}.")


# --- local service --------------------------------------------------------------------------
def start_background(args: list[str], ready_url: str, log: str | os.PathLike,
                     timeout: float = 120.0) -> subprocess.Popen:
    """Run `python -m ARGS...` in the background (output to the file `log`) and return once
    `ready_url` answers; stop it with `stop_background`. Used for the service and the UI."""
    package_root = str(Path(__file__).resolve().parents[1])  # this lab_code, installed or not
    paths = [package_root, os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(log).read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"`python -m {' '.join(args)}` exited with code {proc.returncode}: "
                               + " | ".join(tail))
        try:
            if requests.get(ready_url, timeout=2).status_code < 500:
                return proc
        except requests.RequestException:
            time.sleep(0.2)
    stop_background(proc)
    raise RuntimeError(f"`python -m {' '.join(args)}` did not answer at {ready_url} within "
                       f"{timeout:.0f} s: see {log}.")


def stop_background(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """Stop a process from `start_background` (SIGTERM, then SIGKILL) and return its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.serverless",
        description="Serve the Lambda backend's FastAPI app over HTTP with uvicorn, so it can be "
                    f"called like a Function URL: POST {EXAMPLE} to http://HOST:PORT/.",
        epilog=f"Environment: {MODEL_ENV} = a TorchScript model file to serve (default: bundled).",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if port_in_use(args.host, args.port):
        print(f"error: port {args.port} on {args.host} is already in use: stop the other server "
              "or pass another --port.", file=sys.stderr)
        return 1
    import uvicorn

    print(f"Serving model {MODEL_VERSION} on http://{args.host}:{args.port}/ "
          f"(POST JSON, GET /health, docs at /docs); Ctrl+C stops it.", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
