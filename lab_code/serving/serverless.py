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
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from lab_code import images, preprocess, urlfetch
from lab_code.artifacts import DEFAULT_MODEL_NAME, DEFAULT_REGISTRY, RegistryError
from lab_code.recognizer import RUNTIMES, Recognizer, load, page_text, runtime_of
from lab_code.serving import (
    corrections,
    decoding,
    metrics,
    model_source,
    predictions,
    rollout,
    runner,
)
from lab_code.serving.cache import ResultCache
from lab_code.serving.errors import ApiError, add_error_handlers
from lab_code.serving.guard import RequestGuard
from lab_code.serving.limits import Counter, ServiceLimits
from lab_code.serving.logs import log_request
from lab_code.serving.ports import in_use_message, port_in_use
from lab_code.serving.schemas import ERRORS, EXAMPLE, PredictRequest, PredictResponse
from lab_code.serving.watch import Watch, WatchConfig
from lab_code.serving.worker import DeadlinePassed, ModelWorker
from lab_code.threads import limit_children, serving_threads
from lab_code.timings import server_timing, stage

MODEL_ENV = "MODEL_PATH"  # environment variable: a model file (.onnx or .pt) to serve instead


def load_recognizer(model_path: str | os.PathLike | None = None,
                    optimize: bool = True, runtime: str = "auto") -> Recognizer:
    """The recognizer to serve: `model_path`, else $MODEL_PATH, else the bundled model (its ONNX
    file with onnxruntime when there, no torch needed; else TorchScript, frozen for the CPU at
    load unless `optimize` is false: lab_code.recognizer.load), checked first by
    lab_code.serving.model_source (the manifest beside it, $EXPECTED_MODEL_VERSION). Each model
    call runs on one thread (or $OMP_NUM_THREADS), on whichever thread calls it:
    lab_code.threads says why."""
    served = model_source.from_environment(model_path, runtime)
    recognizer = load(served.path, optimize=optimize, threads=serving_threads())
    recognizer.served = served  # which model this is, for /health
    return recognizer


def warm_up(recognizer: Recognizer, scored: bool = False) -> None:
    """One pass on a blank line: TorchScript optimizes the graph on its first calls, and
    onnxruntime sizes its buffers, so a cold start pays for it here, not the first request (the
    scored path too, when the service works out confidences)."""
    blank = [np.zeros((preprocess.HEIGHT, 4 * preprocess.HEIGHT), np.float32)]
    recognizer.predict_lines(blank)
    if scored:
        recognizer.predict_lines_scored(blank)



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


def decode_pool(limits: ServiceLimits) -> decoding.DecodePool:
    """The worker processes that decode this process's images (one pool per process, shared by
    every app it builds, started on first use): see lab_code.serving.decoding."""
    return decoding.shared_pool(limits.max_decoding, limits.decode_memory_mb, limits.decode_cpu_s)


def request_lines(source: bytes | str, name: str, limits: ServiceLimits,
                  deadline: float | None = None,
                  timings: dict[str, float] | None = None,
                  stats: dict[str, float] | None = None) -> list[np.ndarray]:
    """A request's image as line arrays, within the service's limits (images.lines_from, in
    one call): fetched here, decoded and split into lines in a worker process that is killed if
    `deadline` (time.monotonic(); default: the service's deadline from now) passes first
    (decoding.DecodeTimeout); ApiError with the status and sentence of whatever refused it.
    `stats`, when given, gets the decoded picture's statistics (lab_code.serving.inputs, taken
    in the worker; lesson 08)."""
    deadline = deadline or time.monotonic() + limits.deadline_s
    pool = decode_pool(limits)

    def in_a_worker(data: bytes, shown_as: str, work: images.WorkLimits,
                    stages: dict[str, float] | None) -> list[np.ndarray]:
        return pool.lines(data, shown_as, work, deadline, stages, stats)

    try:
        return images.lines_from(source, name=name, limits=limits.work,
                                 url_policy=limits.url_policy, timings=timings,
                                 decoder=in_a_worker)
    except images.ImageInputError as err:
        raise ApiError(err.status, str(err)) from err


