"""The service's metrics: their names, in one table (`METRICS`), and the Prometheus side of them.

Every name here is a contract: Prometheus scrapes them from /metrics, the alerting rules in
monitoring/rules.yml and lesson 09's canary read them, and in Lambda the same names go out as
CloudWatch Embedded Metric Format lines (lab_code.serving.emf). Rename one and those break.

| name | kind | labels | what it answers |
|---|---|---|---|
| ocr_requests_total | counter | route, status | how many requests, of which kind, ended how |
| ocr_request_seconds | histogram | route | how long the whole request took (p50, p95) |
| ocr_stage_seconds | histogram | stage | where a prediction's time went (Server-Timing stages) |
| ocr_requests_in_flight | gauge | | requests being handled right now |
| ocr_requests_waiting | gauge | | predictions admitted and not yet answered (back-pressure) |
| ocr_refusals_total | counter | status, reason | requests refused on purpose (413...504) |
| ocr_model_info | gauge (=1) | version | which model answers |
| ocr_line_confidence | histogram | | how sure the model was of each line it read |
| ocr_input_drift_psi | gauge | statistic | how far recent inputs are from the reference profile |
| ocr_input_drift_window | gauge | | how many recent predictions the drift figure is made of |
| ocr_prediction_log_dropped_total | counter | | log rows lost because the writer fell behind |

Several worker processes share one port (lab_code.serving.runner): each writes its metrics to
files in $PROMETHEUS_MULTIPROC_DIR and /metrics adds them up (prometheus_client's multiprocess
mode). That variable must be set before prometheus_client is first imported, so this module
imports it only when metrics are made.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0)
CONFIDENCE_BUCKETS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)
# why a status is a refusal: what the service said no to, on purpose
REFUSALS = {413: "too_large", 415: "unsupported_type", 422: "unreadable_or_too_much_work",
            503: "busy", 504: "deadline"}
STAGES = ("read", "decode", "lines", "queue", "model", "handler")  # lab_code.timings' names


@dataclass(frozen=True)
class Metric:
    """One metric: its name (as Prometheus shows it), kind, labels, help text and EMF unit."""

    name: str
    kind: str  # counter, histogram or gauge
    help: str
    labels: tuple[str, ...] = ()
    unit: str = "None"  # CloudWatch's unit when it goes out as EMF
    buckets: tuple[float, ...] = ()


METRICS = {m.name: m for m in (
    Metric("ocr_requests_total", "counter", "HTTP requests answered, by route and status.",
           ("route", "status"), "Count"),
    Metric("ocr_request_seconds", "histogram", "Time to answer a whole request, in seconds.",
           ("route",), "Seconds", SECONDS_BUCKETS),
    Metric("ocr_stage_seconds", "histogram",
           "Time a prediction spent in each stage (read, decode, lines, queue, model, handler).",
           ("stage",), "Seconds", SECONDS_BUCKETS),
    Metric("ocr_requests_in_flight", "gauge", "Requests being handled right now."),
    Metric("ocr_requests_waiting", "gauge",
           "Predictions admitted and not yet answered (503 beyond the limit)."),
    Metric("ocr_refusals_total", "counter", "Requests refused on purpose, by status and reason.",
           ("status", "reason"), "Count"),
    Metric("ocr_model_info", "gauge", "The model that answers (always 1), by version.",
           ("version",)),
    Metric("ocr_line_confidence", "histogram",
           "The model's confidence in each line it read (mean best-path probability).",
           (), "None", CONFIDENCE_BUCKETS),
    Metric("ocr_input_drift_psi", "gauge",
           "Population stability index of recent inputs against the reference profile.",
           ("statistic",)),
    Metric("ocr_input_drift_window", "gauge",
           "Recent predictions the drift figures are computed from."),
    Metric("ocr_prediction_log_dropped_total", "counter",
           "Prediction log rows dropped because the writer fell behind.", (), "Count"),
)}


def route_of(path: str, routes: Iterable[str]) -> str:
    """The route label for a request path: the path itself when the app serves it, else "other"
    (a label per arbitrary path would let any caller create unbounded time series)."""
    return path if path in routes else "other"


def multiprocess_dir() -> Path | None:
    """The folder that worker processes write their metrics to, when one is set."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def fresh_multiprocess_dir() -> Path:
    """Set $PROMETHEUS_MULTIPROC_DIR for this process and the workers it starts: an empty folder
    (its files from an earlier run removed, as prometheus_client asks), a new temp one if unset.
    Call it before any worker imports prometheus_client."""
    folder = multiprocess_dir()
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="lab-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.db"):
        old.unlink()
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def remove_multiprocess_dir(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def mark_dead(pid: int) -> None:
    """A worker process ended: drop its live gauges (in flight, waiting, model) from the sums.
    Its counters and histograms stay: the requests it answered still happened."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class PrometheusMetrics:
    """The metrics of one app, made with prometheus_client. In multiprocess mode (the variable
    set before prometheus_client was imported) values go to files that `exposition` sums over
    every worker; otherwise they live in this object's own registry, so that several apps in one
    process (tests, a notebook) never share or clash."""

    def __init__(self, extra: Callable[[], Iterable[Any]] | None = None) -> None:
        import prometheus_client as pc
        from prometheus_client import values

        self._pc = pc
        self.registry = pc.CollectorRegistry()
        self.multiprocess = multiprocess_dir() is not None
        if self.multiprocess and values.ValueClass is values.MutexValue:
            raise RuntimeError(f"{MULTIPROC_ENV} was set after prometheus_client was imported: "
                               "set it before the worker processes start.")
        self.extra = extra  # more metric families, computed at each scrape (the drift gauges)
        made = {}
        for m in METRICS.values():
            if m.name in ("ocr_input_drift_psi", "ocr_input_drift_window"):
                continue  # computed at scrape time from the prediction log
            kwargs: dict[str, Any] = {"labelnames": m.labels, "registry": self.registry}
            if m.kind == "histogram":
                made[m.name] = pc.Histogram(m.name, m.help, buckets=m.buckets, **kwargs)
            elif m.kind == "counter":
                made[m.name] = pc.Counter(m.name, m.help, **kwargs)
            else:  # a worker that ends takes its gauge values with it (mark_dead)
                mode = "livemax" if m.name == "ocr_model_info" else "livesum"
                made[m.name] = pc.Gauge(m.name, m.help, multiprocess_mode=mode, **kwargs)
        self.m = made

    # --- what the service calls ----------------------------------------------------------------
    def request_started(self) -> None:
        self.m["ocr_requests_in_flight"].inc()

    def request_finished(self, route: str, status: int, seconds: float) -> None:
        self.m["ocr_requests_in_flight"].dec()
        self.m["ocr_requests_total"].labels(route=route, status=str(status)).inc()
        self.m["ocr_request_seconds"].labels(route=route).observe(seconds)
        if status in REFUSALS:
            self.m["ocr_refusals_total"].labels(status=str(status),
                                                reason=REFUSALS[status]).inc()

    def waiting(self, change: int) -> None:
        self.m["ocr_requests_waiting"].inc(change)

    def model(self, version: str) -> None:
        self.m["ocr_model_info"].labels(version=version).set(1)

    def prediction(self, timings: dict[str, float], confidences: Iterable[float]) -> None:
        for stage, ms in timings.items():
            if stage in STAGES:
                self.m["ocr_stage_seconds"].labels(stage=stage).observe(ms / 1000)
        for conf in confidences:
            self.m["ocr_line_confidence"].observe(conf)

    def dropped(self, rows: int = 1) -> None:
        self.m["ocr_prediction_log_dropped_total"].inc(rows)

    # --- what /metrics answers ----------------------------------------------------------------
    def exposition(self) -> tuple[bytes, str]:
        """The text Prometheus scrapes, and its content type: every worker's values summed (in
        multiprocess mode), plus the families `extra` computes now."""
        pc = self._pc
        registry = self.registry
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = pc.CollectorRegistry()  # a fresh one per scrape, as the docs ask
            multiprocess.MultiProcessCollector(registry)
        if self.extra is not None:
            scrape = pc.CollectorRegistry()
            extra = self.extra
            scrape.register(_Both(registry, extra))
            registry = scrape
        return pc.generate_latest(registry), pc.CONTENT_TYPE_LATEST


class _Both:
    """A collector that yields a registry's families and then the extra ones."""

    def __init__(self, registry, extra: Callable[[], Iterable[Any]]) -> None:
        self.registry, self.extra = registry, extra

    def collect(self):
        yield from self.registry.collect()
        yield from self.extra()
