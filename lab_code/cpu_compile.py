"""Compile for the CPU: the shipped TorchScript model beside five other ways of running it
(frozen TorchScript, torch.compile, AOTInductor, ONNX Runtime, dynamic int8), timed on the same
lines in the same run, with the text checked against TorchScript's and the share of the CPU's
FP32 peak that each one reaches.

    python -m lab_code.cpu_compile --out profiling/results/cpu_compile --threads 1 2
    python -m lab_code.cpu_compile --quick --out profiling/out/cpu_compile

Every backend is rebuilt at each thread count (Inductor bakes the thread count into the C++ it
writes), with Inductor's caches off, so build times are those of a cold start. A backend whose
dependency is missing (onnxruntime, a C++ compiler) is skipped with the reason in the results.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from lab_code import evaluate, profiling
from lab_code.artifacts import bundled_model_path, load_torchscript, optimize_for_cpu
from lab_code.model import LineRecognizer, LogitsOnly

BACKENDS = ("torchscript", "frozen", "compile", "aoti", "onnxruntime", "int8")
SLOW_BUILDS = ("compile", "aoti")  # ~20-60 s each on a laptop CPU; --quick leaves them out
DEFAULT_OUT = Path("profiling/out/cpu_compile")
BATCH_SIZES = (1, 16)
ROUNDS = 5  # timed calls are spread over this many passes through every backend
# (batch, channels in = out, height, width) of the 3x3 convolutions that measure the peak
PEAK_SHAPES = ((16, 64, 32, 512), (16, 128, 32, 256), (16, 256, 16, 128))
QUANTIZATION_DOCS = "https://docs.pytorch.org/docs/2.13/quantization.html"
QUANTIZATION_API = (
    "torch.ao.quantization (quantize_dynamic included) is deprecated: torch 2.13 warns on use and "
    "its docs say all quantization work moves to torchao (eager quantize_dynamic -> torchao's "
    "quantize_ with e.g. Int8DynamicActivationInt8WeightConfig, which covers linear layers, not "
    "LSTMs; FX -> torchao's pt2e prepare_pt2e/convert_pt2e) and that torch.ao.quantization is to "
    "be deleted in 2.10 or as soon as its blockers clear. Tracker: pytorch/ao#2259."
)


class Unavailable(RuntimeError):
    """A backend cannot be built on this machine (a missing package or compiler), in one
    sentence that says what to install."""


# --- the models ----------------------------------------------------------------------------------


def eager_from_torchscript(module: torch.jit.ScriptModule) -> LineRecognizer:
    """The eager LineRecognizer with the TorchScript module's weights: channels and hidden size
    are read from the weight shapes, the charset from the module's `charset` attribute."""
    state = module.state_dict()
    channels = tuple(int(state[f"features.{i}.0.weight"].shape[0]) for i in range(5))
    hidden = int(state["rnn.weight_hh_l0"].shape[1])
    model = LineRecognizer("".join(module.charset), channels, hidden)
    model.load_state_dict(state)
    return model.eval()


def quantize_int8(model: LineRecognizer) -> LineRecognizer:
    """A copy with its LSTM and Linear layers dynamically quantized to int8 (weights stored as
    int8; activations quantized on the fly). The convolutions stay fp32."""
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.LSTM, nn.Linear},
                                                  dtype=torch.qint8)