def create_app(recognizer: Recognizer | None = None, *,
               model_path: str | os.PathLike | None = None,
               limits: ServiceLimits | None = None, optimize: bool = True,
               runtime: str = "auto", watch: Watch | None = None,
               registry: rollout.RegistrySource | None = None) -> FastAPI:
    """The backend's FastAPI app. Given a recognizer (Lambda, tests) it serves that one; without,
    its lifespan hook loads `model_path` (else $MODEL_PATH, else the bundled model, in `runtime`:
    load_recognizer) at startup and /health answers 503 until it is ready. Given a `registry`
    source, it serves the model that alias names and follows the registry from then on: a
    candidate beside it, promotions, rollbacks (lab_code.serving.rollout). With a `watch`
    (lab_code.serving.watch, lesson 08) it counts and times every request, logs every
    prediction, serves /metrics when Prometheus metrics are on and /corrections when a
    prediction log is."""
    limits = limits or ServiceLimits()
    watched = watch is not None  # confidences and input statistics are worked out only then
    state: dict[str, Any] = {"worker": ModelWorker(recognizer, scored=watched) if recognizer
                             else None, "cache": None}
    waiting, fetching = Counter(limits.max_waiting), Counter(limits.max_fetches)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        decode_pool(limits).start()  # the decoding workers start while the model loads
        if state["worker"] is None:
            if registry is not None:
                def warm_worker(path: Path) -> ModelWorker:
                    loaded = load_recognizer(path, optimize, registry.runtime)
                    warm_up(loaded, watched)
                    return ModelWorker(loaded, scored=watched)

                state["worker"] = await run_in_threadpool(rollout.start, registry, warm_worker)
            else:
                loaded = await run_in_threadpool(load_recognizer, model_path, optimize, runtime)
                await run_in_threadpool(warm_up, loaded, watched)
                state["worker"] = ModelWorker(loaded, scored=watched)
            await run_in_threadpool(decode_pool(limits).wait_ready)
            if watch is not None:
                watch.ready(state["worker"].version, [r.path for r in app.routes])
            recognizer_ = state["worker"].recognizer
            log_request(event="ready", pid=os.getpid(), model_version=state["worker"].version,
                        runtime=recognizer_.runtime)
        if limits.cache_entries > 0:
            state["cache"] = ResultCache(limits.cache_entries, state["worker"].version)
        try:
            yield
        finally:
            state["worker"].close()
            if watch is not None:
                watch.close()

    # strict_content_type=False: a body sent without a Content-Type header (curl --data-binary,
    # which a Function URL then hands over base64-encoded) is still read as JSON.
    app = FastAPI(title="Text recognizer", responses=ERRORS, lifespan=lifespan,
                  description=f"POST {EXAMPLE} or {{\"image_url\": \"https://...\"}} to `/`.",
                  strict_content_type=False)
    busy = {"Retry-After": str(limits.retry_after_s)}

    def prepare(req: PredictRequest, started: threading.Event, give_fetch,
                timings: dict[str, float],
                deadline: float,
                stats: dict[str, float] | None) -> tuple[list[np.ndarray], str | None, Any]:
        """The request's lines, and its cache key and cached (text, lines) when caching (an
        inline image only: what a URL names can change)."""
        started.set()
        try:  # a download's slot comes back when the reading really ends, not at the 504
            with stage(timings, "read"):
                source, name = request_source(req)
            if isinstance(source, bytes) and stats is not None:
                stats["bytes"] = len(source)
            cache: ResultCache | None = state["cache"]
            key = cache.key(source) if cache is not None and isinstance(source, bytes) else None
            hit = cache.get(key) if key is not None else None
            if hit is not None:
                return [], key, hit
            return request_lines(source, name, limits, deadline, timings, stats), key, None
        finally:
            give_fetch()

    @app.post("/", response_model=PredictResponse, response_model_exclude_none=True)
    async def predict(req: PredictRequest, request: Request,
                      response: Response) -> PredictResponse:
        """Read the text in one image."""
        start, deadline = time.perf_counter(), time.monotonic() + limits.deadline_s
        timings: dict[str, float] = {}
        stats: dict[str, float] | None = {} if watched else None
        worker: ModelWorker | None = state["worker"]
        if worker is None:
            raise ApiError(503, "The model is still loading: try again in a few seconds.", busy)
        if not waiting.take():
            raise ApiError(503, f"The service is busy ({limits.max_waiting} requests waiting): "
                                f"try again in {limits.retry_after_s} s.", busy)
        started, give_fetch = threading.Event(), lambda: None
        if watch is not None:
            watch.waiting(+1)
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
                    run_in_threadpool(prepare, req, started, give_fetch, timings, deadline,
                                      stats),
                    deadline - time.monotonic())
                scored: list[tuple[str, float | None]] = []
                answered_by = worker.version
                if lines:
                    job = worker.submit(lines, deadline, timings)
                    # a rollout names the model it routed this request to
                    answered_by = getattr(job, "model_version", answered_by)
                    try:
                        scored = await asyncio.wait_for(asyncio.wrap_future(job),
                                                        max(0.0, deadline - time.monotonic()))
                    finally:
                        job.cancel()  # still queued: the model never reads it
            except (TimeoutError, DeadlinePassed) as err:
                raise ApiError(504, f"The request took longer than {limits.deadline_s:.0f} s: "
                                    "send a smaller image or try again later.") from err
        finally:
            waiting.give()
            if watch is not None:
                watch.waiting(-1)
            if not started.is_set():  # the thread never ran: nothing else gives the slot back
                give_fetch()
        text = hit[0] if hit else page_text([t for t, _ in scored])
        count = hit[1] if hit else len(lines)
        if key is not None and hit is None:
            state["cache"].put(key, text, count)
        request.state.text_chars = len(text)
        latency_ms = (time.perf_counter() - start) * 1000
        response.headers["server-timing"] = server_timing(
            {**timings, "handler": latency_ms}) + (", cache;desc=hit" if hit else "")
        prediction_id = request.state.request_id
        if watch is not None:  # a cached answer has no confidence: only the model's are logged
            watch.prediction(request.scope["state"], prediction_id=prediction_id, source="api",
                             timings={**timings, "handler": latency_ms}, stats=stats,
                             scored=scored, chars=len(text), model_version=answered_by)
        logged = watch is not None and watch.log is not None
        response.headers["x-model-version"] = answered_by
        return PredictResponse(text=text, model_version=answered_by, lines=count,
                               latency_ms=round(latency_ms, 2),
                               prediction_id=prediction_id if logged else None)

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
        decoders = body["decoding"] = decode_pool(limits).health()
        stuck = worker.stuck_for()
        if stuck > limits.stuck_after_s:
            body["status"] = "unhealthy"
            body["error"] = f"One model call has run for {stuck:.0f} s: restart the service."
        elif decoders["longest_s"] > limits.stuck_after_s:
            body["status"] = "unhealthy"
            body["error"] = (f"One image has been decoding for {decoders['longest_s']:.0f} s: "
                             "restart the service.")
        elif "broken" in decoders:
            body["status"] = "unhealthy"
            body["error"] = f"No image can be decoded ({decoders['broken']}): restart the service."
        return JSONResponse(body, status_code=503 if body["status"] != "ok" else 200)

    if watch is not None and watch.prom is not None:
        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            """Prometheus' text format: every worker's counters and histograms, summed."""
            body, content_type = await run_in_threadpool(watch.exposition)
            return Response(body, media_type=content_type)

    if watch is not None and watch.log is not None:
        @app.post("/corrections", response_model=corrections.CorrectionResponse)
        async def correct(req: corrections.CorrectionRequest) -> corrections.CorrectionResponse:
            """Store a user's correction of one prediction: its image and the right text, with
            their consent."""
            return await run_in_threadpool(corrections.save_request, watch.log, req, limits.work)
    add_error_handlers(app)
    fields = {"/": tuple(PredictRequest.model_fields),  # the keys each POST route reads
              "/corrections": tuple(corrections.CorrectionRequest.model_fields)}
    app.add_middleware(RequestGuard, limits=limits, fields=fields, watch=watch)
    app.state.limits = limits
    app.state.worker = lambda: state["worker"]
    app.state.watch = watch
    if watch is not None and state["worker"] is not None:  # Lambda: no lifespan hook runs
        watch.ready(state["worker"].version, [r.path for r in app.routes])
    return app



