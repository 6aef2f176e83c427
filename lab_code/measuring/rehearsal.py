"""Rehearse a release against a running service: concurrent clients send requests for a while and
record, for every answer, when it came, its status and the model version that produced it; the
release's moves (start a canary, promote, roll back) run at set times meanwhile. What comes back
is a timeline to check and to draw: each model's share of the answers second by second, failures,
and when each move took effect.

    python -m lab_code.measuring rehearsal http://127.0.0.1:8000/ --clients 32 --duration 30

(From the command line it only sends and records; the lesson and the tests pass the moves.)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lab_code.measuring.loadgen import REQUEST_TIMEOUT_S, Connection, realworld_bodies


@dataclass(frozen=True)
class Answer:
    sent: float  # seconds since the rehearsal started, when the request was sent
    t: float  # ... when the answer arrived
    status: int  # HTTP status; 0 when the connection failed
    version: str | None  # the model_version the service names (x-model-version)
    ms: float  # round trip


@dataclass
class Timeline:
    answers: list[Answer] = field(default_factory=list)
    moves: list[tuple[float, str]] = field(default_factory=list)  # (t, what) of each move done
    errors: list[str] = field(default_factory=list)  # the first few connection errors
    health: list[tuple[float, dict]] = field(default_factory=list)  # (t, /health) samples

    def failed(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]

    def sent_between(self, start: float, end: float) -> list[Answer]:
        """The answers to the requests sent in [start, end): a request is routed when it
        arrives, and may be answered seconds later when the service is busy."""
        return [a for a in self.answers if start <= a.sent < end]

    def shares(self, start: float = 0.0, end: float = float("inf")) -> dict[str, float]:
        """Each version's share of the 200 answers to requests sent in [start, end)."""
        counts = collections.Counter(a.version for a in self.sent_between(start, end)
                                     if a.status == 200)
        total = sum(counts.values())
        return {v: n / total for v, n in counts.most_common()} if total else {}

    def per_second(self) -> dict[str, list[int]]:
        """Answers per version in each whole second (for a stacked plot)."""
        if not self.answers:
            return {}
        seconds = int(max(a.t for a in self.answers)) + 1
        out: dict[str, list[int]] = {}
        for a in self.answers:
            key = a.version if a.status == 200 else f"failed ({a.status})"
            out.setdefault(key, [0] * seconds)[int(a.t)] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"answers": len(self.answers), "failed": len(self.failed()),
                "shares": self.shares(), "moves": self.moves, "errors": self.errors}


Move = tuple[float, str, Callable[[], Any]]  # (at second, what, do it)


async def _drive(url: str, bodies: Sequence[bytes], clients: int, duration_s: float,
                 timeline: Timeline, started: float) -> None:
    parts = urllib.parse.urlsplit(url)
    host, port, path = parts.hostname, parts.port or 80, parts.path or "/"
    stop_at = started + duration_s

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
                    status, headers = 0, {}
                    if len(timeline.errors) < 5:
                        timeline.errors.append(f"{type(err).__name__}: {err}")
                now = time.perf_counter()
                timeline.answers.append(Answer(round(began - started, 4),
                                               round(now - started, 4), status,
                                               headers.get("x-model-version"),
                                               round((now - began) * 1000, 2)))
                if status in (0, 503):
                    await asyncio.sleep(0.05)
        finally:
            await conn.close()

    await asyncio.gather(*(client(i) for i in range(clients)))


