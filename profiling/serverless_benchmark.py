"""What does serving over HTTP cost? Times the same image three ways: `predict` in this process,
the Lambda `handler` in this process (FastAPI + Mangum, no network), and an HTTP round trip to the
local service (`python -m lab_code.serving serverless`), then writes p50/p95 latencies as JSON.

    python profiling/serverless_benchmark.py                      # 50 requests each
    python profiling/serverless_benchmark.py --requests 200 --url http://127.0.0.1:8000/

Without --url it starts the local service on a free port and stops it at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's lab_code, whether it is installed or not
DEFAULT_OUT = ROOT / "profiling" / "results" / "serverless_overhead.json"
DEFAULT_IMAGE = ROOT / "lab_code" / "assets" / "examples" / "line_sans.png"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, like numpy's default."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def timed_interleaved(fns: dict[str, Callable[[], object]], n: int,
                      warmup: int) -> dict[str, list[float]]:
    """Milliseconds of n calls of each function, taken in turns (a, b, c, a, b, c, ...) so that
    a busy spell of the machine slows them all alike; `warmup` untimed rounds first."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            out[name].append((time.perf_counter() - start) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(ms, 50), 2), "p95_ms": round(percentile(ms, 95), 2),
            "mean_ms": round(statistics.fmean(ms), 2), "n": len(ms)}


def run(image: Path, n: int, warmup: int, url: str | None) -> dict:
    from lab_code.images import load_image
    from lab_code.serving import lambda_function as lam  # loads the model once, like a cold start
    from lab_code.serving.lambda_adapter import direct_event
    from lab_code.serving.ports import free_port
    from lab_code.serving.processes import start_background, stop_background

    img = load_image(image)
    payload = {"image": base64.b64encode(image.read_bytes()).decode()}
    event = direct_event(payload)
    proc = None
    if url is None:
        port = free_port()
        log = Path(tempfile.gettempdir()) / "serverless_benchmark.log"
        url = f"http://127.0.0.1:{port}/"
        proc = start_background(["lab_code.serving", "serverless", "--port", str(port)],
                                url + "health", log)
    server_ms: list[float] = []
    try:
        with requests.Session() as session, open(os.devnull, "w") as devnull:

            def post() -> None:
                resp = session.post(url, json=payload, timeout=60)
                resp.raise_for_status()
                server_ms.append(resp.json()["latency_ms"])

            def handler() -> None:
                with contextlib.redirect_stdout(devnull):  # its JSON log line, not the table
                    lam.handler(event)

            ms = timed_interleaved({
                "predict (in process)": lambda: lam.RECOGNIZER.predict(img),
                "handler (in process: Mangum + FastAPI)": handler,
                "HTTP round trip (requests -> uvicorn)": post,
            }, n, warmup)
    finally:
        if proc is not None:
            stop_background(proc)
    rows = {name: summary(values) for name, values in ms.items()}
    rows["endpoint only (latency_ms in the response)"] = summary(server_ms[warmup:])
    base, http = rows["predict (in process)"], rows["HTTP round trip (requests -> uvicorn)"]
    return {
        "what": "latency of one text-line image: in-process predict vs the serverless API",
        "image": image.name,
        "image_bytes": image.stat().st_size,
        "requests": n,
        "warmup": warmup,
        "http_overhead_p50_ms": round(http["p50_ms"] - base["p50_ms"], 2),
        "http_overhead_p95_ms": round(http["p95_ms"] - base["p95_ms"], 2),
        "results": rows,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "os": platform.system(), "arch": platform.machine()},
        "model_version": lam.app.state.worker().version,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def table(result: dict) -> str:
    lines = [f"{'':42} {'p50 ms':>9} {'p95 ms':>9}"]
    for name, row in result["results"].items():
        lines.append(f"{name:42} {row['p50_ms']:9.1f} {row['p95_ms']:9.1f}")
    lines.append(f"{'HTTP overhead over predict':42} {result['http_overhead_p50_ms']:9.1f} "
                 f"{result['http_overhead_p95_ms']:9.1f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python profiling/serverless_benchmark.py",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50, help="timed calls per way (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE,
                        help="the image to send (default: the bundled line_sans.png example)")
    parser.add_argument("--url", default=None,
                        help="a running service to call (default: start one on a free port)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON results file (default: {DEFAULT_OUT.relative_to(ROOT)})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.requests < 2:
        print("error: --requests must be at least 2 to compute percentiles.", file=sys.stderr)
        return 2
    if not args.image.is_file():
        print(f"error: no image at {args.image}: pass --image PATH.", file=sys.stderr)
        return 1
    try:
        result = run(args.image, args.requests, args.warmup, args.url)
    except (RuntimeError, requests.RequestException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
