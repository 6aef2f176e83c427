"""Batch 1 vs batch 16: profile the compiled recognizer with torch.profiler (traces for TensorBoard
and Perfetto), time it at several batch sizes, and compare reading a page line by line with
reading it as one batch.

    python -m lab_code.measuring profiling --batch-sizes 1 16
    python -m lab_code.measuring profiling --sweep --out profiling/out/sweep

It runs on text lines rendered once and shipped with the package, so it never needs the training
code. Latency comes from separate timed runs, never from profiled ones (the profiler slows
every operator down).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

from lab_code import preprocess
from lab_code.artifacts import bundled_model_path, model_version
from lab_code.devices import DeviceError, resolve_device
from lab_code.measuring.traces import trace_gpu_busy_pct
from lab_code.recognizer import TextRecognizer, read_lines

ASSET = "profiling_lines.npz"  # 64 rendered English lines, preprocessed (see load_lines)
DEFAULT_OUT = Path("profiling/out")
DEFAULT_BATCH_SIZES = (1, 16)
SWEEP = (1, 2, 4, 8, 16, 32, 64)
LINE_WIDTH = 512  # every line is padded or cropped to this width: batches differ only in size
PAGE_LINES = 16
ROUNDS = 5  # timed calls are spread over this many passes through the batch sizes
P95_REPEATS = 20  # fewer timed calls make "p95" little more than the slowest one
# On a quiet machine p95 stays within about x1.35 of p50 here (profiling/results); far above that,
# something else was using the CPU while we measured, and ratios between runs mean little.
BUSY_SPREAD = 1.5
PROFILE_SCHEDULE = {"wait": 1, "warmup": 1, "active": 3}  # 5 steps, the last 3 recorded


# --- inputs -------------------------------------------------------------------------------------


def load_lines() -> tuple[list[np.ndarray], list[str]]:
    """The shipped text lines as model-ready arrays (HEIGHT rows, ink = 1) and their texts."""
    with resources.files("lab_code").joinpath("assets", ASSET).open("rb") as f:
        data = np.load(f)
        lines, widths, texts = data["lines"], data["widths"], data["texts"]
    arrays = [lines[i, :, : int(w)].astype(np.float32) / 255.0 for i, w in enumerate(widths)]
    return arrays, [str(t) for t in texts]


def fixed_width(arrays: Sequence[np.ndarray], width: int = LINE_WIDTH) -> list[np.ndarray]:
    """Pad (with background) or crop every line to `width` columns."""
    out = []
    for a in arrays:
        line = np.zeros((a.shape[0], width), dtype=np.float32)
        line[:, : min(width, a.shape[1])] = a[:, :width]
        out.append(line)
    return out


def make_batch(arrays: Sequence[np.ndarray], batch_size: int, width: int = LINE_WIDTH,
               device: str | torch.device = "cpu") -> torch.Tensor:
    """A batch of `batch_size` real lines (reused in turn if there are few), each `width` wide,
    stacked by `preprocess.batch` exactly as production stacks them."""
    chosen = [arrays[i % len(arrays)] for i in range(batch_size)]
    return preprocess.batch(fixed_width(chosen, width)).to(device)


def load_model(model_path: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The production TorchScript module as its file holds it (TextRecognizer's `loaded`: lesson
    02 profiles the saved model, on a CPU or a GPU), moved to `device`."""
    return TextRecognizer(model_path, optimize=False).loaded.to(device)


# --- profiling ----------------------------------------------------------------------------------


def activities(device: torch.device) -> list[ProfilerActivity]:
    acts = [ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    return acts


def profile_batch(model: torch.jit.ScriptModule, batch: torch.Tensor, trace_dir: str | os.PathLike,
                  worker_name: str | None = None) -> tuple[profile, Path]:
    """Profile 5 calls of `model(batch)` (wait 1, warm up 1, record 3) and write one trace.

    Returns the profiler (for `key_averages()`) and the `.pt.trace.json` it wrote into
    `trace_dir`; older traces in that folder are removed so each folder holds one run.
    """
    trace_dir = Path(trace_dir)
    trace_dir.mkdir(parents=True, exist_ok=True)
    for old in trace_dir.glob("*.pt.trace.json*"):
        old.unlink()
    steps = sum(PROFILE_SCHEDULE.values())
    # torch 2.13's profiler prints "USDT: ... profiler_start" lines straight to stderr; this level
    # keeps them quiet. It is read when the first profile of the process starts: set it just before.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with torch.inference_mode(), profile(
        activities=activities(batch.device),
        schedule=schedule(**PROFILE_SCHEDULE, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(trace_dir), worker_name=worker_name),
        record_shapes=True,
        profile_memory=True,
    ) as prof:
        for _ in range(steps):
            model(batch)
            prof.step()
    return prof, next(trace_dir.glob("*.pt.trace.json"))


