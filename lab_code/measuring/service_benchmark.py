"""Lesson 07's service benchmark: the same load (lab_code.measuring.loadgen, or wrk) against
several ways of serving the recognizer, started one after another on this machine in one run,
quiet and beside a CPU hog (one busy process per core: a "busy machine"), and one line read end
to end in-process before and after (end_to_end, in lockstep: `--end-to-end-only` runs that part
alone); `plot` draws the committed results for the notebook.

    python -m lab_code.measuring service_benchmark --out profiling/results/fast_and_cheap \
        --baseline af7e0ad --end-to-end-baseline b776bc2 --client wrk

`--baseline REF` serves a git commit's lab_code (e.g. the last one before lesson 07's changes)
next to this checkout's, with this checkout's model in both, so the ratios compare two serving
codes on the same weights, under the same load, on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab_code.artifacts import bundled_model_path, bundled_onnx_path, model_version
from lab_code.measuring import hog, loadgen
from lab_code.measuring.cpu_time import group_cpu_s, processes_cpu_s
from lab_code.serving.ports import free_port
from lab_code.serving.processes import start_background, stop_background
from lab_code.serving.runner import wait_for_workers

ROOT = Path(__file__).resolve().parents[2]
REALWORLD = ROOT / "tests" / "data" / "realworld"


@dataclass(frozen=True)
class Config:
    """One way of serving: a `python -m` command (PORT is replaced), where it answers, and what
    it runs on."""

    label: str
    args: tuple[str, ...]
    path: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    cpus: frozenset[int] | None = None  # pin to these cores (a smaller machine)
    source: str = "this"  # "this" checkout or "baseline"
    repeat_images: int = 0  # send only this many distinct images (to show the cache); 0: all
    busy: bool = False  # measured beside one busy process per core (lab_code.measuring.hog)


SERVICE = ("lab_code.serving", "serverless", "--port", "PORT")
TORCHSCRIPT = (*SERVICE, "--runtime", "torchscript")
ONNX = (*SERVICE, "--runtime", "onnx")
BATCHING = ("lab_code.serving", "batching", "--port", "PORT")
BASELINE_SERVICE = ("lab_code.serverless", "--port", "PORT")  # the baseline commit's own layout
SHIPPED = (*SERVICE, "--workers", "2")  # what lesson 07 ships: the ONNX file, one worker a core
CONFIGS = {
    "before": Config("main before lesson 07 (1 process)", BASELINE_SERVICE, source="baseline"),
    "unoptimized": Config("1 worker, TorchScript as saved", (*TORCHSCRIPT, "--workers", "1",
                                                             "--no-optimize")),
    "frozen": Config("1 worker, TorchScript frozen + widths of 64",
                     (*TORCHSCRIPT, "--workers", "1")),
    "onnx": Config("1 worker, ONNX Runtime", (*ONNX, "--workers", "1")),
    "threads": Config("1 worker, 2 threads (ONNX Runtime)", (*ONNX, "--workers", "1"),
                      env={"OMP_NUM_THREADS": "2"}),
    "workers_torchscript": Config("2 workers, TorchScript frozen", (*TORCHSCRIPT, "--workers",
                                                                    "2")),
    "workers": Config("2 workers, ONNX Runtime (shipped)", SHIPPED),
    "litserve": Config("LitServe, batches of up to 16, 5 ms wait",
                       (*BATCHING, "--max-batch-size", "16", "--batch-timeout", "0.005"),
                       path="/predict"),
    "litserve_nobatch": Config("LitServe, no batching", (*BATCHING, "--max-batch-size", "1"),
                               path="/predict"),
    "litserve_2w": Config("LitServe, 2 workers, batches of up to 16",
                          (*BATCHING, "--max-batch-size", "16", "--batch-timeout", "0.005",
                           "--workers", "2"), path="/predict"),
    "cache": Config("2 workers + cache, 24 distinct images", (*SERVICE, "--workers", "2",
                                                              "--cache", "256"),
                    repeat_images=24),
    "one_core_1t": Config("one core: 1 worker, 1 thread", (*SERVICE, "--workers", "1"),
                          cpus=frozenset({0})),
    "one_core_2t": Config("one core: 1 worker, 2 threads", (*SERVICE, "--workers", "1"),
                          env={"OMP_NUM_THREADS": "2"}, cpus=frozenset({0})),
    # a busy machine: the same, beside one busy process per core
    "before_busy": Config("busy: main before lesson 07", BASELINE_SERVICE, source="baseline",
                          busy=True),
    "workers_torchscript_busy": Config("busy: 2 workers, TorchScript frozen",
                                       (*TORCHSCRIPT, "--workers", "2"), busy=True),
    "workers_busy": Config("busy: 2 workers, ONNX Runtime (shipped)", SHIPPED, busy=True),
    "litserve_2w_busy": Config("busy: LitServe, 2 workers, batches of up to 16",
                               (*BATCHING, "--max-batch-size", "16", "--batch-timeout", "0.005",
                                "--workers", "2"), path="/predict", busy=True),
    # the thread fix, checked: a commit's own service with 2 workers (--baseline: one from before
    # the fix) against this checkout's, on a mix of lines and on one repeated line (one shape)
    "before_workers": Config("baseline commit, 2 workers", (*BASELINE_SERVICE, "--workers", "2"),
                             source="baseline"),
    "before_workers_busy": Config("busy: baseline commit, 2 workers",
                                  (*BASELINE_SERVICE, "--workers", "2"), source="baseline",
                                  busy=True),
    "before_workers_one": Config("baseline commit, 2 workers, one line repeated",
                                 (*BASELINE_SERVICE, "--workers", "2"), source="baseline",
                                 repeat_images=1),
    "before_workers_one_busy": Config("busy: baseline commit, 2 workers, one line repeated",
                                      (*BASELINE_SERVICE, "--workers", "2"), source="baseline",
                                      repeat_images=1, busy=True),
    "workers_torchscript_one": Config("2 workers, TorchScript frozen, one line repeated",
                                      (*TORCHSCRIPT, "--workers", "2"), repeat_images=1),
    "workers_torchscript_one_busy": Config("busy: 2 workers, TorchScript frozen, one line repeated",
                                           (*TORCHSCRIPT, "--workers", "2"), repeat_images=1,
                                           busy=True),
    "workers_one": Config("2 workers, ONNX Runtime, one line repeated", SHIPPED,
                          repeat_images=1),
    "workers_one_busy": Config("busy: 2 workers, ONNX Runtime, one line repeated", SHIPPED,
                               repeat_images=1, busy=True),
}
DEFAULT_CONFIGS = ("before", "unoptimized", "frozen", "onnx", "threads", "workers_torchscript",
                   "workers", "litserve", "litserve_nobatch", "litserve_2w", "cache",
                   "one_core_1t", "one_core_2t", "before_busy", "workers_torchscript_busy",
                   "workers_busy", "litserve_2w_busy")
CLIENTS = ("loadgen", "wrk")  # the Python load generator, or wrk (C: barely uses the CPU)
HOG_SLACK_S = 15.0  # a hog outlives its load by at most this, if nobody stops it


def extract_baseline(ref: str, into: Path) -> Path:
    """This repository's lab_code at commit `ref`, unpacked under `into` (git archive), with
    this checkout's bundled model in place of the commit's: the same weights on both sides."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref,
                                  "lab_code"], capture_output=True, check=True, timeout=120).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise ValueError(f"Cannot read commit {ref!r} of {ROOT}: run from a git clone and pass a "
                         "commit that exists.") from err
    into.mkdir(parents=True, exist_ok=True)
    tar_path = into / "baseline.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into / "src", filter="data")
    shutil.copytree(bundled_model_path().parent, into / "src" / "lab_code" / "artifacts",
                    dirs_exist_ok=True)
    return into / "src"


