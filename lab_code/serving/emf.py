"""The service's metrics in AWS Lambda: CloudWatch Embedded Metric Format (EMF) lines on stdout,
under the same names as /metrics (lab_code.serving.metrics.METRICS). Lambda sends stdout to
CloudWatch Logs, and CloudWatch turns each EMF line into metrics, with no API call and no agent.

One line is one JSON object: an `_aws` object (`Timestamp` in milliseconds, and
`CloudWatchMetrics`: directives, each a `Namespace`, `Dimensions` (sets of root keys) and
`Metrics` (names and units of root members)) beside the values themselves. A label becomes a
dimension, and a root member holds one value per name, so a request's stage latencies (label
`stage`) go out as one small line per stage. Every distinct dimension value is a billed custom
metric: ids and input statistics are plain properties, never dimensions (searchable with Logs
Insights, which makes the line the Lambda twin of a prediction log row).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from lab_code.serving.metrics import METRICS, REFUSALS, STAGES

NAMESPACE_ENV = "EMF_NAMESPACE"
DEFAULT_NAMESPACE = "TextRecognizer"
# from the EMF specification and AWS' EMF client libraries (checked December 2026)
UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes",
         "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits",
         "Percent", "Count", "Bytes/Second", "Kilobytes/Second", "Megabytes/Second",
         "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second",
         "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None"}
MAX_DIMENSIONS, MAX_METRICS, MAX_VALUES = 30, 100, 100
NAMESPACE = re.compile(r"^[a-zA-Z0-9._#:/-]{1,256}$")


def _directive(namespace: str, dimensions: list[list[str]], names: Sequence[str]) -> dict:
    return {"Namespace": namespace, "Dimensions": dimensions,
            "Metrics": [{"Name": n, "Unit": METRICS[n].unit} for n in names]}


def request_lines(route: str, status: int, seconds: float, version: str | None = None,
                  prediction: dict[str, Any] | None = None, namespace: str = DEFAULT_NAMESPACE,
                  now_ms: int | None = None) -> list[dict[str, Any]]:
    """The EMF documents for one request: its count, latency and (when refused) refusal; for a
    prediction, its line confidences and one document per stage latency."""
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    root: dict[str, Any] = {"route": route, "status": str(status),
                            "ocr_requests_total": 1, "ocr_request_seconds": round(seconds, 6)}
    directives = [_directive(namespace, [["route", "status"]], ["ocr_requests_total"]),
                  _directive(namespace, [["route"]], ["ocr_request_seconds"])]
    if status in REFUSALS:
        root.update(reason=REFUSALS[status], ocr_refusals_total=1)
        directives.append(_directive(namespace, [["status", "reason"]], ["ocr_refusals_total"]))
    docs = []
    prediction = prediction or {}
    if version:
        root["model_version"] = version
    confidences = [round(c, 4) for c in prediction.get("confidences", [])][:MAX_VALUES]
    if confidences and version:
        root["ocr_line_confidence"] = confidences
        directives.append(_directive(namespace, [["model_version"], []],
                                     ["ocr_line_confidence"]))
    for key, value in prediction.get("properties", {}).items():  # id, statistics: not metrics
        root.setdefault(key, value)
    docs.append({"_aws": {"Timestamp": ts, "CloudWatchMetrics": directives}, **root})
    for stage, ms in prediction.get("timings", {}).items():
        if stage in STAGES:
            docs.append({"_aws": {"Timestamp": ts, "CloudWatchMetrics": [
                _directive(namespace, [["stage"]], ["ocr_stage_seconds"])]},
                "stage": stage, "ocr_stage_seconds": round(ms / 1000, 6)})
    return docs


def problems(doc: dict[str, Any]) -> list[str]:
    """What makes `doc` an invalid EMF document, by the specification's MUSTs (empty: valid)."""
    out = []
    meta = doc.get("_aws")
    if not isinstance(meta, dict):
        return ["no _aws object"]
    if not isinstance(meta.get("Timestamp"), int) or meta["Timestamp"] < 10**12:
        out.append("Timestamp must be an integer of milliseconds since 1970")
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list):
        return [*out, "CloudWatchMetrics must be an array"]
    for d in directives:
        if not NAMESPACE.match(str(d.get("Namespace", ""))):
            out.append(f"bad Namespace {d.get('Namespace')!r}")
        for dims in d.get("Dimensions", []):
            if not isinstance(dims, list) or len(dims) > MAX_DIMENSIONS:
                out.append(f"a DimensionSet must be an array of at most {MAX_DIMENSIONS} keys")
                continue
            out += [f"dimension {k!r} must be a string member of the root"
                    for k in dims if not isinstance(doc.get(k), str)]
        metrics = d.get("Metrics", [])
        if len(metrics) > MAX_METRICS:
            out.append(f"more than {MAX_METRICS} metrics in one directive")
        for m in metrics:
            value = doc.get(m.get("Name"))
            values = value if isinstance(value, list) else [value]
            if not values or len(values) > MAX_VALUES or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                out.append(f"metric {m.get('Name')!r} must be a number or up to {MAX_VALUES} "
                           "numbers on the root")
            if m.get("Unit", "None") not in UNITS:
                out.append(f"unknown unit {m.get('Unit')!r}")
    return out


class EmfWriter:
    """Writes each request's EMF documents as JSON lines to `out` (stdout, which Lambda sends to
    CloudWatch Logs)."""

    def __init__(self, namespace: str | None = None,
                 out: Callable[[str], None] | None = None) -> None:
        self.namespace = namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
        if not NAMESPACE.match(self.namespace):
            raise ValueError(f"{self.namespace!r} is not a CloudWatch namespace: use letters, "
                             "digits and . _ # : / - only.")
        self.out = out or (lambda line: print(line, file=sys.stdout, flush=True))

    def request(self, route: str, status: int, seconds: float, version: str | None,
                prediction: dict[str, Any] | None) -> None:
        for doc in request_lines(route, status, seconds, version, prediction, self.namespace):
            self.out(json.dumps(doc, separators=(",", ":")))
