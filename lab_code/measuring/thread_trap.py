"""The thread trap, shown live: the TorchScript model called from a worker thread, once without a
thread count for that thread (torch's default: an OpenMP team of one thread per core) and once
with one (lab_code.threads), timed in turns on a quiet machine and beside a CPU hog, with the OS
threads each call started and the CPU time they burnt.

    python -m lab_code.measuring thread_trap --calls 60

OpenMP's thread count belongs to each thread: `torch.set_num_threads(1)` on the main thread does
not reach a ThreadPoolExecutor's thread (nor Gradio's, Mangum's or LitServe's), where the model of
a server runs. There, oneDNN's kernels start a team of threads that spin while they wait for each
other; beside any other busy process they fight it for the cores. ONNX Runtime's count belongs to
its session, so the shipped runtime is shown too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lab_code.measuring import hog


@dataclass(frozen=True)
class OsThread:
    tid: int
    name: str
    cpu_s: float  # user + system time this thread has used


def os_threads(pid: int | None = None) -> list[OsThread]:
    """The OS threads of a process (default: this one) and the CPU time of each, from /proc
    (Linux), the same rows `top -H -p PID` shows."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    tasks = Path(f"/proc/{pid or os.getpid()}/task")
    for task in sorted(tasks.iterdir(), key=lambda p: int(p.name)):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        out.append(OsThread(int(task.name), name, (int(fields[11]) + int(fields[12])) / tick))
    return out


@dataclass
class Setting:
    """One way of running the model on a worker thread, and what it did."""

    label: str
    new_threads: int = 0  # OS threads its first call started
    new_threads_cpu_s: float = 0.0  # CPU time those threads used over the whole demonstration
    quiet_ms: float = 0.0  # median milliseconds per call, machine otherwise quiet
    busy_ms: float = 0.0  # the same beside one busy process per core
    text: str = ""


def time_calls(pool: ThreadPoolExecutor, read, lines: list[np.ndarray], calls: int) -> list[float]:
    """Milliseconds of each of `calls` calls of read(lines), each made on the pool's thread."""
    def timed() -> float:
        start = time.perf_counter()
        read(lines)
        return (time.perf_counter() - start) * 1000

    return [pool.submit(timed).result() for _ in range(calls)]


def example_lines() -> list[np.ndarray]:
    """One real screenshot line (a browser's text) as the model reads it."""
    from lab_code import images

    root = Path(__file__).resolve().parents[2] / "tests" / "data" / "realworld" / "screenshot"
    path = sorted(root.glob("*.png"))[0]
    return images.lines_from(path.read_bytes(), name=path.name)


def demonstrate(calls: int = 60, rounds: int = 2, include_onnx: bool = True) -> dict:
    """Each setting on a worker thread of its own, timed quiet and busy in turns (`rounds`
    times): median ms per call, the OS threads its first call started and their CPU time."""
    from lab_code.recognizer import OnnxRecognizer, TextRecognizer

    load_before = os.getloadavg()  # before the readers load and before any hog
    lines = example_lines()
    readers = {"TorchScript, threads=None (the trap)": TextRecognizer(threads=None),
               "TorchScript, threads=1 (the fix)": TextRecognizer(threads=1)}
    if include_onnx:
        readers["ONNX Runtime, threads=1 (what ships)"] = OnnxRecognizer(threads=1)
    settings, pools, started = {}, {}, {}
    for label, recognizer in readers.items():
        pools[label] = ThreadPoolExecutor(max_workers=1)  # a thread of its own: counts stay apart
        pools[label].submit(lambda: None).result()
        before = {t.tid for t in os_threads()}
        text = pools[label].submit(recognizer.predict_lines, lines).result()[0]
        started[label] = {t.tid for t in os_threads()} - before
        settings[label] = Setting(label, new_threads=len(started[label]), text=text)
    quiet: dict[str, list[float]] = {label: [] for label in readers}
    busy: dict[str, list[float]] = {label: [] for label in readers}
    try:
        for _ in range(rounds):
            for label, recognizer in readers.items():
                quiet[label] += time_calls(pools[label], recognizer.predict_lines, lines, calls)
            with hog.cpu_hog(60 * len(readers)):
                time.sleep(0.3)  # the hog's processes are up
                for label, recognizer in readers.items():
                    busy[label] += time_calls(pools[label], recognizer.predict_lines, lines,
                                              calls)
        # read while the pools' threads live: an OpenMP team ends with the thread that made it
        cpu = {t.tid: t.cpu_s for t in os_threads()}
    finally:
        for pool in pools.values():
            pool.shutdown()
    for label, setting in settings.items():
        setting.quiet_ms = round(statistics.median(quiet[label]), 2)
        setting.busy_ms = round(statistics.median(busy[label]), 2)
        setting.new_threads_cpu_s = round(sum(cpu.get(tid, 0.0) for tid in started[label]), 2)
    return {"calls": calls, "rounds": rounds, "cores": hog.cores(),
            "load_before": load_before, "load_after": os.getloadavg(),
            "line_width": int(lines[0].shape[1]),
            "settings": [asdict(s) for s in settings.values()]}


def table(result: dict) -> str:
    """The demonstration as a text table."""
    rows = [f"{'':40} {'quiet ms':>9} {'busy ms':>8} {'busy/quiet':>10} {'new threads':>11} "
            f"{'their CPU s':>11}"]
    for s in result["settings"]:
        rows.append(f"{s['label']:40} {s['quiet_ms']:9.2f} {s['busy_ms']:8.2f} "
                    f"{s['busy_ms'] / s['quiet_ms']:10.1f} {s['new_threads']:11d} "
                    f"{s['new_threads_cpu_s']:11.2f}")
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring thread_trap",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=60,
                        help="model calls per setting, round and condition (default: 60)")
    parser.add_argument("--rounds", type=int, default=2, help="quiet/busy rounds (default: 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("error: counting a process's threads needs Linux's /proc.", file=sys.stderr)
        return 1
    if args.calls < 1 or args.rounds < 1:
        print("error: --calls and --rounds must be at least 1.", file=sys.stderr)
        return 2
    from lab_code.measuring.service_benchmark import machine

    started = time.time()
    result = demonstrate(args.calls, args.rounds)
    result = {"command": "python -m lab_code.measuring thread_trap "
                         + " ".join(sys.argv[1:] if argv is None else argv),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
              "machine": machine(), **result}
    print(table(result))
    print("load average before", [round(x, 2) for x in result["load_before"]],
          "after", [round(x, 2) for x in result["load_after"]])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