def load_once(client: str, url: str, bodies: list[bytes], clients: int, duration_s: float,
              warmup_s: float, busy: bool, service_pid: int | None = None) -> loadgen.LoadResult:
    """One load run with `client` (loadgen or wrk), beside a CPU hog when `busy`. With
    `service_pid` (the process a session of its own started: its group holds its workers),
    `result.cpu` says how many cores the service and the hog got over the run
    (warm-up included): on a busy machine the kernel, not the code, decides the service's share,
    and its cores used tell one round's luck from another's."""
    from lab_code.measuring import wrk

    run = wrk.run_wrk if client == "wrk" else loadgen.run_load
    started = time.monotonic()
    service_before = group_cpu_s(service_pid) if service_pid else 0.0
    hogging = hog.cpu_hog(warmup_s + duration_s + HOG_SLACK_S) if busy \
        else contextlib.nullcontext([])
    with hogging as procs:
        result = run(url, bodies, clients, duration_s, warmup_s)
        hog_s = processes_cpu_s(p.pid for p in procs)  # before they are stopped
    wall = time.monotonic() - started
    if service_pid:
        result.cpu = {"wall_s": round(wall, 2),
                      "service_cores": round((group_cpu_s(service_pid) - service_before) / wall,
                                             3),
                      "hog_cores": round(hog_s / wall, 3)}
    return result