def compiler() -> str | None:
    """The C++ compiler Inductor would call ($CXX, else g++), or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


# --- backends ------------------------------------------------------------------------------------


@dataclass
class Context:
    """What every builder starts from: the shipped module, its eager twin, an example batch."""

    module: torch.jit.ScriptModule
    eager: LineRecognizer
    example: Tensor  # (B, 1, 32, W) at the width every benchmark line has
    workdir: Path
    threads: int


@dataclass
class Backend:
    """One way of running the model: images -> texts, and images -> logits where reachable."""

    name: str
    texts: Callable[[Tensor], list[str]]
    logits: Callable[[Tensor], Tensor] | None
    portability: str
    notes: dict = field(default_factory=dict)


def build_torchscript(ctx: Context) -> Backend:
    return Backend("torchscript", ctx.module, ctx.module.logits,
                   "one .pt file; loads with Python + torch (torch.jit.load) or C++ libtorch, "
                   "without the model's code; TorchScript is deprecated since torch 2.13 (the "
                   "loader, artifacts.load_torchscript, hides that one warning)")


def build_frozen(ctx: Context) -> Backend:
    frozen = optimize_for_cpu(ctx.module)
    with torch.inference_mode():
        frozen(ctx.example)  # the first calls run the optimization passes
    return Backend("frozen", frozen, None,
                   "made from the .pt at load time (artifacts.optimize_for_cpu); cannot be saved "
                   "and loaded again; Python + torch; freezing keeps forward() only, so its "
                   "logits are not reachable")


def build_compile(ctx: Context) -> Backend:
    if compiler() is None:
        raise Unavailable("torch.compile on the CPU needs a C++ compiler: install g++ "
                          "(apt-get install g++) or set $CXX.")
    torch._dynamo.reset()
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    compiled = torch.compile(ctx.eager.logits, dynamic=True)
    with torch.inference_mode():
        for bs in BATCH_SIZES:  # batch 1 gets a graph of its own (0/1 specialization)
            compiled(ctx.example[:bs])
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before
    return Backend("compile", lambda x: ctx.eager.decode(compiled(x)), compiled,
                   "nothing to ship: compiled in the serving process at start-up, which needs "
                   "Python, torch, the model's Python code and a C++ compiler on the server",
                   {"dynamic": True, "graphs_for_batch_1_and_16": graphs})


def input_ranges(program: torch.export.ExportedProgram) -> list[list[int | None]]:
    """[lowest, highest] size of each dimension of the program's input that it was exported for
    (highest None: unbounded); a static dimension is [n, n]."""
    images = next(n for n in program.graph.nodes
                  if n.op == "placeholder" and n.name in program.graph_signature.user_inputs)
    out: list[list[int | None]] = []
    for size in images.meta["val"].shape:
        if isinstance(size, int):
            out.append([size, size])
            continue
        bounds = program.range_constraints[size.node.expr]
        try:
            upper = int(bounds.upper)
        except (TypeError, AttributeError):  # sympy's oo or torch's int_oo: no upper bound
            upper = None
        out.append([int(bounds.lower), upper])
    return out


def fits(shape: Sequence[int], ranges: Sequence[Sequence[int | None]]) -> bool:
    return len(shape) == len(ranges) and all(
        lo <= n and (hi is None or n <= hi) for n, (lo, hi) in zip(shape, ranges, strict=True))


def forget_lstm_dispatch() -> None:
    """Empty torch's per-operator dispatch cache of aten.lstm. One torch.export of this model
    fills it, and a later torch.onnx.export in the same process then follows the cached route
    and fixes the width to its example's (seen with torch 2.13): each export starts clean."""
    lstm = torch.ops.aten.lstm
    for name in lstm.overloads():
        cache = getattr(getattr(lstm, name), "_dispatch_cache", None)
        if cache is not None:
            cache.clear()


def build_aoti(ctx: Context) -> Backend:
    if compiler() is None:
        raise Unavailable("AOTInductor needs a C++ compiler: install g++ (apt-get install g++) "
                          "or set $CXX.")
    forget_lstm_dispatch()
    # Any batch; the width as free as torch.export finds it can be (Dim.AUTO: an explicit
    # Dim("width") fails on this LSTM, AUTO keeps it dynamic in torch 2.13).
    dims = {"images": {0: torch.export.Dim("batch", min=1), 3: torch.export.Dim.AUTO}}
    program = torch.export.export(LogitsOnly(ctx.eager).eval(), (ctx.example,),
                                  dynamic_shapes=dims)
    ranges = input_ranges(program)
    path = torch._inductor.aoti_compile_and_package(
        program, package_path=str(ctx.workdir / f"aoti_{ctx.threads}t.pt2"))
    runner = torch._inductor.aoti_load_package(path)

    def logits(images: Tensor) -> Tensor:
        # A package called with a shape outside what it was built for can crash the process
        # (seen: a "double free" abort on another width), so the shape is checked first.
        if not fits(images.shape, ranges):
            raise ValueError(f"this AOTInductor package takes images of sizes {ranges} "
                             f"(per dimension, None: any), not {list(images.shape)}.")
        return runner(images)

    size_mb = round(Path(path).stat().st_size / 1e6, 2)
    return Backend("aoti", lambda x: ctx.eager.decode(logits(x)), logits,
                   f".pt2 package ({size_mb} MB) holding a compiled .so; loads with "
                   "torch._inductor.aoti_load_package (Python + torch) or C++ libtorch, no "
                   "compiler and no model code needed; built for one CPU architecture; input "
                   f"sizes {ranges}",
                   {"input_ranges": ranges, "size_mb": size_mb})


