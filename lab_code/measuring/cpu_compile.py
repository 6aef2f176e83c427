"""Compile for the CPU: the shipped TorchScript model beside five other ways of running it
(frozen TorchScript, torch.compile, AOTInductor, ONNX Runtime, dynamic int8), timed on the same
lines in the same run, with the text checked against TorchScript's and the share of the CPU's
FP32 peak that each one reaches.

    python -m lab_code.measuring cpu_compile --out profiling/results/cpu_compile --threads 1 2
    python -m lab_code.measuring cpu_compile --quick --out profiling/out/cpu_compile

Every backend is rebuilt at each thread count (Inductor bakes the thread count into the C++ it
writes), with Inductor's caches off, so build times are those of a cold start. A backend whose
dependency is missing (onnxruntime, a C++ compiler) is skipped with the reason in the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lab_code.artifacts import bundled_model_path, load_torchscript
from lab_code.measuring import profiling
from lab_code.measuring.flops import FLOP_FORMULA, conv_peak, flop_counter_check, flops_per_line
from lab_code.measuring.runtimes import (
    BACKENDS,
    BATCH_SIZES,
    QUANTIZATION_API,
    QUANTIZATION_DOCS,
    SLOW_BUILDS,
    Backend,
    Context,
    build,
    captured,
    eager_from_torchscript,
    quantize_int8,
)
from lab_code.training import evaluate
from lab_code.training.model import LineRecognizer

DEFAULT_OUT = Path("profiling/out/cpu_compile")
ROUNDS = 5  # timed calls are spread over this many passes through every backend


# --- parity and timing ---------------------------------------------------------------------------


def line_batches(arrays: Sequence[np.ndarray], batch_size: int,
                 width: int = profiling.LINE_WIDTH) -> list[Tensor]:
    """The lines, `width` wide, stacked into consecutive batches (the last one filled up by
    reusing the first lines)."""
    n = max(1, -(-len(arrays) // batch_size))
    return [profiling.make_batch(arrays[i * batch_size:] + arrays[:i * batch_size], batch_size,
                                 width) for i in range(n)]


@torch.inference_mode()
def parity(backend: Backend, reference: Backend, batches: dict[int, list[Tensor]],
           lines: int) -> dict:
    """At each batch size, how many of the `lines` read differently from the reference, and the
    largest logits difference (None where the backend's logits are not reachable)."""
    out: dict = {"lines": lines}
    diff = 0.0
    for bs, group in batches.items():
        texts = [t for batch in group for t in backend.texts(batch)][:lines]
        expected = [t for batch in group for t in reference.texts(batch)][:lines]
        out[f"lines_differ_bs{bs}"] = sum(a != b for a, b in zip(texts, expected, strict=True))
        if backend.logits is not None and reference.logits is not None:
            for batch in group:
                gap = (backend.logits(batch) - reference.logits(batch)).abs().max().item()
                diff = max(diff, gap)
    out["max_abs_logits_diff"] = None if backend.logits is None else float(f"{diff:.3g}")
    return out


@torch.inference_mode()
def time_calls(fn: Callable[[Tensor], object], batches: Sequence[Tensor], calls: int,
               warmup: int) -> list[float]:
    """Seconds of each of `calls` calls of fn, cycling through `batches`, after `warmup`."""
    for i in range(warmup):
        fn(batches[i % len(batches)])
    seconds = []
    for i in range(calls):
        start = time.perf_counter()
        fn(batches[i % len(batches)])
        seconds.append(time.perf_counter() - start)
    return seconds


def time_backends(backends: dict[str, Backend], batches: dict[int, list[Tensor]], repeats: int,
                  rounds: int = ROUNDS) -> dict[str, dict[int, float]]:
    """Median ms per call of every backend at every batch size. The calls are spread over
    `rounds` passes through all the backends, so noise on the machine hits them all alike."""
    rounds = max(1, min(rounds, repeats))
    seconds: dict[str, dict[int, list[float]]] = {n: {bs: [] for bs in batches} for n in backends}
    for r in range(rounds):
        share = repeats // rounds + (1 if r < repeats % rounds else 0)
        for bs, group in batches.items():
            for name, backend in backends.items():
                seconds[name][bs] += time_calls(backend.texts, group, share,
                                                warmup=2 if r == 0 else 1)
    return {n: {bs: statistics.median(s) * 1000 for bs, s in per.items()}
            for n, per in seconds.items()}


# --- how much of the CPU it uses -----------------------------------------------------------------


# --- int8: what it costs in CER ------------------------------------------------------------------


def _with_model(model: Callable[[Tensor], list[str]]):
    """A production TextRecognizer whose model call is replaced by `model`."""
    from lab_code.recognizer import TextRecognizer

    recognizer = TextRecognizer()
    recognizer.model = model
    return recognizer


def int8_cer(module: torch.jit.ScriptModule, quantized: LineRecognizer, realworld_images: int,
             held_out_lines: int) -> dict:
    """CER of the fp32 (shipped) and the int8 model on the real-world set (one image at a time,
    one thread, as lab_code.training.evaluate reads it) and on the synthetic held-out set, or the
    reason a set was left out. `realworld_images` are spread over the whole set (0: none)."""
    out: dict = {}
    models = {"fp32": module, "int8": quantized}
    try:
        samples = evaluate.realworld_set() if realworld_images else []
    except FileNotFoundError as err:
        out["realworld"] = {"skipped": str(err)}
        samples = []
    if samples:
        step = max(1, len(samples) // realworld_images)
        chosen = samples[::step][:realworld_images]
        row = {"images": len(chosen), "of": len(samples)}
        for name, model in models.items():
            table, _ = evaluate.realworld(_with_model(model), chosen)
            row[f"{name}_cer"] = table["overall"]["cer"]
        row["change"] = round(row["int8_cer"] - row["fp32_cer"], 4)
        out["realworld"] = row
    if held_out_lines:
        row = {"lines": held_out_lines}
        for name, model in models.items():
            row[f"{name}_cer"] = round(evaluate.held_out_cer(_with_model(model),
                                                             held_out_lines), 4)
        row["change"] = round(row["int8_cer"] - row["fp32_cer"], 4)
        out["held_out"] = row
    return out


# --- one run -------------------------------------------------------------------------------------


@dataclass
class Settings:
    backends: tuple[str, ...] = BACKENDS
    threads: tuple[int, ...] = (1,)
    lines: int = 64
    repeats: int = 30
    realworld_images: int = 10_000  # all of them
    held_out_lines: int = 600
    peak_repeats: int = 3


def run_threads(threads: int, settings: Settings, ctx: Context,
                batches: dict[int, list[Tensor]], flops: int, peak: float) -> dict:
    """Build every backend at `threads`, check its text against TorchScript's, time them all
    interleaved, and work out each one's ratio to TorchScript and share of the peak."""
    torch.set_num_threads(threads)
    ctx.threads = threads
    built: dict[str, Backend] = {}
    records: dict[str, dict] = {}
    for name in dict.fromkeys(("torchscript", *settings.backends)):  # the reference first
        backend, records[name] = build(name, ctx)
        if backend is not None:
            built[name] = backend
    if "torchscript" not in built:
        raise RuntimeError(f"the TorchScript model did not load: {records['torchscript']}")
    lines = min(len(group) * bs for bs, group in batches.items())
    for name, backend in built.items():
        records[name]["parity"] = parity(backend, built["torchscript"], batches, lines)
    ms = time_backends(built, batches, settings.repeats)
    base = ms["torchscript"]
    for name in built:
        rec = records[name]
        for bs in batches:
            rec[f"ms_bs{bs}"] = round(ms[name][bs], 3)
            rec[f"ms_per_line_bs{bs}"] = round(ms[name][bs] / bs, 3)
            rec[f"vs_torchscript_bs{bs}"] = round(base[bs] / ms[name][bs], 2)
        big = max(batches)
        rec["pct_of_peak"] = round(100 * flops * big / (ms[name][big] / 1000) / (peak * 1e9), 2)
    return {name: records[name] for name in ("torchscript", *settings.backends)}


def run(settings: Settings, workdir: Path) -> dict:
    """The whole comparison: results as one JSON-ready dict."""
    arrays, _ = profiling.load_lines()
    arrays = arrays[: settings.lines]
    module = load_torchscript(bundled_model_path())
    eager = eager_from_torchscript(module)
    batches = {bs: line_batches(arrays, bs) for bs in BATCH_SIZES}
    width = batches[1][0].shape[-1]
    ctx = Context(module, eager, batches[max(BATCH_SIZES)][0], workdir, 1)
    flops = flops_per_line(eager, width)
    before = torch.get_num_threads()
    peaks, per_threads = {}, {}
    try:
        for threads in settings.threads:
            peaks[str(threads)] = conv_peak(threads, repeats=settings.peak_repeats)
            per_threads[str(threads)] = run_threads(threads, settings, ctx, batches,
                                                    flops["total"], peaks[str(threads)]["gflops"])
        torch.set_num_threads(min(settings.threads))
        quant_warnings: list[str] = []
        with captured(quant_warnings):
            cer = int8_cer(module, quantize_int8(eager), settings.realworld_images,
                           settings.held_out_lines) if "int8" in settings.backends else {}
    finally:
        torch.set_num_threads(before)
    return {
        "setup": {"lines": len(arrays), "line_width": profiling.LINE_WIDTH,
                  "tensor_width": width, "batch_sizes": list(BATCH_SIZES),
                  "repeats": settings.repeats, "rounds": ROUNDS,
                  "threads": list(settings.threads), "backends": list(settings.backends),
                  "model": bundled_model_path().name},
        "flops": {"per_line": flops, "formula": FLOP_FORMULA,
                  "flop_counter": flop_counter_check(eager, width)},
        "peak": peaks,
        "threads": per_threads,
        "int8": {**cer, "api": QUANTIZATION_API, "source": QUANTIZATION_DOCS,
                 "warnings": quant_warnings},
    }


# --- reporting -----------------------------------------------------------------------------------


def format_table(results: dict) -> str:
    """One row per backend and thread count: build time, ms, ratios, parity, share of peak."""
    head = (f"{'backend':<12} {'thr':>3} {'build s':>7} {'ms bs1':>8} {'ms/line bs16':>12} "
            f"{'x bs1':>6} {'x bs16':>6} {'differ 1/16':>12} {'max|dlogit|':>11} {'% peak':>6}")
    rows = [head]
    for threads, records in results["threads"].items():
        for name, r in records.items():
            if r["status"] != "ok":
                rows.append(f"{name:<12} {threads:>3} {r['status']}: {r['reason']}")
                continue
            p = r["parity"]
            diff = p["max_abs_logits_diff"]
            differ = f"{p['lines_differ_bs1']}/{p['lines_differ_bs16']} of {p['lines']}"
            rows.append(
                f"{name:<12} {threads:>3} {r['build_s']:>7.1f} {r['ms_bs1']:>8.2f} "
                f"{r['ms_per_line_bs16']:>12.2f} {r['vs_torchscript_bs1']:>6.2f} "
                f"{r['vs_torchscript_bs16']:>6.2f} "
                f"{differ:>12} "
                f"{'-' if diff is None else f'{diff:.1e}':>11} {r['pct_of_peak']:>6.1f}")
    return "\n".join(rows)


def plot(results: dict):
    """Bars of ms per line at batch 1 and 16 for each backend at the fewest threads measured,
    labelled with the ratio to TorchScript, and each backend's % of the FP32 peak at batch 16
    at every thread count: a matplotlib Figure (no pyplot, so nothing opens a window)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    threads = sorted(results["threads"], key=int)
    ok = {t: {n: r for n, r in results["threads"][t].items() if r["status"] == "ok"}
          for t in threads}
    names = list(ok[threads[0]])
    x = np.arange(len(names))
    for k, bs in enumerate(BATCH_SIZES):
        values = [ok[threads[0]][n][f"ms_per_line_bs{bs}"] for n in names]
        bars = left.bar(x + (k - 0.5) * 0.4, values, 0.4, label=f"batch {bs}")
        labels = [f"x{ok[threads[0]][n][f'vs_torchscript_bs{bs}']:.2f}" for n in names]
        left.bar_label(bars, labels, fontsize=8, padding=2)
    left.set_xticks(x, names)
    left.set(ylabel="ms per line", title=f"ms per line, {threads[0]} thread(s) "
             "(label: times as fast as TorchScript)")
    left.legend()
    left.margins(y=0.15)
    width = 0.8 / len(threads)
    for k, t in enumerate(threads):
        values = [ok[t][n]["pct_of_peak"] if n in ok[t] else 0.0 for n in names]
        bars = right.bar(x + (k - (len(threads) - 1) / 2) * width, values, width,
                         label=f"{t} thread(s), peak {results['peak'][t]['gflops']:.0f} GFLOP/s")
        right.bar_label(bars, [f"{v:.0f}%" for v in values], fontsize=8, padding=2)
    right.set_xticks(x, names, rotation=30)
    mflop = results["flops"]["per_line"]["total"] / 1e6
    right.set(ylabel="% of FP32 conv peak", title=f"share of peak at batch 16 ({mflop:.0f} "
              "MFLOP per line)")
    right.legend(fontsize=8)
    right.margins(y=0.15)
    return fig


def versions() -> dict:
    out = {"torch": torch.__version__, "python": sys.version.split()[0]}
    for name in ("onnxruntime", "onnx", "onnxscript"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring cpu_compile",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for results.json and cpu_compile.png (default: %(default)s)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=None, metavar="NAME",
                        help=f"which to run, of {', '.join(BACKENDS)} (default: all; "
                             "TorchScript, the reference, always runs)")
    parser.add_argument("--threads", type=profiling.positive_int, nargs="+", default=[1],
                        metavar="N",
                        help="torch (and onnxruntime) thread counts to measure (default: 1)")
    parser.add_argument("--repeats", type=profiling.positive_int, default=None,
                        help="timed calls per backend and batch size (default: 30; --quick: 3)")
    parser.add_argument("--realworld-images", type=int, default=None, metavar="N",
                        help="real-world images for int8's CER, spread over the set "
                             "(default: all; --quick: 8; 0: none)")
    parser.add_argument("--held-out-lines", type=int, default=None, metavar="N",
                        help="synthetic held-out lines for int8's CER (default: 600; --quick: "
                             "32; 0: none)")
    parser.add_argument("--quick", action="store_true",
                        help="8 lines, 3 repeats, tiny CER sets and, unless --backends names "
                             "them, no compile/aoti (their builds take ~20-60 s each)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick
    backends = args.backends or [b for b in BACKENDS if not (quick and b in SLOW_BUILDS)]
    pick = lambda value, full, small: value if value is not None else (small if quick else full)  # noqa: E731
    return Settings(backends=tuple(dict.fromkeys(backends)), threads=tuple(args.threads),
                    lines=8 if quick else 64, repeats=pick(args.repeats, 30, 3),
                    realworld_images=pick(args.realworld_images, 10_000, 8),
                    held_out_lines=pick(args.held_out_lines, 600, 32),
                    peak_repeats=2 if quick else 3)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"error: cannot write to {args.out}: {err.strerror}.", file=sys.stderr)
        return 1
    command = " ".join(["python -m lab_code.measuring cpu_compile", *(sys.argv[1:] if argv is None
                                                            else argv)])
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="cpu_compile-") as workdir:
            results = run(settings, Path(workdir))
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    machine = profiling.machine()
    machine.update(load_average_before=load_before,
                   load_average_after=os.getloadavg() if hasattr(os, "getloadavg") else None)
    results = {"command": command, "date": evaluate.machine()["date"], "versions": versions(),
               "machine": machine, "wall_s": round(time.perf_counter() - started, 1), **results}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results).savefig(args.out / "cpu_compile.png", dpi=100)
    print(format_table(results))
    cer = {k: v for k, v in results["int8"].items() if k in ("realworld", "held_out")}
    for name, row in cer.items():
        print(f"int8 CER, {name}: {row}")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'cpu_compile.png'} "
          f"in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