def serve_and_load(config: Config, clients: list[int], bodies: list[bytes], duration_s: float,
                   warmup_s: float, log_dir: Path, baseline: Path | None,
                   client: str = "loadgen") -> dict[str, Any]:
    """Start `config`'s server, load it with each client count in turn (beside a hog when the
    config is busy), stop it."""
    port = free_port()
    args = [a.replace("PORT", str(port)) for a in config.args]
    env, cwd = dict(config.env), None
    if config.source == "baseline":
        if baseline is None:
            return {"skipped": "no --baseline commit given"}
        # its own folder first (Python looks in the working folder before PYTHONPATH)
        env["PYTHONPATH"], cwd = str(baseline), baseline
    if config.cpus and not hasattr(os, "sched_setaffinity"):
        return {"skipped": "pinning to one core needs Linux"}
    health = f"http://127.0.0.1:{port}/health"
    log = log_dir / f"{port}.log"
    try:
        proc = start_background(args, health, log, env=env, cpus=set(config.cpus or ()) or None,
                                cwd=cwd)
    except RuntimeError as err:
        return {"skipped": str(err)}
    try:
        if logs_each_worker(config) and not wait_for_workers(log, workers_of(args)):
            return {"skipped": f"its {workers_of(args)} workers did not all start: see {log}"}
        time.sleep(0.5)
        url = f"http://127.0.0.1:{port}{config.path}"
        sent = bodies[: config.repeat_images] if config.repeat_images else bodies
        runs = []
        for n in clients:
            result = load_once(client, url, sent, n, duration_s, warmup_s, config.busy, proc.pid)
            cores = "".join(f", {k.removesuffix('_cores')} {v:.2f} cores"
                            for k, v in result.cpu.items() if k.endswith("_cores"))
            print(f"  {config.label}: {result.summary()}{cores}", flush=True)
            runs.append(result.to_dict())
        return {"runs": runs}
    finally:
        stop_background(proc)


def logs_each_worker(config: Config) -> bool:
    """Whether `config` is this checkout's service with several workers, each of which logs when
    its model is loaded: /health answers once the first is up, so the load waits for the rest.
    (LitServe's /health waits for all its workers itself; the baseline commit logs nothing.)"""
    return (config.source == "this" and config.args[:2] == SERVICE[:2]
            and workers_of(list(config.args)) > 1)


def workers_of(args: list[str]) -> int:
    return int(args[args.index("--workers") + 1]) if "--workers" in args else 1


