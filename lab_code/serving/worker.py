"""Where a request waits for the model: one thread runs every forward pass, in order, and skips
the jobs whose requests have given up."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from lab_code.artifacts import model_version
from lab_code.recognizer import Recognizer
from lab_code.timings import stage


class DeadlinePassed(Exception):
    """A request's deadline passed before the model got to it: its forward pass is skipped."""


class ModelWorker:
    """Every forward pass runs on one thread, one at a time, so a worker process never runs two
    passes that fight over its core (a server runs one process per core instead). The model's
    own thread count is set where the model runs (lab_code.recognizer: torch's on this thread,
    onnxruntime's in its session). A job whose request has given up (deadline passed) is
    skipped; `stuck_for` says how long the current pass runs."""

    def __init__(self, recognizer: Recognizer, scored: bool = False) -> None:
        self.recognizer = recognizer
        self.scored = scored  # also each line's confidence (lesson 08); else None
        self.version = model_version(recognizer.model_path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._busy_since: float | None = None

    def submit(self, lines: list[np.ndarray], deadline: float,
               timings: dict[str, float] | None = None) -> Future:
        """Queue one forward pass, whose result is each line's (text, confidence); `timings`
        gets its "queue" and "model" milliseconds."""
        return self._pool.submit(self._run, lines, deadline, time.perf_counter(),
                                 {} if timings is None else timings)

    def _run(self, lines: list[np.ndarray], deadline: float, queued: float,
             timings: dict[str, float]) -> list[tuple[str, float | None]]:
        if time.monotonic() > deadline:
            raise DeadlinePassed
        self._busy_since = time.monotonic()
        timings["queue"] = (time.perf_counter() - queued) * 1000
        try:
            with stage(timings, "model"):  # each line's (text, confidence or None)
                if self.scored:
                    return self.recognizer.predict_lines_scored(lines)
                return [(text, None) for text in self.recognizer.predict_lines(lines)]
        finally:
            self._busy_since = None

    def stuck_for(self) -> float:
        """Seconds the pass now running has taken (0 when idle)."""
        since = self._busy_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
