"""The dashboard of lesson 08, four panels over time: requests by status, p95 latency, the share of
lines read with low confidence, and input drift. They come from a real Prometheus (its
query_range API), or, where none runs (Colab), from /metrics itself, read every second with
prometheus_client's parser and turned into the same series here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

LOW = "0.9"  # the low-confidence bucket the LowConfidence alert reads (monitoring/rules.yml)
PANELS = {  # title -> PromQL ({w}: the rate window)
    "requests/s by status": 'sum by (status) (rate(ocr_requests_total{{route="/"}}[{w}]))',
    "p95 latency (s)": 'histogram_quantile(0.95, sum by (le) '
                       '(rate(ocr_request_seconds_bucket{{route="/"}}[{w}])))',
    "lines below 0.9 confidence": 'sum(rate(ocr_line_confidence_bucket{{le="0.9"}}[{w}]))'
                                  ' / sum(rate(ocr_line_confidence_count[{w}]))',
    "input drift (max PSI)": "max(ocr_input_drift_psi)",
}
Series = dict[str, dict[str, tuple[list[float], list[float]]]]  # panel -> line -> (t, values)


def from_prometheus(prom, start: float, end: float, window: str = "5s",
                    step: float = 1.0) -> Series:
    """The panels' series from Prometheus, times in seconds since `start`."""
    out: Series = {}
    for title, promql in PANELS.items():
        lines = {}
        for s in prom.query_range(promql.format(w=window), start, end, step):
            name = s["metric"].get("status", "value")
            t = [float(a) - start for a, _ in s["values"]]
            v = [float(b) for _, b in s["values"]]
            lines[name] = (t, v)
        out[title] = lines
    return out


# --- without Prometheus: read /metrics every second ------------------------------------------
def values(text: str) -> dict[str, Any]:
    """The numbers the panels need from one /metrics text (prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {"status": {}, "latency": {}, "low": 0.0, "lines": 0.0, "psi": None}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if s.name == "ocr_requests_total" and labels.get("route") == "/":
                out["status"][labels["status"]] = s.value
            elif s.name == "ocr_request_seconds_bucket" and labels.get("route") == "/":
                out["latency"][float(labels["le"])] = s.value
            elif s.name == "ocr_line_confidence_bucket" and float(labels["le"]) == float(LOW):
                out["low"] = s.value
            elif s.name == "ocr_line_confidence_count":
                out["lines"] = s.value
            elif s.name == "ocr_input_drift_psi":
                out["psi"] = max(out["psi"] or 0.0, s.value)
    return out


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """histogram_quantile for cumulative bucket counts {le: count}, as Prometheus computes it
    (linear within the bucket the rank falls in)."""
    les = sorted(buckets)
    total = buckets[les[-1]] if les else 0
    if total <= 0:
        return None
    rank, below, low = q * total, 0.0, 0.0
    for le in les:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return low
            return low + (le - low) * (rank - below) / max(count - below, 1e-12)
        below, low = count, le
    return low


class Sampler:
    """Reads `url` (a /metrics address) every `every_s` seconds on a thread, until stopped."""

    def __init__(self, url: str, every_s: float = 1.0) -> None:
        self.url, self.every_s = url, every_s
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)

    def _run(self) -> None:
        import requests

        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), values(requests.get(self.url, timeout=5).text)))
            except requests.RequestException:
                pass
            self._stop.wait(self.every_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def from_samples(samples: Sequence[tuple[float, dict[str, Any]]], start: float,
                 window_s: float = 5.0) -> Series:
    """The panels' series from /metrics samples: rates over the last `window_s` seconds, the
    way Prometheus' rate() would give them."""
    out: Series = {title: {} for title in PANELS}
    for i, (t, now) in enumerate(samples):
        j = i
        while j > 0 and t - samples[j - 1][0] <= window_s:
            j -= 1
        if j == i:
            continue
        t0, then = samples[j]
        span = max(t - t0, 1e-9)
        x = t - start
        for status, v in now["status"].items():
            out["requests/s by status"].setdefault(status, ([], []))
            out["requests/s by status"][status][0].append(x)
            out["requests/s by status"][status][1].append((v - then["status"].get(status, 0))
                                                          / span)
        delta = {le: v - then["latency"].get(le, 0) for le, v in now["latency"].items()}
        p95 = quantile(0.95, delta)
        lines = now["lines"] - then["lines"]
        for title, value in (("p95 latency (s)", p95),
                             ("lines below 0.9 confidence",
                              (now["low"] - then["low"]) / lines if lines > 0 else None),
                             ("input drift (max PSI)", now["psi"])):
            if value is not None:
                line = out[title].setdefault("value", ([], []))
                line[0].append(x)
                line[1].append(value)
    return out


def plot(series: Series, phases: Sequence[dict[str, Any]] = (),
         fired: dict[str, float] | None = None, thresholds: dict[str, float] | None = None):
    """Four panels over the day: phases shaded, thresholds dashed, alerts marked where they
    first fired (seconds since the day began)."""
    import matplotlib.pyplot as plt

    thresholds = thresholds or {"lines below 0.9 confidence": 0.08,
                                "input drift (max PSI)": 0.25, "p95 latency (s)": 2.0}
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(10, 9), sharex=True)
    for ax, title in zip(axes, PANELS, strict=True):
        for name, (t, v) in sorted(series.get(title, {}).items()):
            ax.plot(t, np.asarray(v, dtype=float), label=None if name == "value" else name)
        if title in thresholds:
            ax.axhline(thresholds[title], color="grey", linestyle="--", linewidth=1)
        for i, phase in enumerate(phases):
            if i % 2:
                ax.axvspan(phase["start"], phase["end"], color="grey", alpha=0.08)
        ax.set_ylabel(title, fontsize=9)
        if title == "requests/s by status" and series.get(title):
            ax.legend(fontsize=8, loc="upper left")
    for phase in phases:
        axes[0].text((phase["start"] + phase["end"]) / 2, 1.02, phase["name"], ha="center",
                     transform=axes[0].get_xaxis_transform(), fontsize=9)
    for name, at in (fired or {}).items():
        for ax in axes:
            ax.axvline(at, color="crimson", linewidth=0.8)
        axes[-1].text(at, 0.9, f" {name}", color="crimson", fontsize=8,
                      transform=axes[-1].get_xaxis_transform())
    axes[-1].set_xlabel("seconds into the replayed day")
    fig.tight_layout()
    return fig
