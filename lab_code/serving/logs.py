"""One JSON line per event on stdout: what the service did with each request (Lambda sends
stdout to CloudWatch Logs), and the line each worker writes once its model is loaded."""

from __future__ import annotations

import json
import sys
from typing import Any

from lab_code.urlfetch import printable

READY_EVENT = '"event": "ready"'  # what each worker logs once its model is loaded


def log_request(**fields: Any) -> None:
    """One JSON line on stdout (Lambda sends stdout to CloudWatch Logs). Text stays readable
    (ensure_ascii=False), but control, line-separator and bidi characters in any field are
    written as \\uXXXX: a caller cannot start a new log line or turn one around."""
    # one write of the whole line: the worker processes of a service share one stdout, and a
    # line written in two parts (text, then newline) can be split by another process's line
    sys.stdout.write(printable(json.dumps(fields, ensure_ascii=False)) + "\n")
    sys.stdout.flush()
