"""Stage timings: how long each step of a request took, in milliseconds, and the Server-Timing
header that carries them to the client (browsers' network panels and lab_code.measuring.stages
read it). The production side's image reading and the HTTP service both fill the same dict."""

from __future__ import annotations

import contextlib
import time


@contextlib.contextmanager
def stage(timings: dict[str, float] | None, name: str):
    """Add the milliseconds the block takes to timings[name] (nothing when timings is None)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + (time.perf_counter() - start) * 1000


def server_timing(timings: dict[str, float]) -> str:
    """A Server-Timing header value (`read;dur=0.41, model;dur=2.3`): browsers' network panels
    and lab_code.measuring.loadgen read it, so each response says where its time went."""
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in timings.items())
