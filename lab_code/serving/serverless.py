"""The recognizer as a serverless HTTP backend: `create_app(recognizer)` builds the FastAPI app
that AWS Lambda runs through Mangum (`make_handler`, see `lab_code.serving.lambda_function`) and
that uvicorn serves locally, with the model loaded in the app's lifespan hook.

    python -m lab_code.serving serverless --port 8000   # POST {"image": "<base64 PNG>"} to /

It is built to face the public internet: `image_url` is fetched under lab_code.urlfetch's policy,
every image is held to work limits before the model runs, each request has a deadline (504),
requests waiting for the model are bounded (503 with Retry-After beyond), bodies over 6 MB are
refused from their Content-Length (413), /health answers at once and says whether the model is
loaded, and every error, expected or not, is JSON with one sentence.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from lab_code import images, preprocess, urlfetch
from lab_code.artifacts import DEFAULT_MODEL_NAME, DEFAULT_REGISTRY, RegistryError
from lab_code.recognizer import TextRecognizer, page_text
from lab_code.serving import model_source, rollout, runner
from lab_code.serving.cache import ResultCache
from lab_code.serving.errors import ApiError, add_error_handlers
from lab_code.serving.guard import RequestGuard
from lab_code.serving.lambda_adapter import make_handler  # noqa: F401 - the Lambda entry uses it
from lab_code.serving.limits import Counter, ServiceLimits
from lab_code.serving.logs import log_request
from lab_code.serving.ports import in_use_message, port_in_use
from lab_code.serving.schemas import ERRORS, EXAMPLE, PredictRequest, PredictResponse
from lab_code.serving.worker import DeadlinePassed, ModelWorker
from lab_code.threads import limit_children, serving_threads
from lab_code.timings import server_timing, stage

MODEL_ENV = "MODEL_PATH"  # environment variable: a TorchScript file to serve instead of the bundled


def load_recognizer(model_path: str | os.PathLike | None = None,
                    optimize: bool = True) -> TextRecognizer:
    """The recognizer to serve: `model_path`, else $MODEL_PATH, else the bundled model, checked
    by lab_code.serving.model_source (its manifest, $EXPECTED_MODEL_VERSION) before it loads;
    frozen for the CPU at load unless `optimize` is false. Each model call runs on one torch
    thread (or $OMP_NUM_THREADS), on whichever thread calls it: lab_code.threads says why."""
    served = model_source.from_environment(model_path)
    recognizer = TextRecognizer(served.path, optimize=optimize, threads=serving_threads())
    recognizer.served = served  # which model this is, for /health
    return recognizer


def warm_up(recognizer: TextRecognizer) -> None:
    """One pass on a blank line: TorchScript optimizes the graph on its first calls, so a cold
    start pays for it here rather than in the first request."""
    recognizer.predict_lines([np.zeros((preprocess.HEIGHT, 4 * preprocess.HEIGHT), np.float32)])


def _warm(recognizer: TextRecognizer) -> TextRecognizer:
    warm_up(recognizer)
    return recognizer



def request_source(req: PredictRequest) -> tuple[bytes | str, str]:
    """What a request's image is (its bytes, or the URL to fetch them from) and a name for it in
    messages; ApiError (400) when the request names none, both, or bad base64."""
    if req.image is not None and req.image_url is not None:
        raise ApiError(400, 'Send either "image" or "image_url", not both.')
    if req.image is None and req.image_url is None:
        raise ApiError(400, f'Send "image" (base64 PNG or JPEG) or "image_url" (http/https), '
                            f"like {EXAMPLE}.")
    if req.image_url is not None:
        return req.image_url, urlfetch.shown(req.image_url)
    try:
        return images.decode_base64(req.image, 'Field "image"'), 'The "image" field'
    except images.ImageInputError as err:
        raise ApiError(err.status, str(err)) from err


def request_lines(source: bytes | str, name: str, limits: ServiceLimits,
                  gate: threading.Semaphore | None = None,
                  timings: dict[str, float] | None = None) -> list[np.ndarray]:
    """A request's image as line arrays, within the service's limits (images.lines_from, in
    one call); ApiError with the status and sentence of whatever refused it."""
    try:
        return images.lines_from(source, name=name, limits=limits.work,
                                 url_policy=limits.url_policy, gate=gate, timings=timings)
    except images.ImageInputError as err:
        raise ApiError(err.status, str(err)) from err


def create_app(recognizer: TextRecognizer | None = None, *,
               model_path: str | os.PathLike | None = None,
               limits: ServiceLimits | None = None, optimize: bool = True,
               registry: rollout.RegistrySource | None = None) -> FastAPI:
    """The backend's FastAPI app. Given a recognizer (Lambda, tests) it serves that one; without,
    its lifespan hook loads `model_path` (else $MODEL_PATH, else the bundled model; frozen for
    the CPU unless `optimize` is false) at startup and /health answers 503 until it is ready.
    Given a `registry` source, it serves the model that alias names and follows the registry
    from then on: a candidate beside it, promotions, rollbacks (lab_code.serving.rollout)."""
    limits = limits or ServiceLimits()
    state: dict[str, Any] = {"worker": ModelWorker(recognizer) if recognizer else None,
                             "cache": None}
    waiting, fetching = Counter(limits.max_waiting), Counter(limits.max_fetches)
    decoding = threading.BoundedSemaphore(limits.max_decoding)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if state["worker"] is None and registry is not None:
            state["worker"] = await run_in_threadpool(
                rollout.start, registry, lambda path: ModelWorker(
                    _warm(load_recognizer(path, optimize))))
            log_request(event="ready", pid=os.getpid(), model_version=state["worker"].version)
        elif state["worker"] is None:
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
        """The request's lines, and its cache key and cached (text, lines) when caching (an
        inline image only: what a URL names can change)."""
        started.set()
        try:  # a download's slot comes back when the reading really ends, not at the 504
            with stage(timings, "read"):
                source, name = request_source(req)
            cache: ResultCache | None = state["cache"]
            key = cache.key(source) if cache is not None and isinstance(source, bytes) else None
            hit = cache.get(key) if key is not None else None
            if hit is not None:
                return [], key, hit
            return request_lines(source, name, limits, decoding, timings), key, None
        finally:
            give_fetch()

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
                answered_by = worker.version
                if lines:
                    job = worker.submit(lines, deadline, timings)
                    # a rollout names the model it routed this request to
                    answered_by = getattr(job, "model_version", answered_by)
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
        response.headers["x-model-version"] = answered_by
        return PredictResponse(text=text, model_version=answered_by, lines=count,
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
                "waiting": waiting.value, **rollout.health_fields(worker)}
        if state["cache"] is not None:
            cache = state["cache"]
            body["cache"] = {"entries": len(cache), "hits": cache.hits, "misses": cache.misses}
        stuck = worker.stuck_for()
        if stuck > limits.stuck_after_s:
            body["status"] = "unhealthy"
            body["error"] = f"One model call has run for {stuck:.0f} s: restart the service."
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    add_error_handlers(app)
    app.add_middleware(RequestGuard)
    app.state.limits = limits
    app.state.worker = lambda: state["worker"]
    return app



# --- the local service: uvicorn, one process or several ---------------------------------------
def build_parser() -> argparse.ArgumentParser:
    defaults = ServiceLimits()
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.serving serverless",
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
    parser.add_argument("--workers", type=int, default=runner.default_workers(), metavar="N",
                        help="server processes, each with its own copy of the model and one "
                             "torch thread (default: one per CPU core, at most "
                             f"{runner.MAX_DEFAULT_WORKERS}: here {runner.default_workers()})")
    parser.add_argument("--cache", type=int, default=defaults.cache_entries, metavar="N",
                        help="keep the texts of the last N distinct images per worker and answer "
                             "a repeat without the model (default: 0, off; see ResultCache for "
                             "when it is safe)")
    parser.add_argument("--no-optimize", dest="optimize", action="store_false",
                        help="run the model as its file holds it, not frozen for the CPU at load "
                             "(lesson 07 compares the two)")
    release = parser.add_argument_group(
        "serving from the model registry (lesson 09); default: $MODEL_PATH, else the bundled "
        "model")
    release.add_argument("--model-alias", default=None, metavar="ALIAS",
                         help="serve the model this registry alias names (e.g. production) and "
                              "follow the registry: a candidate beside it, promotions, rollbacks")
    release.add_argument("--model-version", default=None, metavar="VN",
                         help="serve this exact registry version (e.g. v3), pinned")
    release.add_argument("--model-sha256", default=None, metavar="HEX",
                         help="with --model-version: refuse it unless its sha256 starts with "
                              "these hex digits (at least 12)")
    release.add_argument("--registry", default=str(DEFAULT_REGISTRY), metavar="DIR",
                         help="the local model registry (default: %(default)s)")
    release.add_argument("--model-name", default=DEFAULT_MODEL_NAME, metavar="NAME",
                         help="the model's name in the registry (default: %(default)s)")
    return parser


CONFIG_ENV = "LAB_SERVICE_CONFIG"  # how `main` hands its settings to uvicorn's worker processes
APP_FACTORY = "lab_code.serving.serverless:app_from_environment"
UVICORN_SETTINGS = {"log_level": "warning", "access_log": False, "timeout_graceful_shutdown": 5}


def app_from_environment() -> FastAPI:
    """The app that each of uvicorn's worker processes builds (uvicorn's `factory=True`): its
    settings come from $LAB_SERVICE_CONFIG, which `main` writes, and its model from $MODEL_PATH."""
    config = json.loads(os.environ.get(CONFIG_ENV) or "{}")
    policy = urlfetch.UrlPolicy(allow_private=True if config.pop("allow_private", False) else None)
    optimize = bool(config.pop("optimize", True))
    source = config.pop("registry", None)
    return create_app(limits=replace(ServiceLimits(), url_policy=policy, **config),
                      optimize=optimize,
                      registry=rollout.RegistrySource(**source) if source else None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if port_in_use(args.host, args.port):
        print(f"error: {in_use_message(args.host, args.port)}", file=sys.stderr)
        return 1
    if args.workers < 1 or args.cache < 0 or args.max_waiting < 1:
        print("error: --workers and --max-waiting must be at least 1, and --cache at least 0.",
              file=sys.stderr)
        return 2
    if args.model_alias and (args.model_version or args.cache):
        print("error: --model-alias follows the registry, so it goes with neither "
              "--model-version (a pinned version) nor --cache (a cached answer would outlive a "
              "promotion).", file=sys.stderr)
        return 2
    if args.model_sha256 and not args.model_version:
        print("error: --model-sha256 checks the version --model-version names: give both.",
              file=sys.stderr)
        return 2
    source = None
    try:  # the model is checked here, once, so that a wrong one stops the service at once
        if args.model_alias:
            source = rollout.RegistrySource(args.registry, args.model_name, args.model_alias)
            served = model_source.from_registry(args.model_name, alias=args.model_alias,
                                                registry_dir=args.registry)
        elif args.model_version:
            served = model_source.from_registry(args.model_name, version=args.model_version,
                                                registry_dir=args.registry,
                                                sha256=args.model_sha256)
            os.environ[model_source.EXPECTED_ENV] = served.sha256  # the workers check it too
        else:
            served = model_source.from_environment()
    except (RegistryError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    import uvicorn

    # the worker processes load torch, OpenMP and OpenBLAS with one thread each (or what the
    # environment already says); this process's own model thread is set by load_recognizer
    limit_children(serving_threads())
    os.environ[MODEL_ENV] = str(served.path)
    os.environ[CONFIG_ENV] = json.dumps({
        "deadline_s": args.deadline, "max_waiting": args.max_waiting,
        "cache_entries": args.cache, "allow_private": args.allow_private_urls,
        "optimize": args.optimize, "registry": asdict(source) if source else None})
    workers = f"{args.workers} worker{'s' if args.workers > 1 else ''}"
    named = f" ({served.name} {served.release})" if served.release else ""
    follows = f", following {args.model_name}:{args.model_alias}" if source else ""
    print(f"Serving model {served.version}{named} on http://{args.host}:{args.port}/ with "
          f"{workers}{follows} (POST JSON, GET /health, docs at /docs); Ctrl+C stops it.",
          flush=True)
    if args.workers > 1 and runner.can_share_port():
        return runner.serve_workers(args.host, args.port, args.workers, APP_FACTORY,
                                    UVICORN_SETTINGS)
    uvicorn.run(APP_FACTORY, factory=True, host=args.host, port=args.port, workers=args.workers,
                **UVICORN_SETTINGS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