END_TO_END = """
import json, sys, time
from PIL import Image
paths, runtime = json.loads(sys.argv[1]), sys.argv[2]
if runtime == "torchscript":  # TextRecognizer: the frozen TorchScript model, one torch thread
    import torch
    torch.set_num_threads(1)
    from lab_code.recognizer import TextRecognizer
    recognizer = TextRecognizer()
else:  # what the services ship: the bundled ONNX file on onnxruntime, one thread
    from lab_code.recognizer import load
    recognizer = load(threads=1)
images = [Image.open(p).convert("RGB") for p in paths]
recognizer.predict(images[0])
import lab_code.recognizer as module
print(json.dumps({"code": module.__file__}), flush=True)
for line in sys.stdin:  # an image's index per line: read that image, say how long it took
    image = images[int(line)]
    start = time.perf_counter()
    text = recognizer.predict(image)
    print(json.dumps({"ms": (time.perf_counter() - start) * 1000, "text": text}), flush=True)
"""


def code_shown(path: str, root: Path, source: str) -> str:
    """Which recognizer a run imported, relative to its checkout (no machine's paths)."""
    try:
        return f"{Path(path).resolve().relative_to(Path(root).resolve())} ({source})"
    except ValueError:  # not under the checkout it was meant to run: say where, plainly
        return f"{path} (not the {source} checkout!)"


class LineReader:
    """A fresh process that imports the lab_code of `src` (None: this checkout), loads `runtime`
    ("torchscript": TextRecognizer; "shipped": what lab_code.recognizer.load picks, the ONNX
    file) on one thread, warms it, and then reads the image of `paths` it is asked for, one at
    a time, timing each call itself (the pipe's time is not counted). `code` is the
    recognizer's file it imported."""

    def __init__(self, src: Path | None, paths: list[Path], runtime: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(src or ROOT)}
        env.pop("MODEL_PATH", None)
        self._errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", END_TO_END, json.dumps([str(p) for p in paths]), runtime],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors, text=True,
            env=env, cwd=src or ROOT)  # `-c` looks in cwd first
        self.code = self._reply()["code"]

    def _reply(self) -> dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        self.proc.wait(timeout=30)
        self._errors.seek(0)
        tail = self._errors.read().decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"the reader exited ({self.proc.returncode}): " + " | ".join(tail))

    def read(self, index: int) -> tuple[float, str]:
        """(milliseconds, text) of image `index`."""
        self.proc.stdin.write(f"{index}\n")
        self.proc.stdin.flush()
        reply = self._reply()
        return reply["ms"], reply["text"]

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self._errors.close()


def read_in_process(src: Path | None, paths: list[Path], passes: int,
                    runtime: str = "torchscript") -> dict[str, Any]:
    """Read `paths` one image at a time, `passes` times, in a LineReader: {"p50_ms", "mean_ms",
    "texts" (one per image), "code" (the recognizer's file it imported)}."""
    reader = LineReader(src, paths, runtime)
    try:
        ms, texts = [], []
        for _ in range(passes):
            for index in range(len(paths)):
                took, text = reader.read(index)
                ms.append(took)
                texts.append(text)
        return {"p50_ms": statistics.median(ms), "mean_ms": statistics.fmean(ms),
                "texts": texts[: len(paths)], "code": reader.code}
    finally:
        reader.close()