# --- the local service: uvicorn, one process or several ---------------------------------------
def build_parser() -> argparse.ArgumentParser:
    defaults = ServiceLimits()
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.serving serverless",
        description="Serve the Lambda backend's FastAPI app over HTTP with uvicorn, so it can be "
                    f"called like a Function URL: POST {EXAMPLE} to http://HOST:PORT/.",
        epilog=f"Environment: {MODEL_ENV} = a model file to serve, .onnx or .pt (default: "
               "bundled); "
               f"{urlfetch.ALLOW_PRIVATE_ENV}=1 = the same as {urlfetch.ALLOW_PRIVATE_FLAG}.",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument(urlfetch.ALLOW_PRIVATE_FLAG, action="store_true",
                        help="let image_url reach this machine and private networks, for a "
                             "trusted local demo (default: public addresses only)")
    parser.add_argument("--allowed-hosts", nargs="+", default=[], metavar="NAME",
                        help="host names to answer to besides IP addresses and localhost, e.g. "
                             "the name of the machine or proxy in front (a leading dot allows "
                             "subdomains; also $LAB_ALLOWED_HOSTS, comma-separated); other names "
                             "get 400, so a web page cannot reach this server through DNS "
                             "rebinding")
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
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="which bundled file to serve: onnx (onnxruntime, no torch), "
                             "torchscript, or auto: onnx when it is there and onnxruntime is "
                             f"installed (default: auto; {MODEL_ENV} overrides it)")
    parser.add_argument("--no-optimize", dest="optimize", action="store_false",
                        help="TorchScript only: run the model as its file holds it, not frozen "
                             "for the CPU at load (lesson 07 compares the two)")
    watch = parser.add_argument_group("watching it (lesson 08)")
    watch.add_argument("--watch-db", default=os.environ.get(predictions.DB_ENV)
                       or str(predictions.default_db()), metavar="PATH_OR_URL",
                       help="the prediction log: a SQLite file, a postgresql:// URL, or off "
                            f"(default: ${predictions.DB_ENV}, else "
                            f"{predictions.default_db().name} in your data folder)")
    watch.add_argument("--no-metrics", dest="metrics", action="store_false",
                       help="serve no /metrics (default: Prometheus metrics at /metrics)")
    watch.add_argument("--drift-profile", default=None, metavar="FILE",
                       help="the reference profile the drift check compares with (default: the "
                            "one beside the bundled model; off: no drift figures)")
    watch.add_argument("--drift-window", type=int, default=None, metavar="N",
                       help="predictions the drift figures are made of (default: "
                            "lab_code.serving.drift.WINDOW)")
    release = parser.add_argument_group(
        "serving from the model registry (lesson 09); default: $MODEL_PATH, else the bundled "
        "model")
    release.add_argument("--model-alias", default=None, metavar="ALIAS",
                         help="serve the model this registry alias names (e.g. production) and "
                              "follow the registry: a candidate beside it, promotions, rollbacks "
                              "(each version's file in --runtime: its ONNX export when auto "
                              "finds one)")
    release.add_argument("--model-version", default=None, metavar="VN",
                         help="serve this exact registry version (e.g. v3), pinned")
    release.add_argument("--model-sha256", default=None, metavar="HEX",
                         help="with --model-version: refuse it unless the sha256 of the file it "
                              "serves starts with these hex digits (at least 12)")
    release.add_argument("--registry", default=str(DEFAULT_REGISTRY), metavar="DIR",
                         help="the local model registry (default: %(default)s)")
    release.add_argument("--model-name", default=DEFAULT_MODEL_NAME, metavar="NAME",
                         help="the model's name in the registry (default: %(default)s)")
    return parser