def ort_session(path: Path, threads: int):
    """An ONNX Runtime CPU session running its operators on `threads` threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def build_onnxruntime(ctx: Context) -> Backend:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise Unavailable("onnxruntime is not installed: pip install onnxruntime "
                          "(or the package's 'fast' extra).") from err
    path = ctx.workdir / "model.onnx"
    dims = {"images": {0: torch.export.Dim("batch"), 3: torch.export.Dim("width")}}
    small = ctx.example[:2, ..., :64].contiguous()  # both dims are dynamic: a small example
    forget_lstm_dispatch()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its progress lines
            program = torch.onnx.export(LogitsOnly(ctx.eager).eval(), (small,), dynamo=True,
                                        input_names=["images"], output_names=["logits"],
                                        dynamic_shapes=dims)
    except ImportError as err:
        raise Unavailable(f"torch.onnx.export needs onnx and onnxscript ({err}): pip install "
                          "onnx onnxscript.") from err
    program.save(str(path))
    shape = program.model_proto.graph.input[0].type.tensor_type.shape.dim
    sizes = [d.dim_param or d.dim_value for d in shape]  # a name where the size is dynamic
    session = ort_session(path, ctx.threads)

    def logits(images: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])

    size_mb = round(path.stat().st_size / 1e6, 2)
    return Backend("onnxruntime", lambda x: ctx.eager.decode(logits(x)), logits,
                   f".onnx file ({size_mb} MB); loads with onnxruntime alone (no torch), any "
                   "batch and width; the CTC decoding is a few lines of numpy there",
                   {"exporter": "torch.onnx.export(dynamo=True), the default since torch 2.9",
                    "input_sizes": sizes, "onnxruntime": ort.__version__,
                    "intra_op_num_threads": ctx.threads, "size_mb": size_mb})


def build_int8(ctx: Context) -> Backend:
    quantized = quantize_int8(ctx.eager)
    return Backend("int8", quantized, quantized.logits,
                   "eager module: needs Python, torch and the model's code (save its "
                   "state_dict); its API, torch.ao.quantization, is deprecated",
                   {"quantized": "nn.LSTM and nn.Linear to qint8 (dynamic); convolutions fp32"})


BUILDERS: dict[str, Callable[[Context], Backend]] = {
    "torchscript": build_torchscript, "frozen": build_frozen, "compile": build_compile,
    "aoti": build_aoti, "onnxruntime": build_onnxruntime, "int8": build_int8,
}


LOG_PREFIXES = ("torch", "onnx")  # torch.onnx, onnxscript, onnx_ir: their loggers' names


def _their_loggers() -> list[logging.Logger]:
    """torch's and ONNX's loggers that print on their own (torch._logging gives many a stderr
    handler that does not propagate), plus the top-level ones."""
    named = [lg for name, lg in logging.Logger.manager.loggerDict.items()
             if isinstance(lg, logging.Logger) and name.startswith(LOG_PREFIXES) and lg.handlers]
    tops = [logging.getLogger(name) for name in ("torch", "onnxscript", "onnx_ir")]
    return list(dict.fromkeys(named + tops))


@contextlib.contextmanager
def captured(into: list[str]) -> Iterator[None]:
    """Record every warning, and every torch/ONNX log line at WARNING or above, as
    'Category: first line' into `into` (each once) instead of printing it."""
    seen: list[tuple[str, str]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((f"log {record.levelname.lower()}", record.getMessage()))

    handler = Collect(logging.WARNING)
    saved = {lg: (lg.handlers[:], lg.propagate) for lg in _their_loggers()}
    for lg in saved:
        lg.handlers, lg.propagate = [handler], False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                seen[:0] = [(w.category.__name__, str(w.message)) for w in caught]
    finally:
        for lg, (handlers, propagate) in saved.items():
            lg.handlers, lg.propagate = handlers, propagate
        for kind, text in seen:
            first = text.strip().splitlines()[0] if text.strip() else ""
            first = first.split(" (Triggered internally at")[0][:300]
            if f"{kind}: {first}" not in into and not any(n in first for n in HARNESS_NOTES):
                into.append(f"{kind}: {first}")


COLD = ("compile", "aoti")  # built with Inductor, whose caches would make a rebuild look fast
HARNESS_NOTES = ("force_disable_caches",)  # what turning those caches off makes torch say


def cold_inductor(cold: bool) -> contextlib.AbstractContextManager:
    """Inductor's caches off for the duration (a cold start's build time), if `cold`."""
    if not cold:
        return contextlib.nullcontext()
    return torch._inductor.config.patch(force_disable_caches=True)


def build(name: str, ctx: Context) -> tuple[Backend | None, dict]:
    """Build one backend at ctx.threads: (backend, record) where record holds the build time and
    the warnings it emitted; (None, record with a one-line reason) when it cannot be built."""
    record: dict = {"warnings": []}
    start = time.perf_counter()
    try:
        with captured(record["warnings"]), cold_inductor(name in COLD):
            backend = BUILDERS[name](ctx)
    except Unavailable as err:
        return None, {**record, "status": "skipped", "reason": str(err)}
    except Exception as err:  # whatever a compiler raises, one line in the results says it
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return None, {**record, "status": "failed", "reason": f"{type(err).__name__}: {first}"}
    return backend, {**record, "status": "ok", "build_s": round(time.perf_counter() - start, 2),
                     "portability": backend.portability, **backend.notes}


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

FLOP_FORMULA = (
    "2 FLOPs per multiply-add. conv: 2*Cout*Cin*kh*kw*Hout*Wout each (bias-free; batch norm "
    "folds away); collapse conv: 2*C*C*2*1*T (+bias ignored); LSTM: 2 directions * T steps * "
    "2*4H*(I+H) (gate matmuls; biases and gate nonlinearities ignored); Linear: 2*2H*classes*T. "
    "T = W/4 steps; ReLU, max-pool and softmax-free decoding not counted."
)


def flops_per_line(model: LineRecognizer, width: int) -> dict[str, int]:
    """Multiply-add FLOPs of one line `width` columns wide, layer by layer, from the shapes."""
    h, w = model.height, width
    out: dict[str, int] = {}
    for i, block in enumerate(model.features):
        conv = block[0]
        cout, cin, kh, kw = conv.weight.shape
        out[f"conv{i + 1}"] = 2 * cout * cin * kh * kw * h * w
        pool = block[3] if len(block) > 3 else None
        if pool is not None:
            ph, pw = (pool.kernel_size, pool.kernel_size) if isinstance(pool.kernel_size, int) \
                else pool.kernel_size
            h, w = h // ph, w // pw
    cout, cin, kh, kw = model.collapse.weight.shape
    steps = w
    out["collapse"] = 2 * cout * cin * kh * kw * (h - kh + 1) * steps
    rnn = model.rnn
    out["lstm"] = 2 * steps * 2 * 4 * rnn.hidden_size * (rnn.input_size + rnn.hidden_size)
    out["linear"] = 2 * model.classify.in_features * model.classify.out_features * steps
    out["total"] = sum(out.values())
    return out


def flop_counter_check(model: LineRecognizer, width: int) -> dict:
    """torch.utils.flop_counter's count of one line beside the formula. FlopCounterMode counts
    convolutions and matmuls but not the fused CPU LSTM kernel, so the LSTM is checked on one
    step of an nn.LSTMCell with the same sizes (which runs as counted matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    formula = flops_per_line(model, width)
    line = torch.zeros(1, 1, model.height, width)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.logits(line)
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    cell = nn.LSTMCell(model.rnn.input_size, model.rnn.hidden_size)
    with FlopCounterMode(display=False) as step, torch.inference_mode():
        cell(torch.zeros(1, model.rnn.input_size))
    steps = width // 4
    return {
        "counted_total": int(counter.get_total_flops()), "counted_by_op": by_op,
        "formula_without_lstm": formula["total"] - formula["lstm"],
        "lstm_step_counted_on_lstm_cell": int(step.get_total_flops()),
        "lstm_step_by_formula": formula["lstm"] // (2 * steps),
    }


@torch.inference_mode()
def conv_peak(threads: int, shapes: Sequence[tuple[int, int, int, int]] = PEAK_SHAPES,
              repeats: int = 3) -> dict:
    """GFLOP/s of large fp32 3x3 convolutions (oneDNN) in the plain and the channels-last
    layout; the best of them is the practical FP32 peak that the fraction-of-peak figures divide
    by. Wider convolutions get closer to the hardware's limit, hence several shapes."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    measured = []
    try:
        for n, c, h, w in shapes:
            flops = 2 * n * c * c * 9 * h * w
            for layout in (torch.contiguous_format, torch.channels_last):
                x = torch.randn(n, c, h, w).to(memory_format=layout)
                weight = torch.randn(c, c, 3, 3).to(memory_format=layout)
                conv = lambda x, weight=weight: nn.functional.conv2d(x, weight, padding=1)  # noqa: E731
                seconds = time_calls(conv, [x], repeats, warmup=1)
                measured.append({"shape": [n, c, h, w], "layout": str(layout).split(".")[-1],
                                 "gflops": round(flops / min(seconds) / 1e9, 1)})
    finally:
        torch.set_num_threads(before)
    return {"gflops": max(m["gflops"] for m in measured), "threads": threads,
            "measured": measured}


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
    one thread, as lab_code.evaluate reads it) and on the synthetic held-out set, or the reason
    a set was left out. `realworld_images` are spread over the whole set (0: none)."""
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
    parser = argparse.ArgumentParser(prog="python -m lab_code.cpu_compile", description=__doc__,
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
    command = " ".join(["python -m lab_code.cpu_compile", *(sys.argv[1:] if argv is None
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