def end_to_end(sources: dict[str, tuple[Path | None, str]], paths: list[Path], passes: int,
               rounds: int) -> dict[str, Any]:
    """One image at a time, image in and text out, with each source's lab_code and runtime in a
    LineReader of its own (fresh ones each round), in lockstep: every image is read by each
    source in turn, in alternating order, so the machine's noise hits them alike. Per source
    and round the p50 and mean milliseconds; how many images each source reads differently from
    the first ("read_differently"); between "this" and "before" (when both ran): the median,
    over every image read, of this one's time over before's ("this_over_before"),
    "images_read_differently" and "same_text"."""
    out: dict[str, Any] = {name: {"p50_ms": [], "mean_ms": []} for name in sources}
    texts: dict[str, list[str]] = {}
    pairs: list[float] = []
    for number in range(rounds):
        readers: dict[str, LineReader] = {}
        try:
            for name, (src, runtime) in sources.items():
                readers[name] = LineReader(src, paths, runtime)
                out[name]["runtime"] = runtime
                out[name]["code"] = code_shown(readers[name].code, src or ROOT, name)
            ms: dict[str, list[float]] = {name: [] for name in sources}
            texts = {name: [] for name in sources}
            for sweep in range(passes):
                for index in range(len(paths)):
                    order = list(sources)
                    for name in order if (index + sweep + number) % 2 == 0 else order[::-1]:
                        took, text = readers[name].read(index)
                        ms[name].append(took)
                        if sweep == 0:
                            texts[name].append(text)
        finally:
            for reader in readers.values():
                reader.close()
        for name in sources:
            out[name]["p50_ms"].append(round(statistics.median(ms[name]), 3))
            out[name]["mean_ms"].append(round(statistics.fmean(ms[name]), 3))
        if "this" in ms and "before" in ms:
            pairs += [a / b for a, b in zip(ms["this"], ms["before"], strict=True)]
    first = next(iter(sources))
    for name in sources:
        out[name]["read_differently"] = sum(
            a != b for a, b in zip(texts[name], texts[first], strict=True))
    pair = [texts[n] for n in ("this", "before") if n in texts]
    differ = sum(len(set(read)) > 1 for read in zip(*pair, strict=True)) if pair else 0
    return {"images": len(paths), "passes": passes, "rounds": rounds, "per_source": out,
            "this_over_before": round(statistics.median(pairs), 3) if pairs else None,
            "same_text": differ == 0, "images_read_differently": differ}


