"""Six ways to run the recognizer on a CPU, each built the same way from the shipped TorchScript
file: TorchScript as loaded, frozen TorchScript, torch.compile, AOTInductor, ONNX Runtime and
dynamic int8. A way that needs what this machine lacks (onnxruntime, a C++ compiler) raises
Unavailable with one sentence, and lab_code.measuring.cpu_compile compares the rest.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from lab_code.artifacts import load_onnx, optimize_for_cpu
from lab_code.training.export import export_onnx, exporter_of, forget_lstm_dispatch
from lab_code.training.model import LineRecognizer, LogitsOnly

BATCH_SIZES = (1, 16)  # the batch sizes built for and timed
BACKENDS = ("torchscript", "frozen", "compile", "aoti", "onnxruntime", "int8")
SLOW_BUILDS = ("compile", "aoti")  # ~20-60 s each on a laptop CPU; --quick leaves them out
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


def build_onnxruntime(ctx: Context) -> Backend:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise Unavailable("onnxruntime is not installed: pip install onnxruntime "
                          "(or the package's 'fast' extra).") from err
    path = ctx.workdir / "model.onnx"
    try:  # the exporter and session production uses (lab_code.recognizer.OnnxRecognizer)
        export_onnx(ctx.eager, path)
    except ImportError as err:
        raise Unavailable(f"torch.onnx.export needs onnx and onnxscript ({err}): pip install "
                          "onnx onnxscript.") from err
    session = load_onnx(path, ctx.threads)
    sizes = session.get_inputs()[0].shape  # a name where the size is dynamic

    def logits(images: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])

    size_mb = round(path.stat().st_size / 1e6, 2)
    return Backend("onnxruntime", lambda x: ctx.eager.decode(logits(x)), logits,
                   f".onnx file ({size_mb} MB); loads with onnxruntime alone (no torch), any "
                   "batch and width; the CTC decoding is a few lines of numpy there "
                   "(lab_code.ctc): what production ships",
                   {"exporter": exporter_of(session),
                    "input_sizes": sizes, "onnxruntime": ort.__version__,
                    "intra_op_num_threads": ctx.threads, "spinning": "off",
                    "size_mb": size_mb})


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
