"""The recognizer behind LitServe, which batches on the server: requests that reach its worker
within --batch-timeout of each other (at most --max-batch-size) share one pass of the model.

    python -m lab_code.serving batching --port 8001   # POST {"image": "<base64 PNG>"} to /predict

It takes the course service's JSON (lab_code.serving.serverless) and answers with its sentences,
status codes and Server-Timing stages, plus `batch;desc=N` (the requests that shared the pass). What
LitServe 0.2.19's source says, and what this module does about it:

- max_batch_size and batch_timeout go to LitAPI (LitServer's are deprecated, gone in 0.3). The
  worker waits the whole batch_timeout to fill a batch, even for a lone request, polling its
  queue every millisecond (idle, ~0.1 core at 5 ms; at 0 it spins: a whole core); with
  max_batch_size 1 it calls predict per request and never calls batch or unbatch.
- LitServer(api, accelerator="cpu", workers_per_device=N, timeout=S); run(host, port) takes only
  the hosts 0.0.0.0, 127.0.0.1 and ::, ports 1024-65535, and writes a client.py into the current
  folder unless generate_client_file=False. Routes: POST /predict, GET /health (plain "ok"; the
  port opens once a worker is set up), GET /info, /docs.
- run() starts a Manager process (the queues), multiprocessing's resource tracker, and per worker
  one spawned inference process (it imports this module afresh and runs setup) and one forked
  uvicorn process. Ctrl+C stops them all; a SIGTERM ends only the first and leaves the others
  running on the port, so main() turns SIGTERM into Ctrl+C.
- An HTTPException raised in a hook reaches the caller as FastAPI's {"detail": ...} (handlers
  here make it {"error": ...}), but a batch runs in one try: an exception in decode_request or
  encode_response fails every request of the batch. So decode_request returns a refusal and
  encode_response answers it alone.
- `timeout` bounds only the time a request waits in the queue (504); nothing bounds how many
  wait (no 503), and max_payload_size is unset by default (no limit on a body): here
  lab_code.serving.RequestGuard refuses bodies over 6 MB, slow bodies, other hosts, other
  content types and unknown keys, as the service does, and uvicorn runs with the service's
  connection limits (lab_code.serving.connections: a deadline and a cap for headers).
- decode_request runs inside the inference loop, one request after another: while one image
  decodes, every request waits. So decoding runs in the service's worker processes
  (lab_code.serving.decoding), killed after DECODE_DEADLINE_S, and crafted files are refused from
  their bytes before that.

Importing litserve sets its logger's level and handler, so it is imported on first use of
RecognizerAPI or build_server, never by importing this module. `image_url` is refused: there is
no fetch policy here, and a download inside the one inference process would stall its batch.
"""
# No `from __future__ import annotations`: LitServe builds its route from decode_request's
# annotation (inspect.signature), which must be the request model itself, not a string.
import argparse
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lab_code import urlfetch
from lab_code.artifacts import model_version
from lab_code.recognizer import Recognizer, model_file, page_text
from lab_code.serving import connections, serverless
from lab_code.serving.errors import ApiError, error_response, validation_message
from lab_code.serving.guard import RequestGuard
from lab_code.serving.limits import ServiceLimits
from lab_code.serving.ports import in_use_message, port_in_use
from lab_code.serving.schemas import EXAMPLE, PredictRequest
from lab_code.threads import limit_children, serving_threads
from lab_code.timings import server_timing, stage

if TYPE_CHECKING:
    import litserve

API_PATH = "/predict"  # LitAPI's default route
MAX_BATCH_SIZE, BATCH_TIMEOUT_S, WORKERS = 16, 0.005, 1
QUEUE_TIMEOUT_S = ServiceLimits().deadline_s  # a request waits this long at most (504)
# one image's decoding and line finding, which hold up the whole inference loop (504 beyond)
DECODE_DEADLINE_S = 10.0
# LitServer.run takes only these (and "::", which lab_code.serving.ports' IPv4 check cannot test)
HOSTS = ("127.0.0.1", "0.0.0.0")
NO_URLS = ('This server reads only "image" (a base64 PNG or JPEG) and fetches no URLs: send the '
           "image's bytes instead.")
