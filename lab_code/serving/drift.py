"""Input drift: how far the inputs of the last few hundred predictions are from the model's
reference profile, one population stability index (PSI) per statistic of lab_code.serving.inputs.

The reference profile ships beside the model (lab_code/artifacts/reference_profile.json, made by
`python -m lab_code.measuring reference` from the training and real-world sets and stamped with
the model's sha256). Its baseline is cut into bins at its own quantiles, so each bin holds the
same share of the reference; PSI = sum over bins of (p_now - p_ref) * ln(p_now / p_ref). A common
rule of thumb, a convention rather than a standard: below 0.1 stable, 0.1-0.25 moderate, above
0.25 a shift worth a look. /metrics computes it from the prediction log at each scrape
(`ocr_input_drift_psi`), and the drift report computes the same figure from the same rows.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lab_code.serving.inputs import DRIFT_STATS

PROFILE_FILE = "reference_profile.json"
EPSILON = 1e-4  # an empty bin counts as this share (ln(0) has no value)
PSI_ALERT = 0.25  # monitoring/rules.yml alerts above this
WINDOW = 300  # predictions the drift figures are made of
MIN_WINDOW = 100  # fewer than this: no figure (a handful of images says nothing)


def bundled_profile_path() -> Path:
    """The reference profile that ships beside the bundled model."""
    return Path(str(resources.files("lab_code").joinpath("artifacts", PROFILE_FILE)))


def load_profile(path: str | os.PathLike | None = None) -> dict[str, Any]:
    path = Path(path) if path is not None else bundled_profile_path()
    if not path.is_file():
        raise FileNotFoundError(f"No reference profile at {path}: make one with `python -m "
                                "lab_code.measuring reference`.")
    return json.loads(path.read_text())


def quantile_bins(values: Sequence[float], bins: int) -> tuple[list[float], list[float]]:
    """Inner bin edges at the reference's quantiles (ties merged), and the reference's share in
    each of the len(edges) + 1 bins."""
    ref = np.asarray(values, dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    shares = histogram(ref, edges)
    return [float(e) for e in edges], [float(s) for s in shares]


def histogram(values: Sequence[float], edges: Sequence[float]) -> np.ndarray:
    """The share of `values` in each bin; a bin is (edge_i-1, edge_i], the last one open."""
    values = np.asarray(values, dtype=float)
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="left"),
                         minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(ref_shares: Sequence[float], values: Sequence[float], edges: Sequence[float]) -> float:
    """Population stability index of `values` against a reference's bin shares."""
    ref = np.clip(np.asarray(ref_shares, dtype=float), EPSILON, None)
    now = np.clip(histogram(values, edges), EPSILON, None)
    return float(np.sum((now - ref) * np.log(now / ref)))


def drift(profile: dict[str, Any], rows: Sequence[dict[str, Any]],
          stats: Iterable[str] = DRIFT_STATS) -> dict[str, float]:
    """PSI per statistic of `rows` (prediction log rows) against the profile's baseline."""
    base = profile["baseline"]
    out = {}
    for stat in stats:
        values = [r[stat] for r in rows if r.get(stat) is not None]
        if stat in base["edges"] and values:
            out[stat] = round(psi(base["shares"][stat], values, base["edges"][stat]), 4)
    return out


class DriftGauges:
    """The drift metric families for /metrics: PSI per statistic over the last `window`
    predictions in the log, recomputed at most every `every_s` seconds."""

    def __init__(self, log, profile: dict[str, Any], window: int = WINDOW,
                 min_window: int = MIN_WINDOW, every_s: float = 1.0) -> None:
        min_window = min(min_window, window)
        self.log, self.profile = log, profile
        self.window, self.min_window, self.every_s = window, min_window, every_s
        self._lock = threading.Lock()
        self._at, self._value = 0.0, ({}, 0)

    def current(self) -> tuple[dict[str, float], int]:
        """(PSI per statistic, rows used); no figures below min_window rows."""
        with self._lock:
            if time.monotonic() - self._at >= self.every_s:
                rows = self.log.recent(self.window, columns=("time", *DRIFT_STATS))
                figures = drift(self.profile, rows) if len(rows) >= self.min_window else {}
                self._at, self._value = time.monotonic(), (figures, len(rows))
            return self._value

    def __call__(self):
        from prometheus_client.core import GaugeMetricFamily

        from lab_code.serving.metrics import METRICS

        figures, rows = self.current()
        m = METRICS["ocr_input_drift_psi"]
        family = GaugeMetricFamily(m.name, m.help, labels=m.labels)
        for stat, value in sorted(figures.items()):
            family.add_metric([stat], value)
        yield family
        m = METRICS["ocr_input_drift_window"]
        yield GaugeMetricFamily(m.name, m.help, value=rows)