CONFIG_ENV = "LAB_SERVICE_CONFIG"  # how `main` hands its settings to uvicorn's worker processes
APP_FACTORY = "lab_code.serving.serverless:app_from_environment"
UVICORN_SETTINGS = {"log_level": "warning", "access_log": False, "timeout_graceful_shutdown": 5}


def uvicorn_settings() -> dict[str, Any]:
    """UVICORN_SETTINGS and the connection limits (header deadline and size, keep-alive, 503),
    imported here: they need uvicorn, which the Lambda image does not install."""
    from lab_code.serving import connections

    return {**UVICORN_SETTINGS, **connections.UVICORN_LIMITS}


def app_from_environment() -> FastAPI:
    """The app that each of uvicorn's worker processes builds (uvicorn's `factory=True`): its
    settings come from $LAB_SERVICE_CONFIG, which `main` writes, and its model from $MODEL_PATH."""
    config = json.loads(os.environ.get(CONFIG_ENV) or "{}")
    policy = urlfetch.UrlPolicy(allow_private=True if config.pop("allow_private", False) else None)
    optimize = bool(config.pop("optimize", True))
    hosts = tuple(config.pop("allowed_hosts", ()))
    runtime = config.pop("runtime", "auto")
    watch = config.pop("watch", None)
    source = config.pop("registry", None)
    return create_app(limits=replace(ServiceLimits(), url_policy=policy, allowed_hosts=hosts,
                                     **config), optimize=optimize, runtime=runtime,
                      watch=Watch(WatchConfig(**watch)) if watch else None,
                      registry=rollout.RegistrySource(**source) if source else None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if port_in_use(args.host, args.port):
        print(f"error: {in_use_message(args.host, args.port)}", file=sys.stderr)
        return 1
    if args.workers < 1 or args.cache < 0 or args.max_waiting < 1 or \
            (args.drift_window is not None and args.drift_window < 1):
        print("error: --workers, --max-waiting and --drift-window must be at least 1, and "
              "--cache at least 0.", file=sys.stderr)
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
    watch = WatchConfig(prometheus=args.metrics,
                        db=None if args.watch_db == predictions.OFF else args.watch_db,
                        profile=args.drift_profile, drift_window=args.drift_window)
    source = None
    try:  # a wrong model, a log that cannot be opened or a missing profile stops it at once
        if args.model_alias:
            source = rollout.RegistrySource(args.registry, args.model_name, args.model_alias,
                                            args.runtime)
            served = model_source.from_registry(args.model_name, alias=args.model_alias,
                                                registry_dir=args.registry, runtime=args.runtime)
        elif args.model_version:
            served = model_source.from_registry(args.model_name, version=args.model_version,
                                                registry_dir=args.registry,
                                                sha256=args.model_sha256, runtime=args.runtime)
            os.environ[model_source.EXPECTED_ENV] = served.sha256  # the workers check it too
        else:
            served = model_source.from_environment(runtime=args.runtime)
        Watch(replace(watch, prometheus=False)).close()
    except (RegistryError, OSError, RuntimeError, ValueError) as err:
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
        "allowed_hosts": args.allowed_hosts, "optimize": args.optimize,
        "runtime": args.runtime, "watch": asdict(watch),
        "registry": asdict(source) if source else None})
    workers = f"{args.workers} worker{'s' if args.workers > 1 else ''}"
    named = f", {served.name} {served.release}," if served.release else ""
    follows = f", following {args.model_name}:{args.model_alias}" if source else ""
    extras = ", metrics at /metrics" if args.metrics else ""
    extras += f", predictions logged to {watch.db}" if watch.db else ""
    print(f"Serving model {served.version} ({runtime_of(served.path)}){named} on "
          f"http://{args.host}:{args.port}/ with {workers}{follows} (POST JSON, GET /health, "
          f"docs at /docs{extras}); Ctrl+C stops it.", flush=True)
    # every worker writes its metrics to files here, and /metrics adds them up
    metrics_dir = metrics.fresh_multiprocess_dir() if args.metrics else None
    try:
        if args.workers > 1 and runner.can_share_port():
            return runner.serve_workers(args.host, args.port, args.workers, APP_FACTORY,
                                        uvicorn_settings())
        uvicorn.run(APP_FACTORY, factory=True, host=args.host, port=args.port,
                    workers=args.workers, **uvicorn_settings())
    finally:
        if metrics_dir is not None:
            metrics.remove_multiprocess_dir(metrics_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