NO_IMAGE = f'Send "image" (a base64 PNG or JPEG), like {EXAMPLE}.'
INSTALL = 'LitServe is not installed: pip install litserve (or pip install -e ".[fast]").'


@dataclass
class Job:
    """One request inside the inference worker: its line arrays or the (status, sentence) it is
    refused with, where its time went, and once predicted its text and batch size."""

    lines: list[np.ndarray] = field(default_factory=list)
    error: tuple[int, str] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    text: str = ""
    batch: int = 0


def decode(request: PredictRequest, limits: ServiceLimits) -> Job:
    """The request's image as line arrays under the service's work limits, or its refusal."""
    job = Job()
    if request.image_url is not None:
        job.error = (400, NO_URLS)
    elif request.image is None:
        job.error = (400, NO_IMAGE)
    else:
        try:
            source, name = serverless.request_source(request)
            job.lines = serverless.request_lines(source, name, limits,
                                                 time.monotonic() + DECODE_DEADLINE_S,
                                                 timings=job.timings)
        except ApiError as err:
            job.error = (err.status, err.message)
        except TimeoutError:
            job.error = (504, f"The image took longer than {DECODE_DEADLINE_S:.0f} s to decode: "
                              "send a smaller image.")
    return job


def recognize(recognizer: Recognizer, jobs: list[Job]) -> list[Job]:
    """Every line of every job through ONE predict_lines call (that is the batching), the texts
    handed back to their jobs in order."""
    flat = [line for job in jobs for line in job.lines]
    timings: dict[str, float] = {}
    texts: list[str] = []
    if flat:
        with stage(timings, "model"):
            texts = recognizer.predict_lines(flat)
    at = 0
    for job in jobs:
        job.text = page_text(texts[at : at + len(job.lines)])
        at += len(job.lines)
        job.timings.update(timings)
        job.batch = len(jobs)
    return jobs


def answer(job: Job, version: str) -> JSONResponse:
    """The service's answer for one job: its JSON, or its one-sentence error, with Server-Timing."""
    timing = ", ".join(filter(None, [server_timing(job.timings),
                                     f"batch;desc={job.batch}"]))
    headers = {"server-timing": timing}
    if job.error is not None:
        status, message = job.error
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return JSONResponse({"text": job.text, "lines": len(job.lines), "model_version": version},
                        headers=headers)


def _api_class() -> type:
    """RecognizerAPI, made on first use (importing litserve changes its logger's settings)."""
    import litserve as ls

    class RecognizerAPI(ls.LitAPI):
        """The recognizer as LitServe's API: decode each request, run the batch's lines through
        the model together, answer each request with its own text."""

        def setup(self, device: str) -> None:
            self.recognizer = serverless.load_recognizer()  # $MODEL_PATH, else the bundled one
            serverless.warm_up(self.recognizer)
            self.version = model_version(self.recognizer.model_path)
            self.limits = ServiceLimits()

        # the annotation makes FastAPI read and check the JSON body, as the service does
        def decode_request(self, request: PredictRequest) -> Job:
            return decode(request, self.limits)

        def batch(self, inputs: list[Job]) -> list[Job]:
            return list(inputs)

        def predict(self, x: list[Job] | Job) -> list[Job] | Job:
            if self.max_batch_size == 1:  # LitServe's unbatched loop hands over one job
                return recognize(self.recognizer, [x])[0]
            return recognize(self.recognizer, x)

        def unbatch(self, output: list[Job]) -> list[Job]:
            return list(output)

        def encode_response(self, output: Job) -> JSONResponse:
            return answer(output, self.version)

    RecognizerAPI.__qualname__ = "RecognizerAPI"  # so that pickle finds it by its module's name
    RecognizerAPI.__module__ = __name__
    return RecognizerAPI


