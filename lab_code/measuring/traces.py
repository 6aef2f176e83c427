"""Reading the traces torch.profiler writes (Chrome-trace JSON, `*.pt.trace.json`): where they
are, each operator's own CPU time and how busy the GPU was, computed from the trace's events, and
TensorBoard with its profiler plugin started as a viewer.

The same files open in Perfetto (https://ui.perfetto.dev), which parses them in the browser. Two
tools this module stands in for, and why (checked 2026-12-03): HolisticTraceAnalysis analyses GPU
kernels, and on a CPU-only trace its breakdowns fail or come back empty; the `perfetto` package's
trace processor downloads a native binary on first use, so it does not work offline. The
TensorBoard plugin (torch-tb-profiler) was deprecated in 2023 and removed from PyTorch's kineto
repository in April 2026; its last release still reads today's traces."""

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


def read_trace(path: str | os.PathLike) -> dict:
    """A .pt.trace.json file (plain or gzip) as a dict."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def trace_gpu_busy_pct(path: str | os.PathLike) -> float | None:
    """gpu_busy_pct of a .pt.trace.json file (plain or gzip)."""
    return gpu_busy_pct(read_trace(path))


def find_trace(folder: str | os.PathLike) -> Path:
    """The one trace torch.profiler wrote into `folder` (profiling.profile_batch keeps one per
    folder); FileNotFoundError with a sentence when there is none."""
    found = sorted(Path(folder).glob("*.pt.trace.json*"))
    if not found:
        raise FileNotFoundError(f"No *.pt.trace.json in {folder}: profile a batch first "
                                "(profiling.profile_batch or python -m lab_code.measuring "
                                "profiling).")
    return found[-1]


def cpu_op_self_ms(trace: dict, steps: int | None = None) -> dict[str, float]:
    """Each CPU operator's own time in the trace, in ms (per profiled step when `steps` is
    given), largest first: the time inside the operator minus the time of the operators it
    called, as `key_averages()`'s "Self CPU" column counts it, read from the file alone.

    Events of category `cpu_op` on one thread nest by time; a stack per thread finds each
    event's children."""
    ops = [e for e in trace.get("traceEvents", [])
           if e.get("ph") == "X" and e.get("cat") == "cpu_op" and "dur" in e]
    own: dict[str, float] = {}
    by_thread: dict[tuple, list[dict]] = {}
    for e in ops:
        by_thread.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    for events in by_thread.values():
        events.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[tuple[float, dict]] = []  # (end, event)
        for e in events:
            while stack and e["ts"] >= stack[-1][0]:
                stack.pop()
            own[e["name"]] = own.get(e["name"], 0.0) + e["dur"]
            if stack:  # the enclosing operator did not spend this time itself
                parent = stack[-1][1]["name"]
                own[parent] -= e["dur"]
            stack.append((e["ts"] + e["dur"], e))
    scale = 1000.0 * (steps or 1)  # microseconds -> ms, per step
    return dict(sorted(((k, v / scale) for k, v in own.items()), key=lambda kv: -kv[1]))


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
