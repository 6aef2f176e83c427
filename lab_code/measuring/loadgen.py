"""A load generator for the recognizer's HTTP service: N clients, each sending one request after
another on its own keep-alive connection, for a fixed time; it reports throughput, latency
percentiles, status codes and, from each answer's Server-Timing header, where the time went.

    python -m lab_code.measuring loadgen http://127.0.0.1:8000/ --clients 64 --duration 10

Each request carries a different image in turn (the real-world set's lines by default), so a
result cache cannot flatter the numbers. It speaks plain HTTP/1.1 over asyncio streams: a few
microseconds of its own CPU per request, which matters when client and server share two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FAMILIES = ("screenshot", "unseen_font", "phone", "paragraph", "all")  # of the real-world set
REQUEST_TIMEOUT_S = 60.0  # one request, connect to last byte; beyond, it counts as an error
MAX_RETRY_AFTER_S = 5.0  # the longest a client waits after a 503, whatever Retry-After says


@dataclass
class LoadResult:
    """What a load run measured, over its measured window (after the warm-up)."""

    url: str
    clients: int
    duration_s: float
    requests: int  # answers received in the window, whatever their status
    throughput_per_s: float  # answers with status 200 per second
    latency_ms: dict[str, float]  # p50, p95, p99, max of the 200 answers
    statuses: dict[str, int]  # status code -> count ("error" for a failed connection)
    stages_ms: dict[str, float] = field(default_factory=dict)  # mean Server-Timing per stage
    errors: list[str] = field(default_factory=list)  # the first few connection errors
    cpu: dict[str, float] = field(default_factory=dict)  # cores used, when the caller counts them

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        lat = self.latency_ms
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (f"{self.clients:>4} clients: {self.throughput_per_s:7.1f} req/s, p50 "
                f"{lat.get('p50', float('nan')):7.1f} ms, p95 {lat.get('p95', float('nan')):7.1f}"
                f" ms ({codes})")


def image_body(path: str | Path) -> bytes:
    """The service's JSON request for one image file: {"image": "<base64>"}."""
    data = Path(path).read_bytes()
    return json.dumps({"image": base64.b64encode(data).decode("ascii")}).encode()


def realworld_bodies(limit: int | None = None, family: str | None = None) -> list[bytes]:
    """Request bodies for the real-world test set's images (tests/data/realworld of a clone)."""
    root = Path(__file__).resolve().parents[2] / "tests" / "data" / "realworld"
    labels = root / "labels.json"
    if not labels.is_file():
        raise FileNotFoundError(f"No real-world set at {root}: pass --images, or run from a "
                                "clone of the repository.")
    records = json.loads(labels.read_text(encoding="utf-8"))
    chosen = [r for r in records if family is None or r["family"] == family][:limit]
    return [image_body(root / r["file"]) for r in chosen]


def parse_server_timing(value: str) -> dict[str, float]:
    """`read;dur=0.4, model;dur=2.3, cache;desc=hit` -> {"read": 0.4, "model": 2.3}."""
    out: dict[str, float] = {}
    for part in value.split(","):
        name, *params = [p.strip() for p in part.split(";")]
        for param in params:
            if param.startswith("dur="):
                try:
                    out[name] = out.get(name, 0.0) + float(param[4:])
                except ValueError:
                    pass
    return out


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": round(statistics.median(ordered), 2), "p95": at(0.95), "p99": at(0.99),
            "max": round(ordered[-1], 2)}


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode("ascii") + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b"\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            key = key.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


def retry_after(headers: dict[str, str], default: float = 1.0) -> float:
    """The seconds a 503's Retry-After header asks for (at most MAX_RETRY_AFTER_S)."""
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(headers.get("retry-after", default))))
    except ValueError:  # an HTTP date: not worth parsing here
        return default


