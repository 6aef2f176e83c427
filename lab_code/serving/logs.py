"""One JSON line per event on stdout: what the service did with each request (Lambda sends
stdout to CloudWatch Logs), and the line each worker writes once its model is loaded."""

from __future__ import annotations

import json
from typing import Any

READY_EVENT = '"event": "ready"'  # what each worker logs once its model is loaded


def log_request(**fields: Any) -> None:
    """One JSON line on stdout (Lambda sends stdout to CloudWatch Logs)."""
    print(json.dumps(fields, ensure_ascii=False), flush=True)