def rehearse(url: str, bodies: Sequence[bytes] | None = None, clients: int = 32,
             duration_s: float = 30.0, moves: Sequence[Move] = (),
             health_every_s: float | None = None) -> Timeline:
    """Send `bodies` in turn from `clients` clients for `duration_s` seconds, running each move's
    function at its second (on a thread of its own, so the clients never wait for it), and with
    `health_every_s`, reading the service's /health that often (the rollout's records)."""
    bodies = list(bodies) if bodies is not None else realworld_bodies(family="screenshot")
    if not bodies or clients < 1 or duration_s <= 0:
        raise ValueError("Give some request bodies, at least one client and a positive duration.")
    timeline = Timeline()
    started = time.perf_counter()
    done = threading.Event()

    def run_moves() -> None:
        for at, what, action in sorted(moves, key=lambda m: m[0]):
            if done.wait(max(0.0, started + at - time.perf_counter())):
                return
            action()
            timeline.moves.append((round(time.perf_counter() - started, 3), what))

    def sample_health() -> None:
        import requests

        health_url = urllib.parse.urljoin(url, "health")
        while not done.wait(health_every_s):
            try:
                body = requests.get(health_url, timeout=5).json()
            except (requests.RequestException, ValueError):
                continue
            timeline.health.append((round(time.perf_counter() - started, 3), body))

    mover = threading.Thread(target=run_moves, name="moves", daemon=True)
    sampler = threading.Thread(target=sample_health, name="health", daemon=True)
    box: dict[str, BaseException] = {}

    def load() -> None:
        try:
            asyncio.run(_drive(url, bodies, clients, duration_s, timeline, started))
        except BaseException as err:  # handed to the caller
            box["error"] = err

    loader = threading.Thread(target=load, name="rehearsal")
    mover.start()
    if health_every_s:
        sampler.start()
    loader.start()
    loader.join()
    done.set()
    mover.join(5)
    if health_every_s:
        sampler.join(10)
    if "error" in box:
        raise box["error"]
    return timeline


def plot(timeline: Timeline, names: dict[str, str] | None = None, ax=None):
    """Answers per second by model version, stacked, with the moves marked: the panel of a
    rollout. `names` maps versions to labels (e.g. "v2 (candidate)")."""
    import matplotlib.pyplot as plt

    names = names or {}
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.2))
    series = timeline.per_second()
    bottom = [0] * max((len(v) for v in series.values()), default=0)
    for version, counts in sorted(series.items(), key=lambda kv: -sum(kv[1])):
        ax.bar(range(len(counts)), counts, bottom=bottom, width=1.0, align="edge",
               label=names.get(version, version))
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    for t, what in timeline.moves:
        ax.axvline(t, color="black", lw=1, ls="--")
        ax.text(t, max(bottom, default=1) * 1.02, f" {what}", fontsize=8, rotation=0,
                va="bottom")
    ax.set_xlabel("seconds")
    ax.set_ylabel("answers per second")
    ax.legend(loc="lower right", fontsize=8)
    return ax


def candidate_records(timeline: Timeline) -> list[tuple[float, str, dict]]:
    """(t, candidate release, its record) from each /health sample that had a candidate."""
    out = []
    for t, body in timeline.health:
        candidate = (body.get("rollout") or {}).get("candidate")
        if candidate:
            out.append((t, candidate.get("release") or candidate["version"], candidate))
    return out


def plot_candidate(timeline: Timeline, rules: dict[str, float] | None = None, ax=None):
    """The candidate's disagreement, error rate and confidence drop over time, as /health
    reported them, with the rule's limits dashed: the panel a rollback is decided on."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.2))
    records = candidate_records(timeline)
    production = {t: (b.get("rollout") or {}).get("production", {}) for t, b in timeline.health}
    ts = [t for t, _, _ in records]
    series = {
        "disagreement": [r["disagreement"] for _, _, r in records],
        "error rate": [r["error_rate"] for _, _, r in records],
        "confidence drop": [max(0.0, (production[t].get("confidence") or 0) - r["confidence"])
                            if r.get("confidence") is not None else float("nan")
                            for t, _, r in records],
    }
    limits = {"disagreement": "max_disagreement", "error rate": "max_error_rate",
              "confidence drop": "max_confidence_drop"}
    for (label, values), color in zip(series.items(), ("C0", "C3", "C2"), strict=True):
        ax.plot(ts, values, marker=".", label=label, color=color)
        if rules and limits[label] in rules:
            ax.axhline(rules[limits[label]], color=color, ls=":", lw=1)
    for t, _ in timeline.moves:
        ax.axvline(t, color="black", lw=1, ls="--")
    ax.set_xlabel("seconds")
    ax.set_ylabel("share / drop")
    ax.legend(loc="upper right", fontsize=8)
    return ax


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring rehearsal",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the service's POST URL, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (32)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (30)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        timeline = rehearse(args.url, clients=args.clients, duration_s=args.duration)
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(timeline.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