def recognizer_api() -> type:
    """The RecognizerAPI class (made once, on first use)."""
    if "RecognizerAPI" not in globals():
        globals()["RecognizerAPI"] = _api_class()
    return globals()["RecognizerAPI"]


def __getattr__(name: str):
    """`batching.RecognizerAPI` (how pickle finds the class in a worker) makes it on first use."""
    if name == "RecognizerAPI":
        return recognizer_api()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_api(max_batch_size: int = MAX_BATCH_SIZE, batch_timeout: float = BATCH_TIMEOUT_S):
    """A RecognizerAPI on /predict (its model loads in `setup`, in the inference process)."""
    with warnings.catch_warnings():  # batch and unbatch are there for max_batch_size > 1
        warnings.filterwarnings("ignore", "The LitServer has both batch and unbatch")
        return recognizer_api()(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                                api_path=API_PATH)


# --- errors as the service gives them: {"error": "<one sentence>"} ---------------------------
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    path = urlfetch.shown(request.url.path)
    if exc.status_code == 404:
        message = (f"Nothing at {path}: POST your JSON to {API_PATH} (and GET /health to check "
                   "the server).")
    elif exc.status_code == 405 and "POST" in (exc.headers or {}).get("Allow", "POST"):
        message = (f"{request.method} is not allowed on {path}: use POST with a JSON body like "
                   f"{EXAMPLE}.")
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {path}: POST your JSON to {API_PATH}."
    elif exc.status_code == 504:
        message = (f"The request waited more than {QUEUE_TIMEOUT_S:.0f} s for the model: try "
                   "again later.")
    elif exc.status_code >= 500:
        message = "Something went wrong on the server: see its log."
    else:
        message = str(exc.detail).rstrip(".") + "."
    return error_response(exc.status_code, message, headers=exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # (a body without Content-Type never gets here: RequestGuard answers it with 415)
    return error_response(400, validation_message(request, exc))


def build_server(max_batch_size: int = MAX_BATCH_SIZE, batch_timeout: float = BATCH_TIMEOUT_S,
                 workers: int = WORKERS,
                 allowed_hosts: tuple[str, ...] = ()) -> "litserve.LitServer":
    """A LitServer for the recognizer: batches of up to `max_batch_size` requests gathered for
    `batch_timeout` seconds, `workers` inference processes on the CPU, each with its own model
    and one torch thread; bodies over 6 MB refused, every error JSON with one sentence; host
    names besides IP addresses and localhost answered only when in `allowed_hosts`."""
    import litserve as ls

    limits = ServiceLimits(allowed_hosts=tuple(allowed_hosts))

    server = ls.LitServer(make_api(max_batch_size, batch_timeout), accelerator="cpu",
                          workers_per_device=workers, timeout=QUEUE_TIMEOUT_S,
                          # 6 MB, hosts, JSON only, body deadline, keys, JSON 500s, a log
                          middlewares=[(RequestGuard, {
                              "limits": limits, "fields": tuple(PredictRequest.model_fields)})])
    server.app.add_exception_handler(StarletteHTTPException, _http_error)
    server.app.add_exception_handler(RequestValidationError, _validation_error)
    server.uvicorn_graceful_timeout = 5  # seconds a stopping uvicorn process waits for its requests
    return server


# --- the command line -------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.serving batching",
        description="Serve the recognizer with LitServe, which batches requests on the server: "
                    f"POST {EXAMPLE} to http://HOST:PORT{API_PATH}.",
        epilog=f"Environment: {serverless.MODEL_ENV} = a model file to serve, .onnx or .pt "
               "(default: bundled). Needs LitServe: pip install litserve.",
    )
    parser.add_argument("--host", default="127.0.0.1", choices=HOSTS,
                        help="interface to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8001, help="TCP port, 1024-65535 "
                                                               "(default: 8001)")
    parser.add_argument("--max-batch-size", type=int, default=MAX_BATCH_SIZE, metavar="N",
                        help="requests that may share one pass of the model (default: "
                             f"{MAX_BATCH_SIZE}; 1 turns batching off)")
    parser.add_argument("--batch-timeout", type=float, default=BATCH_TIMEOUT_S, metavar="SECONDS",
                        help="how long a worker waits to fill a batch, even for one request "
                             f"(default: {BATCH_TIMEOUT_S}; 0 takes what is queued, but keeps a "
                             "core busy polling)")
    parser.add_argument("--allowed-hosts", nargs="+", default=[], metavar="NAME",
                        help="host names to answer to besides IP addresses and localhost (also "
                             "$LAB_ALLOWED_HOSTS); other names get 400")
    parser.add_argument("--workers", type=int, default=WORKERS, metavar="N",
                        help="inference processes, each with its own model and one torch thread, "
                             f"and as many HTTP processes (default: {WORKERS})")
    return parser