def merge_rounds(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record from several rounds of the same config: per client count, the mean throughput
    and latencies, the statuses added up; each round kept under "rounds"."""
    done = [r["runs"] for r in records if "runs" in r]
    if not done:
        return records[0]
    merged = []
    for runs in zip(*done, strict=True):
        first = runs[0]
        keys = set.intersection(*(set(r["latency_ms"]) for r in runs))
        statuses: dict[str, int] = {}
        for r in runs:
            for code, n in r["statuses"].items():
                statuses[code] = statuses.get(code, 0) + n
        stage_keys = set.intersection(*(set(r["stages_ms"]) for r in runs))
        merged.append({**first, "requests": sum(r["requests"] for r in runs),
                       "throughput_per_s": round(statistics.fmean(
                           r["throughput_per_s"] for r in runs), 2),
                       "latency_ms": {k: round(statistics.fmean(r["latency_ms"][k]
                                                                for r in runs), 2) for k in keys},
                       "statuses": statuses,
                       "stages_ms": {k: round(statistics.fmean(r["stages_ms"][k] for r in runs), 3)
                                     for k in stage_keys},
                       "cpu": {k: round(statistics.fmean(r["cpu"][k] for r in runs), 3)
                               for k in set.intersection(*(set(r.get("cpu", {})) for r in runs))},
                       "errors": [e for r in runs for e in r["errors"]][:5]})
    return {"runs": merged, "rounds": [r["runs"] for r in records if "runs" in r]}


def is_busy(name: str) -> bool:
    return name.endswith("_busy")


def busy_to_quiet(results: dict[str, Any]) -> dict[str, Any]:
    """Throughput beside the hog over throughput without, per config measured both ways and
    client count: the share of its quiet figure a busy machine leaves it."""
    configs = results["configs"]
    out: dict[str, Any] = {}
    for name, record in configs.items():
        quiet = configs.get(name.removesuffix("_busy"), {}).get("runs")
        if not is_busy(name) or not quiet or not record.get("runs"):
            continue
        out[name.removesuffix("_busy")] = {
            str(b["clients"]): round(b["throughput_per_s"] / q["throughput_per_s"], 3)
            if q["throughput_per_s"] else None
            for b, q in zip(record["runs"], quiet, strict=True)}
    return out


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in
             (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
             if line.startswith("model name")]
    cpu = names[0] if names else ""
    import torch

    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "sched_autogroup": hog.autogroup()}


def ratios(results: dict[str, Any], base: str = "before") -> dict[str, Any]:
    """Throughput and p95 of each config relative to `base`, per client count: quiet configs
    against a quiet base, busy ones against a busy base."""
    ref = results["configs"].get(base, {}).get("runs")
    out: dict[str, Any] = {}
    if not ref:
        return out
    for name, record in results["configs"].items():
        runs = record.get("runs")
        if not runs or name == base or is_busy(name) != is_busy(base):
            continue
        out[name] = {str(r["clients"]): {
            "throughput": round(r["throughput_per_s"] / b["throughput_per_s"], 3)
            if b["throughput_per_s"] else None,
            "p95": round(r["latency_ms"]["p95"] / b["latency_ms"]["p95"], 3)
            if r["latency_ms"] and b["latency_ms"] else None}
            for r, b in zip(runs, ref, strict=True)}
    return out


def per_round(results: dict[str, Any], base: str = "before") -> dict[str, Any]:
    """Each config's throughput over `base`'s in the same round, per client count, and the
    median of those ratios. Rounds run in turn (forwards, then backwards), so a config and its
    base measured in one round are minutes apart at most, where the means over all rounds mix a
    slow stretch of one round with a fast stretch of another: on a shared machine the ratio
    round by round is the steadier figure. Quiet configs against a quiet base, busy ones against
    a busy base; only configs measured in as many rounds as the base."""
    configs = results["configs"]
    ref = configs.get(base, {}).get("rounds")
    out: dict[str, Any] = {}
    if not ref:
        return out
    for name, record in configs.items():
        rounds = record.get("rounds")
        if name == base or is_busy(name) != is_busy(base) or not rounds \
                or len(rounds) != len(ref):
            continue
        per_clients: dict[str, Any] = {}
        for i, first in enumerate(rounds[0]):
            each = [r[i]["throughput_per_s"] / b[i]["throughput_per_s"]
                    for r, b in zip(rounds, ref, strict=True) if b[i]["throughput_per_s"]]
            if each:
                per_clients[str(first["clients"])] = {
                    "rounds": [round(x, 3) for x in each],
                    "median": round(statistics.median(each), 3)}
        out[name] = per_clients
    return out


def plot(results: dict[str, Any], configs: tuple[str, ...] | None = None):
    """Throughput and p95 latency against concurrent clients, one line per way of serving."""
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, record in results["configs"].items():
        runs = record.get("runs")
        if not runs or (configs and name not in configs):
            continue
        clients = [r["clients"] for r in runs]
        style = {"linewidth": 2.5} if name.removesuffix("_busy") in ("before", "workers") \
            else {"alpha": 0.8}
        if is_busy(name):  # beside the CPU hog: dashed
            style["linestyle"] = "--"
        ax_t.plot(clients, [r["throughput_per_s"] for r in runs], marker="o",
                  label=CONFIGS[name].label if name in CONFIGS else name, **style)
        ax_l.plot(clients, [r["latency_ms"].get("p95", float("nan")) for r in runs], marker="o",
                  **style)
    for ax, title in ((ax_t, "answers per second (200s)"), (ax_l, "p95 latency (ms)")):
        ax.set_xscale("log", base=2)
        ticks = sorted({r["clients"] for rec in results["configs"].values()
                        for r in rec.get("runs", [])})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_l.set_yscale("log")
    low, high = ax_t.get_ylim()
    if high > 20 * max(low, 1.0):  # the cache answers ~20x faster: a linear axis hides the rest
        ax_t.set_yscale("log")
    ax_t.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_rounds(results: dict[str, Any], clients: int = 64):
    """Left: throughput over the code before's, round by round (quiet: solid, beside the hog:
    dashed), with each config's median. Right: the cores each service used in each round (from
    /proc): beside a hog the kernel decides that share, and it is what moves one round's ratio
    away from another's."""
    import matplotlib.pyplot as plt

    fig, (ax, ax_cores) = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=(3, 2))
    series = {**results.get("per_round_to_before", {}),
              **results.get("per_round_to_before_busy", {})}
    colors: dict[str, str] = {}
    for name, per_clients in series.items():
        figures = per_clients.get(str(clients))
        if not figures:
            continue
        label = CONFIGS[name].label if name in CONFIGS else name
        line, = ax.plot(range(1, len(figures["rounds"]) + 1), figures["rounds"], marker="o",
                        linestyle="--" if is_busy(name) else "-",
                        label=f"{label}: median {figures['median']:.2f}x")
        ax.axhline(figures["median"], color=line.get_color(), alpha=0.3)
        colors[name] = line.get_color()
    for name, record in results["configs"].items():
        cores = [next((r["cpu"].get("service_cores") for r in runs if r["clients"] == clients
                       and r.get("cpu")), None) for runs in record.get("rounds", [])]
        if not cores or None in cores:
            continue
        ax_cores.plot(range(1, len(cores) + 1), cores, marker="o", color=colors.get(name, "black"),
                      linestyle="--" if is_busy(name) else "-",
                      label=CONFIGS[name].label if name in CONFIGS else name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    most = max((len(f["rounds"]) for p in series.values() for f in p.values()), default=1)
    for axis in (ax, ax_cores):
        axis.set_xticks(range(1, most + 1))
        axis.set_xlabel("round")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    ax.set_ylabel(f"answers/s over the code before's ({clients} clients)")
    ax_cores.set_ylabel("cores the service used")
    ax_cores.set_title("what the kernel gave each service", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax_cores.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.measuring service_benchmark",
        description="Load several ways of serving the recognizer, one after another, with the "
                    "same clients and images; write results.json and service.png, and "
                    "end_to_end.json (one line read end to end, before and after).")
    parser.add_argument("--out", type=Path, default=Path("profiling/out/fast_and_cheap"),
                        help="folder for results.json, service.png and end_to_end.json "
                             "(default: profiling/out/fast_and_cheap)")
    parser.add_argument("--baseline", default=None, metavar="REF",
                        help="a git commit whose lab_code is served as 'before' "
                             "(default: none; that config is skipped)")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                        choices=sorted(CONFIGS), metavar="NAME",
                        help=f"which ways of serving (default: all of {' '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64, 256], metavar="N",
                        help="concurrent clients (default: 1 16 64 256)")
    parser.add_argument("--client", choices=CLIENTS, default="loadgen",
                        help="what sends the load: loadgen (Python, with Server-Timing stages) "
                             "or wrk (C, needs the wrk command) (default: loadgen)")
    parser.add_argument("--duration", type=float, default=6.0, metavar="SECONDS",
                        help="measured seconds per client count (default: 6)")
    parser.add_argument("--warmup", type=float, default=1.5, metavar="SECONDS",
                        help="seconds of load before each measurement (default: 1.5)")
    parser.add_argument("--rounds", type=int, default=2, metavar="N",
                        help="times every config is run, in alternating order; figures are "
                             "their means (default: 2)")
    parser.add_argument("--end-to-end-baseline", default=None, metavar="REF",
                        help="a git commit whose frozen TorchScript path is read end to end "
                             "beside this checkout's (default: the --baseline commit)")
    parser.add_argument("--end-to-end-passes", type=int, default=2, metavar="N",
                        help="passes over the screenshot lines, one image at a time, for the "
                             "in-process end-to-end time (0: skip; default: 2)")
    parser.add_argument("--end-to-end-rounds", type=int, default=3, metavar="N",
                        help="fresh processes the end-to-end part starts for each source, one "
                             "after another (default: 3)")
    parser.add_argument("--end-to-end-only", action="store_true",
                        help="read the lines end to end and write end_to_end.json only: no "
                             "service is started")
    return parser