async def _load(url: str, bodies: Sequence[bytes], clients: int, duration_s: float,
                warmup_s: float, honor_retry_after: bool = True) -> LoadResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url} is not an http:// URL: the load generator speaks plain HTTP.")
    host, port, path = parts.hostname, parts.port or 80, parts.path or "/"
    try:
        _, probe = await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)
        probe.close()
    except (OSError, TimeoutError) as err:
        raise ConnectionError(f"Nothing answers at {host}:{port} ({type(err).__name__}): start "
                              "the service first (python -m lab_code.serving serverless).") from err
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    stages: dict[str, list[float]] = {}
    errors: list[str] = []

    async def client(index: int) -> None:
        conn, sent = Connection(host, port, path), 0
        try:
            while time.perf_counter() < stop_at:
                body = bodies[(index + sent * clients) % len(bodies)]
                sent += 1
                began = time.perf_counter()
                try:
                    status, headers, _ = await asyncio.wait_for(conn.post(body),
                                                                REQUEST_TIMEOUT_S)
                except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError,
                        TimeoutError) as err:
                    await conn.close()
                    if began >= measure_from and time.perf_counter() <= stop_at:
                        statuses["error"] += 1
                        if len(errors) < 5:
                            errors.append(f"{type(err).__name__}: {err}")
                    await asyncio.sleep(0.05)
                    continue
                ended = time.perf_counter()
                if measure_from <= began and ended <= stop_at:
                    statuses[str(status)] += 1
                    if status == 200:
                        latencies.append((ended - began) * 1000)
                        timing = parse_server_timing(headers.get("server-timing", ""))
                        for name, ms in timing.items():
                            stages.setdefault(name, []).append(ms)
                if status == 503:  # busy: wait as the service asks (or a little), then go on
                    wait = retry_after(headers) if honor_retry_after else 0.01
                    await asyncio.sleep(max(0.0, min(wait, stop_at - time.perf_counter())))
        finally:
            await conn.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    ok = statuses.get("200", 0)
    return LoadResult(url=url, clients=clients, duration_s=duration_s,
                      requests=sum(statuses.values()),
                      throughput_per_s=round(ok / duration_s, 2),
                      latency_ms=percentiles(latencies), statuses=dict(statuses),
                      stages_ms={k: round(statistics.fmean(v), 3) for k, v in stages.items()},
                      errors=errors)


def run_load(url: str, bodies: Sequence[bytes], clients: int = 16, duration_s: float = 10.0,
             warmup_s: float = 2.0, honor_retry_after: bool = True) -> LoadResult:
    """Send `bodies` in turn from `clients` concurrent clients for warmup_s + duration_s seconds
    and measure the last duration_s. A client told 503 waits as its Retry-After header says, as
    a well-behaved client does (`honor_retry_after=False`: 10 ms, a flood). Works in a script
    and in a notebook (its own thread)."""
    if not bodies:
        raise ValueError("No request bodies to send.")
    if clients < 1 or duration_s <= 0 or warmup_s < 0:
        raise ValueError("clients must be at least 1, duration positive and warm-up not negative.")
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(_load(url, bodies, clients, duration_s, warmup_s,
                                              honor_retry_after))
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name="loadgen")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.measuring loadgen",
        description="Load the recognizer's HTTP service with concurrent clients and report "
                    "throughput, latency percentiles, statuses and Server-Timing stages.")
    parser.add_argument("url", help="the service's POST URL, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--clients", type=int, nargs="+", default=[16], metavar="N",
                        help="concurrent clients; several values run one after another "
                             "(default: 16)")
    parser.add_argument("--duration", type=float, default=10.0, metavar="SECONDS",
                        help="measured seconds per run (default: 10)")
    parser.add_argument("--warmup", type=float, default=2.0, metavar="SECONDS",
                        help="seconds of load before measuring (default: 2)")
    parser.add_argument("--images", type=Path, nargs="+", default=None, metavar="FILE",
                        help="image files to send in turn (default: a family of the "
                             "real-world set, see --family)")
    parser.add_argument("--family", default="screenshot", choices=FAMILIES,
                        help="without --images, which of the real-world set's families to send "
                             "(default: screenshot, one line of browser text per image)")
    parser.add_argument("--ignore-retry-after", action="store_true",
                        help="after a 503, retry within 10 ms instead of waiting as the "
                             "Retry-After header asks (a flood, not a polite client)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the results as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        family = None if args.family == "all" else args.family
        bodies = ([image_body(p) for p in args.images] if args.images
                  else realworld_bodies(family=family))
        results = []
        for clients in args.clients:
            result = run_load(args.url, bodies, clients, args.duration, args.warmup,
                              honor_retry_after=not args.ignore_retry_after)
            print(result.summary(), flush=True)
            if result.statuses.get("error") and result.errors:
                print(f"  connection errors, first: {result.errors[0]}", flush=True)
            results.append(result.to_dict())
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if all(r["statuses"].get("error", 0) == r["requests"] for r in results):
        print(f"error: no answer from {args.url}: is the service running (python -m "
              "lab_code.serving.serverless)?", file=sys.stderr)
        return 1
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
