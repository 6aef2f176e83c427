"""Reading the traces torch.profiler writes: how busy the GPU was, computed from the trace's own
kernel events, and TensorBoard with its profiler plugin started as a viewer (the plugin is
deprecated upstream; the lesson says so and opens the same files in Perfetto too)."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab_code.serving.ports import free_port


def _union_us(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by (start, end) intervals, overlaps counted once."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def gpu_busy_pct(trace: dict) -> float | None:
    """Share of the profiled steps' wall time during which at least one GPU kernel ran (0-100).

    Kernel intervals (events of category 'kernel') are merged, so concurrent kernels count once;
    the span runs from the first ProfilerStep's start to the end of the last step or kernel.
    None when the trace has no kernels (a CPU run).
    """
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]
    kernels = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "kernel"]
    steps = [(e["ts"], e["ts"] + e["dur"]) for e in events
             if str(e.get("name", "")).startswith("ProfilerStep#")
             and not str(e.get("cat", "")).startswith("gpu")]
    if not kernels or not steps:
        return None
    start = min(a for a, _ in steps)
    end = max(max(b for _, b in steps), max(b for _, b in kernels))
    busy = _union_us([(max(a, start), min(b, end)) for a, b in kernels if b > start])
    return round(100.0 * busy / (end - start), 2)


def trace_gpu_busy_pct(path: str | os.PathLike) -> float | None:
    """gpu_busy_pct of a .pt.trace.json file (plain or gzip)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return gpu_busy_pct(json.load(f))


# --- TensorBoard with the torch-tb-profiler plugin ----------------------------------------------


@dataclass
class TensorBoard:
    """A TensorBoard server running as a child process; `stop()` ends it."""

    process: subprocess.Popen
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_tensorboard(logdir: str | os.PathLike, port: int | None = None,
                      host: str = "127.0.0.1") -> TensorBoard:
    """Start `tensorboard --logdir LOGDIR --host 127.0.0.1 --port PORT` in the background."""
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
           "--host", host, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return TensorBoard(proc, f"http://{host}:{port}")


def get_json(url: str) -> object:
    """GET a JSON answer from a local server (gunzipped when the server gzips it)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = resp.read()
    if body[:2] == b"\x1f\x8b":  # the plugin gzips its JSON answers
        body = gzip.decompress(body)
    return json.loads(body)


def tensorboard_runs(tb: TensorBoard, expect: int = 1, timeout: float = 60.0) -> list[str]:
    """The runs the profiler plugin lists (`/data/plugin/pytorch_profiler/runs`), asking again
    until at least `expect` are there or `timeout` seconds pass (it loads traces in the background).
    """
    deadline = time.monotonic() + timeout
    runs: list[str] = []
    while time.monotonic() < deadline:
        if tb.process.poll() is not None:
            raise RuntimeError(f"TensorBoard exited with code {tb.process.returncode}: run "
                               "`pip install tensorboard torch-tb-profiler` and try again.")
        with contextlib.suppress(urllib.error.URLError, ConnectionError, ValueError, TimeoutError):
            answer = get_json(f"{tb.url}/data/plugin/pytorch_profiler/runs")
            runs = list(answer.get("runs", []) if isinstance(answer, dict) else answer)
            if len(runs) >= expect:
                return runs
        time.sleep(0.5)
    return runs


def tensorboard_views(tb: TensorBoard, run: str) -> list[str]:
    """The views (Overview, Operator, Trace, Memory...) the profiler plugin offers for a run."""
    query = urllib.parse.urlencode({"run": run})
    return list(get_json(f"{tb.url}/data/plugin/pytorch_profiler/views?{query}"))


@contextlib.contextmanager
def tensorboard(logdir: str | os.PathLike, port: int | None = None) -> Iterator[TensorBoard]:
    """`with tensorboard(dir) as tb:` ... the server is stopped when the block ends."""
    tb = start_tensorboard(logdir, port)
    try:
        yield tb
    finally:
        tb.stop()
