"""The same load as lab_code.measuring.loadgen, sent by wrk (a load generator written in C), whose
own CPU use barely shows: on a 2-core machine a Python client at 64 connections takes much of a
core from the server it measures, and makes different ways of serving look closer than they are.

    python -m lab_code.measuring wrk http://127.0.0.1:8000/ --clients 64 --duration 10

Each connection sends the request bodies in turn (a Lua script rotates them), one request after
another on a keep-alive connection, like loadgen's clients; the result is a loadgen.LoadResult,
with the statuses counted by the script. It has no Server-Timing stages: wrk keeps one header of
a name, and the service sends two (its stages, then the app's total); loadgen reads both. Needs
the `wrk` command (Debian/Ubuntu: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from lab_code.measuring.loadgen import FAMILIES, REQUEST_TIMEOUT_S, LoadResult, realworld_bodies

# One environment per wrk thread: init() reads the bodies listed in the file given after "--"
# and builds every request once; response() counts statuses; done() adds the threads' counts up
# and prints one JSON line.
SCRIPT = r"""
local requests, n, threads = {}, 0, {}
counts = {}  -- a global: done() reads it from each thread with thread:get()

function setup(thread) table.insert(threads, thread) end

function init(args)
  for path in io.lines(args[1]) do
    local f = assert(io.open(path, "rb"))
    local body = f:read("*a")
    f:close()
    table.insert(requests, wrk.format("POST", wrk.path,
      {["Content-Type"] = "application/json"}, body))
  end
  n = math.random(#requests) - 1  -- connections start at different images
end

function request()
  n = n % #requests + 1
  return requests[n]
end

function response(status, headers, body)
  local key = tostring(status)
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests_)
  local all_counts = {}
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("counts")) do all_counts[k] = (all_counts[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(all_counts) do table.insert(parts, string.format('"%s": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {"duration_us": %d, "requests": %d, "statuses": {%s}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.duration, summary.requests, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


class WrkError(RuntimeError):
    """wrk is missing or could not measure; the message is one sentence."""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _run(url: str, listing: Path, script: Path, clients: int, seconds: float) -> dict:
    exe = wrk_path()
    if exe is None:
        raise WrkError("wrk is not installed: apt-get install wrk (Debian/Ubuntu), or use "
                       "lab_code.measuring.loadgen.")
    threads = max(1, min(clients, 2))
    cmd = [exe, "-t", str(threads), "-c", str(clients), "-d", f"{max(1, round(seconds))}s",
           "--timeout", f"{REQUEST_TIMEOUT_S:.0f}s", "-s", str(script), url, "--", str(listing)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("WRK-JSON ")]
    if done.returncode != 0 or not lines:
        said = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise WrkError(f"wrk could not load {url} ({said[0]}): is the service running?")
    return json.loads(lines[-1].removeprefix("WRK-JSON "))


def run_wrk(url: str, bodies: Sequence[bytes], clients: int = 16, duration_s: float = 10.0,
            warmup_s: float = 2.0) -> LoadResult:
    """`clients` connections send `bodies` in turn for `warmup_s` (not counted), then for
    `duration_s` (whole seconds: wrk's unit); latency percentiles cover every answer."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise ValueError(f"wrk targets plain http:// URLs here, not {url!r}.")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = []
        for i, body in enumerate(bodies):
            path = folder / f"body{i}.json"
            path.write_bytes(body)
            paths.append(str(path))
        listing = folder / "bodies.txt"
        listing.write_text("\n".join(paths) + "\n")
        script = folder / "rotate.lua"
        script.write_text(SCRIPT)
        if warmup_s > 0:
            _run(url, listing, script, clients, warmup_s)
        out = _run(url, listing, script, clients, duration_s)
    seconds = out["duration_us"] / 1e6
    statuses = {str(k): v for k, v in out["statuses"].items()}
    failed = sum(out["errors"].values())
    if failed:
        statuses["error"] = failed
    latency = {q: round(out[f"{q}_us"] / 1000, 2) for q in ("p50", "p95", "p99", "max")} \
        if out["requests"] else {}
    errors = [f"{kind}: {n}" for kind, n in out["errors"].items() if n]
    return LoadResult(url=url, clients=clients, duration_s=round(seconds, 3),
                      requests=out["requests"],
                      throughput_per_s=round(statuses.get("200", 0) / seconds, 2),
                      latency_ms=latency, statuses=statuses, errors=errors)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring wrk",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the service's URL, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--clients", type=int, nargs="+", default=[16], metavar="N",
                        help="concurrent connections, one run each (default: 16)")
    parser.add_argument("--duration", type=float, default=10.0, metavar="SECONDS",
                        help="measured seconds per run, whole (default: 10)")
    parser.add_argument("--warmup", type=float, default=2.0, metavar="SECONDS",
                        help="seconds of load before each run (default: 2)")
    parser.add_argument("--family", choices=FAMILIES, default="screenshot",
                        help="which real-world images to send (default: screenshot)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        bodies = realworld_bodies(family=None if args.family == "all" else args.family)
        for n in args.clients:
            print(run_wrk(args.url, bodies, n, args.duration, args.warmup).summary(), flush=True)
    except (WrkError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