def op_costs(prof: profile, batch_size: int) -> dict[str, float]:
    """Self CPU milliseconds per example of each operator over the recorded steps, largest first."""
    steps = PROFILE_SCHEDULE["active"]
    costs = {e.key: e.self_cpu_time_total / 1000.0 / steps / batch_size
             for e in prof.key_averages() if not e.key.startswith("ProfilerStep")}
    return dict(sorted(costs.items(), key=lambda kv: kv[1], reverse=True))


# --- timing -------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batch(model: torch.jit.ScriptModule, batch: torch.Tensor, repeats: int = 20,
               warmup: int = 2) -> list[float]:
    """Seconds of each of `repeats` calls of `model(batch)`, after `warmup` untimed calls."""
    seconds = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            _sync(batch.device)
            start = time.perf_counter()
            model(batch)
            _sync(batch.device)
            if i >= warmup:
                seconds.append(time.perf_counter() - start)
    return seconds


@dataclass
class Record:
    """One batch size's result. Functions pass records around as plain dicts (`asdict`), the
    same shape as the entries of `summary.json`."""

    batch_size: int
    device: str
    latency_ms_p50: float
    latency_ms_p95: float
    ms_per_example: float
    throughput_per_s: float
    gpu_busy_pct: float | None
    line_width: int
    repeats: int
    threads: int


def summarize(batch_size: int, device: torch.device, seconds: Sequence[float],
              gpu_busy: float | None = None, line_width: int = LINE_WIDTH) -> dict:
    """Latency percentiles of the timed calls; per-example cost and throughput from the median."""
    p50, p95 = (float(np.percentile(np.asarray(seconds) * 1000.0, q)) for q in (50, 95))
    return asdict(Record(
        batch_size=batch_size,
        device=device.type,
        latency_ms_p50=round(p50, 3),
        latency_ms_p95=round(p95, 3),
        ms_per_example=round(p50 / batch_size, 3),
        throughput_per_s=round(1000.0 * batch_size / p50, 2),
        gpu_busy_pct=gpu_busy,
        line_width=line_width,
        repeats=len(seconds),
        threads=torch.get_num_threads(),
    ))


def run_study(model: torch.jit.ScriptModule, arrays: Sequence[np.ndarray],
              batch_sizes: Sequence[int], out: str | os.PathLike, device: torch.device,
              repeats: int = 20, width: int = LINE_WIDTH, trace: bool = True,
              rounds: int = ROUNDS) -> list[dict]:
    """Profile each batch size once (trace in out/traces/bs<N>/; skipped if `trace` is False),
    then time them in separate runs.

    The timed calls are spread over `rounds` passes through all the batch sizes, so a machine
    that slows down for a while (another program, a warming CPU) slows every size alike instead
    of one size that happened to be measured then.
    """
    batches = {bs: make_batch(arrays, bs, width, device) for bs in batch_sizes}
    busy: dict[int, float | None] = dict.fromkeys(batch_sizes)
    if trace:
        for bs, batch in batches.items():
            _, path = profile_batch(model, batch, Path(out) / "traces" / f"bs{bs}", f"bs{bs}")
            busy[bs] = trace_gpu_busy_pct(path) if device.type == "cuda" else None
    rounds = max(1, min(rounds, repeats))
    seconds: dict[int, list[float]] = {bs: [] for bs in batch_sizes}
    for r in range(rounds):
        share = repeats // rounds + (1 if r < repeats % rounds else 0)
        for bs, batch in batches.items():
            seconds[bs] += time_batch(model, batch, share, warmup=2 if r == 0 else 1)
    return [summarize(bs, device, seconds[bs], busy[bs], width) for bs in batch_sizes]


def throughput_ratio(records: Sequence[dict], big: int = 16, small: int = 1) -> float | None:
    """Throughput at batch `big` divided by throughput at batch `small` (None if one is missing)."""
    by_size = {r["batch_size"]: r for r in records}
    if big not in by_size or small not in by_size:
        return None
    return round(by_size[big]["throughput_per_s"] / by_size[small]["throughput_per_s"], 2)


# --- reporting ----------------------------------------------------------------------------------


def format_table(records: Sequence[dict]) -> str:
    """The records as a fixed-width text table."""
    lines = [f"{'batch':>5}  {'device':<6}  {'p50 ms':>8}  {'p95 ms':>8}  {'ms/example':>10}  "
             f"{'examples/s':>10}  {'GPU busy':>8}"]
    for r in records:
        busy = "-" if r["gpu_busy_pct"] is None else f"{r['gpu_busy_pct']:.1f}%"
        lines.append(f"{r['batch_size']:>5}  {r['device']:<6}  {r['latency_ms_p50']:>8.2f}  "
                     f"{r['latency_ms_p95']:>8.2f}  {r['ms_per_example']:>10.2f}  "
                     f"{r['throughput_per_s']:>10.1f}  {busy:>8}")
    return "\n".join(lines)


