"""What the service tells about itself, in one object that the HTTP app calls at two places: the
guard, once per request (`request_started`, `request_finished`), and the predict route, once per
prediction (`prediction`). It hands each fact to whichever sinks are on: Prometheus metrics
(lab_code.serving.metrics), CloudWatch EMF lines in Lambda (lab_code.serving.emf), and the
prediction log (lab_code.serving.predictions), whose rows also feed the drift gauges
(lab_code.serving.drift).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lab_code.serving import metrics as metrics_mod
from lab_code.serving.emf import EmfWriter
from lab_code.serving.predictions import PredictionLog, open_store

DRIFT_PROFILE_ENV = "DRIFT_PROFILE"  # a reference profile to compare with (default: bundled)


@dataclass(frozen=True)
class WatchConfig:
    """Which sinks are on. `db`: a SQLite path or postgresql:// URL for the prediction log (None:
    no log); `profile`: the drift reference (None: the bundled one, "off": no drift gauges)."""

    prometheus: bool = True
    emf: bool = False
    db: str | None = None
    profile: str | None = None
    drift_window: int | None = None


class Watch:
    def __init__(self, config: WatchConfig | None = None) -> None:
        config = config or WatchConfig()
        self.config = config
        self.version: str | None = None
        self.routes: frozenset[str] = frozenset()
        store = open_store(config.db)
        self.prom: metrics_mod.PrometheusMetrics | None = None
        self.log = PredictionLog(store, on_drop=self._dropped) if store is not None else None
        self.drift = None
        if self.log is not None and config.profile != "off":
            from lab_code.serving.drift import WINDOW, DriftGauges, load_profile

            profile = load_profile(config.profile or os.environ.get(DRIFT_PROFILE_ENV) or None)
            self.drift = DriftGauges(self.log, profile, window=config.drift_window or WINDOW)
        if config.prometheus:
            self.prom = metrics_mod.PrometheusMetrics(extra=self.drift)
        self.emf = EmfWriter() if config.emf else None

    def _dropped(self, rows: int) -> None:
        if self.prom is not None:
            self.prom.dropped(rows)

    def ready(self, version: str, routes: Iterable[str]) -> None:
        """The model is loaded: which version answers, and which paths are routes."""
        self.version, self.routes = version, frozenset(routes)
        if self.prom is not None:
            self.prom.model(version)

    # --- the guard: every request ---------------------------------------------------------------
    def request_started(self) -> None:
        if self.prom is not None:
            self.prom.request_started()

    def request_finished(self, path: str, status: int, seconds: float,
                         state: dict[str, Any]) -> None:
        route = metrics_mod.route_of(path, self.routes)
        if self.prom is not None:
            self.prom.request_finished(route, status, seconds)
        if self.emf is not None:  # the version that answered (a rollout has two), else the one
            watched = state.get("watch")
            version = (watched or {}).get("model_version") or self.version
            self.emf.request(route, status, seconds, version, watched)

    def waiting(self, change: int) -> None:
        if self.prom is not None:
            self.prom.waiting(change)

    # --- the predict route: every prediction ----------------------------------------------------
    def prediction(self, state: dict[str, Any], *, prediction_id: str, source: str,
                   timings: dict[str, float], stats: dict[str, float],
                   scored: Sequence[tuple[str, float]], chars: int,
                   model_version: str | None = None) -> None:
        """One prediction: its stage timings and line confidences to the metrics, one row to the
        log, and the same facts kept in `state` for the request's EMF line. `model_version`: the
        version that answered, when it is not the one `ready` named (a canary, lesson 09)."""
        confidences = [c for _, c in scored]
        if self.prom is not None:
            self.prom.prediction(timings, confidences)
        version = model_version or self.version
        row = prediction_row(prediction_id, version, source, timings, stats, confidences, chars)
        if self.log is not None:
            self.log.write(row)
        if self.emf is not None:
            state["watch"] = {"confidences": confidences, "timings": timings,
                              "model_version": version,
                              "properties": {k: v for k, v in row.items()
                                             if v is not None and k != "model_version"}}

    # --- /metrics -------------------------------------------------------------------------------
    def exposition(self) -> tuple[bytes, str] | None:
        return self.prom.exposition() if self.prom is not None else None

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def lambda_watch() -> Watch:
    """What Lambda's entry watches: EMF lines on stdout, no /metrics (a public Function URL
    must not serve it, and CloudWatch collects the lines anyway), and a prediction log only
    where $WATCH_DB names one (a PostgreSQL that every instance shares: a SQLite file in an
    instance's /tmp goes when the instance does)."""
    from lab_code.serving.predictions import DB_ENV

    return Watch(WatchConfig(prometheus=False, emf=True, db=os.environ.get(DB_ENV) or None))


def prediction_row(prediction_id: str, version: str | None, source: str,
                   timings: dict[str, float], stats: dict[str, float],
                   confidences: Sequence[float], chars: int) -> dict[str, Any]:
    """A prediction log row: what the prediction was, never what it said."""
    row: dict[str, Any] = {
        "id": prediction_id, "time": time.time(), "model_version": version, "source": source,
        "lines": len(confidences), "chars": chars,
        "confidence": round(sum(confidences) / len(confidences), 4) if confidences else None,
        "min_confidence": round(min(confidences), 4) if confidences else None,
        **{k: stats.get(k)
           for k in ("width", "height", "bytes", "brightness", "contrast", "ink_share")},
    }
    for stage, ms in timings.items():
        row[f"ms_{stage}"] = round(ms, 3)
    return row