def _stop_on_sigterm() -> None:
    """LitServe shuts its processes down on KeyboardInterrupt (Ctrl+C); make SIGTERM (what
    lab_code.serving.processes, docker stop and systemd send) do the same in this process, and
    leave the processes it forks (uvicorn's, the Manager) with the default, which LitServe stops
    them by."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    os.register_at_fork(after_in_child=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


def check(args: argparse.Namespace) -> str | None:
    """The one sentence that says what is wrong with the settings, or None."""
    if not 1024 <= args.port <= 65535:
        return f"--port must be from 1024 to 65535 (LitServe takes no other), not {args.port}."
    if args.max_batch_size < 1 or args.workers < 1:
        return "--max-batch-size and --workers must be at least 1."
    if not 0 <= args.batch_timeout < QUEUE_TIMEOUT_S:
        return f"--batch-timeout must be from 0 to {QUEUE_TIMEOUT_S:.0f} seconds."
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = check(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        import litserve  # noqa: F401
    except ImportError:
        print(f"error: {INSTALL}", file=sys.stderr)
        return 1
    if port_in_use(args.host, args.port):
        print(f"error: {in_use_message(args.host, args.port)}", file=sys.stderr)
        return 1
    # the bundled ONNX file when onnxruntime is here, else TorchScript: what the service serves
    model_path = model_file(os.environ.get(serverless.MODEL_ENV) or None)
    if not model_path.is_file():
        print(f"error: No model file at {model_path}: run `make model` or set "
              f"{serverless.MODEL_ENV} to a .onnx or .pt model file.", file=sys.stderr)
        return 1
    os.environ[serverless.MODEL_ENV] = str(model_path)  # the spawned workers inherit it
    limit_children(serving_threads())  # and load torch, OpenMP, OpenBLAS with one thread each
    server = build_server(args.max_batch_size, args.batch_timeout, args.workers,
                          tuple(args.allowed_hosts))
    workers = f"{args.workers} worker{'s' if args.workers > 1 else ''}"
    print(f"Serving model {model_version(model_path)} on http://{args.host}:{args.port}{API_PATH} "
          f"with {workers}, batches of up to {args.max_batch_size} requests gathered for "
          f"{args.batch_timeout * 1000:g} ms (GET /health); Ctrl+C stops it.", flush=True)
    if args.batch_timeout == 0 and args.max_batch_size > 1:
        print("note: with --batch-timeout 0 LitServe's worker polls its queue without a pause, "
              "keeping a core busy even when no request comes.", flush=True)
    _stop_on_sigterm()
    try:
        server.run(host=args.host, port=args.port, log_level="warning",
                   generate_client_file=False, **connections.UVICORN_LIMITS)
    except KeyboardInterrupt:  # stopped while the workers were still loading
        pass
    except RuntimeError:  # LitServe's "One or more workers failed to start"
        print("error: The inference worker failed to start: see its traceback above.",
              file=sys.stderr)
        return 1
    finally:
        for proc in getattr(server, "inference_workers", []):  # none may outlive the server
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