def plot(records: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Throughput and latency vs batch size, and the latency/throughput trade-off, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = sorted(records, key=lambda r: r["batch_size"])
    sizes = [r["batch_size"] for r in rows]
    thr = [r["throughput_per_s"] for r in rows]
    p50 = [r["latency_ms_p50"] for r in rows]
    p95 = [r["latency_ms_p95"] for r in rows]
    fig = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.plot(sizes, thr, "o-")
    ax1.set(xlabel="batch size", ylabel="examples / s", title="throughput")
    ax2.plot(sizes, p50, "o-", label="p50")
    ax2.plot(sizes, p95, "s--", label="p95")
    ax2.set(xlabel="batch size", ylabel="ms per batch", title="latency")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.grid(alpha=0.3)
    ax3.plot(p50, thr, "o-")
    for s, x, y in zip(sizes, p50, thr, strict=True):
        ax3.annotate(f"bs {s}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax3.set(xlabel="p50 latency per batch (ms)", ylabel="examples / s",
            title="trade-off: latency buys throughput")
    ax3.grid(alpha=0.3)
    ax3.margins(0.12)
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def machine() -> dict:
    """What the numbers were measured on: CPU, cores, threads, torch, and the GPU if any."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --- a page is a batch --------------------------------------------------------------------------


def stack_images(lines: Sequence[Image.Image], gap: int = 12, margin: int = 16) -> Image.Image:
    """Stack line images top to bottom on a white page, left-aligned (a page of text)."""
    grey = [img.convert("L") for img in lines]
    width = max(g.width for g in grey) + 2 * margin
    height = sum(g.height for g in grey) + gap * (len(grey) - 1) + 2 * margin
    page = Image.new("L", (width, height), 255)
    y = margin
    for g in grey:
        page.paste(g, (margin, y))
        y += g.height + gap
    return page


def page_from_lines(arrays: Sequence[np.ndarray], n: int = PAGE_LINES) -> Image.Image:
    """A page of `n` of the shipped lines (dark ink on white), as a scanner would see it."""
    pictures = [Image.fromarray((255 - a * 255).astype(np.uint8), mode="L") for a in arrays[:n]]
    return stack_images(pictures)


def read_line_by_line(model: Callable[[torch.Tensor], list[str]], page: Image.Image,
                      device: str | torch.device = "cpu") -> list[str]:
    """Split the page into lines, then one model call per line (batch 1, n calls)."""
    return [model(preprocess.batch([line]).to(device))[0] for line in preprocess.line_arrays(page)]


def read_as_one_batch(model: Callable[[torch.Tensor], list[str]], page: Image.Image,
                      device: str | torch.device = "cpu") -> list[str]:
    """Split the page into lines, then one call for all of them, as TextRecognizer.predict_lines
    does (widths not rounded up, as in read_line_by_line)."""
    return read_lines(lambda batch: model(batch.to(device)), preprocess.line_arrays(page))


def compare_page(model: torch.jit.ScriptModule, page: Image.Image,
                 device: str | torch.device = "cpu", repeats: int = 5) -> dict:
    """End-to-end seconds (median of `repeats`) to read a page line by line and as one batch.

    Both include splitting the page into lines (`split_s` is that part alone); `texts_match`
    says whether both ways read the same text (padding lines to a shared width can change a
    bidirectional LSTM's output slightly).
    """
    device = torch.device(device)
    by_line, one_batch, split = [], [], []
    with torch.inference_mode():
        texts = (read_line_by_line(model, page, device), read_as_one_batch(model, page, device))
        for _ in range(repeats):
            for fn, out in ((read_line_by_line, by_line), (read_as_one_batch, one_batch)):
                _sync(device)
                start = time.perf_counter()
                fn(model, page, device)
                _sync(device)
                out.append(time.perf_counter() - start)
            start = time.perf_counter()
            preprocess.line_arrays(page)
            split.append(time.perf_counter() - start)
    line_s, batch_s = float(np.median(by_line)), float(np.median(one_batch))
    return {"lines": len(texts[0]), "device": device.type, "repeats": repeats,
            "split_s": round(float(np.median(split)), 4),
            "line_by_line_s": round(line_s, 4), "one_batch_s": round(batch_s, 4),
            "speedup": round(line_s / batch_s, 2), "texts_match": texts[0] == texts[1],
            "spread": round(max(_spread(by_line), _spread(one_batch)), 2)}


def _spread(seconds: Sequence[float]) -> float:
    return max(seconds) / min(seconds) if seconds and min(seconds) > 0 else 1.0


def noise_note(records: Sequence[dict] = (), page: dict | None = None) -> str:
    """One line saying whether these timings look trustworthy: a busy machine (p95 far above p50,
    or page timings that vary run to run) or too few calls for a p95 make ratios unreliable."""
    spreads = [(r["latency_ms_p95"] / r["latency_ms_p50"], f"batch {r['batch_size']}")
               for r in records if r["latency_ms_p50"] > 0]
    if page is not None and "spread" in page:
        spreads.append((page["spread"], "the page (slowest / fastest run)"))
    few = [r["batch_size"] for r in records if r["repeats"] < P95_REPEATS]
    if not spreads:
        return "no timings to judge"
    worst, where = max(spreads)
    if worst > BUSY_SPREAD:
        return (f"warning: the machine looks busy: at {where} the slow runs took x{worst:.1f} the "
                f"typical one (a quiet run stays under x{BUSY_SPREAD}); ratios from this run are "
                "unreliable: close other programs and run it again")
    if few:
        return (f"timings look steady (spread x{worst:.2f}), but p95 came from fewer than "
                f"{P95_REPEATS} calls at batch {', '.join(map(str, few))}: raise repeats for it")
    return f"timings look steady: the slow runs stayed within x{worst:.2f} of the typical one"


# --- command line -------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring profiling",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--batch-sizes", type=positive_int, nargs="+", default=None, metavar="N",
                       help="batch sizes to profile and time (default: 1 16)")
    sizes.add_argument("--sweep", action="store_true",
                       help=f"batch sizes {', '.join(map(str, SWEEP))}: the latency/throughput "
                            "trade-off")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the model runs (default: auto = cuda if there is a GPU)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for traces/, summary.json, profiling.png, benchmark.json "
                             f"(default: {DEFAULT_OUT})")
    parser.add_argument("--model", type=Path, default=None,
                        help="TorchScript model file (default: the bundled model)")
    parser.add_argument("--repeats", type=positive_int, default=20,
                        help="timed calls per batch size (default: 20)")
    parser.add_argument("--page-repeats", type=positive_int, default=5,
                        help="times the 16-line page is read each way (default: 5)")
    parser.add_argument("--width", type=positive_int, default=LINE_WIDTH,
                        help=f"pad or crop every line to this many pixels (default: {LINE_WIDTH})")
    return parser


def write_results(out: Path, records: list[dict], page: dict, device: torch.device, width: int,
                  command: str, model_path: str | os.PathLike | None = None) -> list[Path]:
    """summary.json, profiling.png and benchmark.json (command, the model's version, machine,
    load average, ratio, page) in `out`."""
    info = machine()
    model_file = Path(model_path) if model_path is not None else bundled_model_path()
    summary = out / "summary.json"
    summary.write_text(json.dumps(records, indent=2) + "\n")
    title = (f"{device.type}: {info.get('gpu', info['cpu'])}, torch {info['torch']}, "
             f"{info['torch_threads']} threads, lines {width} px wide")
    png = plot(records, out / "profiling.png", title)
    benchmark = out / "benchmark.json"
    benchmark.write_text(json.dumps({
        "command": command, "measured": time.strftime("%Y-%m-%d"),
        "model": model_file.name, "model_version": model_version(model_file), "machine": info,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "throughput_ratio_bs16_vs_bs1": throughput_ratio(records), "page": page,
    }, indent=2) + "\n")
    return [summary, png, benchmark]


def report(records: list[dict], page: dict) -> str:
    """The table, the batch-16/batch-1 throughput ratio and the page comparison, as text."""
    lines = [format_table(records), ""]
    ratio = throughput_ratio(records)
    if ratio is not None:
        lines.append(f"throughput, batch 16 vs batch 1: x{ratio:.2f}")
    by_line, one_batch = page["line_by_line_s"] * 1000, page["one_batch_s"] * 1000
    lines.append(f"a {page['lines']}-line page: line by line {by_line:.0f} ms, "
                 f"as one batch {one_batch:.0f} ms (x{page['speedup']:.2f})")
    lines.append(noise_note(records, page))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    batch_sizes = SWEEP if args.sweep else tuple(args.batch_sizes or DEFAULT_BATCH_SIZES)
    try:
        device = resolve_device(args.device)
        model = load_model(args.model, device)
        args.out.mkdir(parents=True, exist_ok=True)
    except (DeviceError, FileNotFoundError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    arrays, _ = load_lines()
    records = run_study(model, arrays, batch_sizes, args.out, device, args.repeats, args.width)
    page = compare_page(model, page_from_lines(arrays), device, args.page_repeats)
    command = " ".join(["python -m lab_code.measuring profiling",
                        *(sys.argv[1:] if argv is None else argv)])
    written = write_results(args.out, records, page, device, args.width, command, args.model)
    print(report(records, page))
    print(f"\nwrote {', '.join(map(str, written))} and traces in {args.out / 'traces'}/ "
          "(open them in TensorBoard or https://ui.perfetto.dev)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