def header(argv: list[str] | None) -> dict[str, Any]:
    """What every results file of this command starts with: the command, when, which models,
    on what machine and how busy it was."""
    return {"command": "python -m lab_code.measuring service_benchmark "
                       + " ".join(sys.argv[1:] if argv is None else argv),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "model_version": model_version(bundled_model_path()),
            "onnx_model_version": model_version(bundled_onnx_path())
            if bundled_onnx_path().is_file() else None,
            "machine": machine(), "load_before": os.getloadavg()}


def write_end_to_end(args: argparse.Namespace, argv: list[str] | None, base: Path | None,
                     ref: str | None) -> Path:
    """The end-to-end part (see end_to_end): this checkout's shipped runtime and TorchScript
    path, and the frozen path of commit `ref` (unpacked at `base`) when given; end_to_end.json."""
    started = time.time()
    record = {**header(argv), "baseline": ref,
              "lines": "the real-world set's 120 screenshot lines, one image at a time"}
    sources = {"this": (None, "shipped"), "this_torchscript": (None, "torchscript"),
               **({"before": (base, "torchscript")} if base else {})}
    paths = sorted((REALWORLD / "screenshot").glob("*.png"))
    record.update(end_to_end(sources, paths, args.end_to_end_passes, args.end_to_end_rounds))
    print("end to end:", json.dumps(record["per_source"]),
          f"this/before: {record['this_over_before']}", flush=True)
    record["load_after"] = os.getloadavg()
    record["wall_s"] = round(time.time() - started, 1)
    path = args.out / "end_to_end.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        bodies = loadgen.realworld_bodies(family="screenshot")
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        e2e_ref = args.end_to_end_baseline or args.baseline
        try:
            baseline = extract_baseline(args.baseline, Path(tmp)) if args.baseline else None
            e2e_base = baseline if e2e_ref == args.baseline else extract_baseline(
                e2e_ref, Path(tmp) / "e2e")
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        if args.end_to_end_only:
            path = write_end_to_end(args, argv, e2e_base, e2e_ref)
            print(f"wrote {path} in {time.time() - started:.0f} s")
            return 0
        results: dict[str, Any] = {
            **header(argv), "baseline": args.baseline, "client": args.client,
            "requests": "the real-world set's 120 screenshot lines, each client sending them in "
            "turn", "duration_s": args.duration, "warmup_s": args.warmup, "configs": {}}
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in args.configs}
        for number in range(args.rounds):  # forwards, then backwards: drift hits all alike
            order = args.configs if number % 2 == 0 else list(reversed(args.configs))
            for name in order:
                config = CONFIGS[name]
                print(f"{name} (round {number + 1}): {config.label}", flush=True)
                rounds[name].append(serve_and_load(config, args.clients, bodies, args.duration,
                                                   args.warmup, Path(tmp), baseline,
                                                   args.client))
                if "skipped" in rounds[name][-1]:
                    print(f"  skipped: {rounds[name][-1]['skipped']}", flush=True)
        for name in args.configs:
            results["configs"][name] = {"label": CONFIGS[name].label, **merge_rounds(rounds[name])}
        results["ratios_to_before"] = ratios(results)
        results["ratios_to_before_busy"] = ratios(results, "before_busy")
        results["per_round_to_before"] = per_round(results)
        results["per_round_to_before_busy"] = per_round(results, "before_busy")
        results["busy_to_quiet"] = busy_to_quiet(results)
        results["load_after"] = os.getloadavg()
        results["wall_s"] = round(time.time() - started, 1)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n",
                                               encoding="utf-8")
        plot(results).savefig(args.out / "service.png", dpi=110)
        wrote = [args.out / "results.json", args.out / "service.png"]
        if results["per_round_to_before"] or results["per_round_to_before_busy"]:
            plot_rounds(results, max(args.clients)).savefig(args.out / "rounds.png", dpi=110)
            wrote.append(args.out / "rounds.png")
        if args.end_to_end_passes > 0:
            wrote.append(write_end_to_end(args, argv, e2e_base, e2e_ref))
    print(f"wrote {', '.join(map(str, wrote))} in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
