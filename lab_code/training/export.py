"""Compile a trained checkpoint: TorchScript with `torch.jit.script` (what lessons 01-06 load),
`torch.jit.trace` for contrast (and what it gets wrong here), an eager-vs-compiled parity check,
`torch.export` (.pt2), the maintained successor, and ONNX (what production runs with onnxruntime,
no torch: lesson 07), side by side.

    python -m lab_code.training export runs/recognizer/checkpoint.pt --out model.pt --pt2 model.pt2
    python -m lab_code.training export runs/recognizer/checkpoint.pt --onnx model.onnx

TorchScript is deprecated since torch 2.13 (it still works, and loads without Python model code);
new projects should prefer `torch.export` and the ONNX exporter built on it. This course teaches
all three.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lab_code import ctc, preprocess
from lab_code.artifacts import (
    ONNX_CHARSET_KEY,
    ONNX_HEIGHT_KEY,
    load_torchscript,
    quiet_torchscript,
)
from lab_code.training import data
from lab_code.training.model import LineRecognizer, LogitsOnly
from lab_code.training.train import load_checkpoint


def script(model: LineRecognizer) -> torch.jit.ScriptModule:
    """Compile the whole inference path (CNN, LSTM and CTC decoding) with torch.jit.script."""
    with quiet_torchscript():
        return torch.jit.script(model.eval())


def save_torchscript(model: LineRecognizer, path: str | Path) -> Path:
    """Script `model` and save it as a TorchScript file that loads without this code."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiled = script(model)  # script() hides the deprecation warning of scripting...
    with quiet_torchscript():  # ...and this one that of saving
        compiled.save(str(path))
    return path


def example_batch(n: int = 8, seed: int = 7) -> tuple[Tensor, list[str]]:
    """A batch of rendered lines and their texts, for checks and examples."""
    rng = torch.Generator().manual_seed(seed)
    texts = [data.english_lines()[int(i)] for i in torch.randint(len(data.english_lines()), (n,),
                                                                  generator=rng)]
    fonts = data.fonts()
    arrays = [preprocess.line_array(data.render(t, data.Style.clean(fonts[i % len(fonts)])))
              for i, t in enumerate(texts)]
    return preprocess.batch(arrays), texts


@dataclass
class Parity:
    max_abs_diff: float  # largest difference between eager and compiled logits
    same_text: bool  # do both decode to exactly the same strings?
    texts: list[str]

    @property
    def ok(self) -> bool:
        return self.same_text and self.max_abs_diff < 1e-4


@torch.inference_mode()
def check_parity(eager: LineRecognizer, compiled: torch.jit.ScriptModule, batch: Tensor) -> Parity:
    eager.eval()
    diff = (eager.logits(batch) - compiled.logits(batch)).abs().max().item()
    eager_text, compiled_text = eager(batch), compiled(batch)
    return Parity(diff, eager_text == compiled_text, list(compiled_text))


def collapse_repeats(logits: Tensor) -> Tensor:
    """Greedy CTC decoding that returns class indices as a tensor (so it can be traced)."""
    best = logits.argmax(-1)[0]
    keep = [int(i) for n, i in enumerate(best.tolist()) if i != 0 and (n == 0 or i != best[n - 1])]
    return torch.tensor(keep, dtype=torch.long)


def trace_decoder(example_logits: Tensor) -> torch.jit.ScriptFunction:
    """torch.jit.trace the CTC decoder on one example. Its loop and `if` depend on the data, so
    tracing runs them once and records the result as a constant: the traced decoder answers the
    example's classes for every input (and says so in TracerWarnings)."""
    return torch.jit.trace(collapse_repeats, (example_logits,))


@dataclass
class TraceReport:
    full_model_error: str  # why tracing forward() fails outright
    traced_warnings: list[str]  # what the tracer warned about while tracing the decoder
    text_a: str  # what the traced decoder was traced on...
    text_b: str  # ...and a different line it is then asked to decode
    traced_on_b: str  # what the traced decoder answers for line B (it replays line A)
    scripted_on_b: str  # what the scripted model answers for line B


def trace_pitfalls(model: LineRecognizer, batch: Tensor | None = None) -> TraceReport:
    """Show what torch.jit.trace gets wrong for this model.

    1. Tracing records tensor operations only, so forward(), which returns strings, cannot be
       traced.
    2. The CTC decoder's Python loop and `if` depend on the data. Tracing runs them once on an
       example and records the result as a constant: the traced decoder gives the example's
       answer for every input.
    """
    model.eval()
    if batch is None:
        batch, _ = example_batch(2)
    a, b = batch[:1], batch[1:2]
    charset = model.charset
    with warnings.catch_warnings(record=True) as caught, quiet_torchscript():
        warnings.simplefilter("always", torch.jit.TracerWarning)  # collected for the report
        try:
            torch.jit.trace(model, (a,))
            full_error = "(no error)"
        except Exception as err:  # whatever torch raises, its message is the lesson
            full_error = str(err).strip().splitlines()[0]
        with torch.no_grad():
            logits_a, logits_b = model.logits(a), model.logits(b)
            decoded = trace_decoder(logits_a)(logits_b)
    as_text = lambda idx: "".join(charset[i - 1] for i in idx.tolist()).strip()  # noqa: E731
    return TraceReport(
        full_model_error=full_error,
        traced_warnings=sorted({str(w.message).split(". ")[0] for w in caught
                                if issubclass(w.category, torch.jit.TracerWarning)}),
        text_a=as_text(collapse_repeats(logits_a)),
        text_b=as_text(collapse_repeats(logits_b)),
        traced_on_b=as_text(decoded),
        scripted_on_b=script(model)(b)[0],
    )


def export_pt2(model: LineRecognizer, path: str | Path, example: Tensor | None = None,
               width: int = 128) -> Path:
    """torch.export the tensor part (images -> logits), batch size dynamic.

    torch.export captures tensor graphs only: the string decoding stays in Python
    (`LineRecognizer.decode`), unlike TorchScript, which compiled it too. It also records the
    LSTM step by step for the example's width, so the program accepts lines of exactly that width
    (`width` pixels; pad or crop lines to it), where the scripted model takes any width.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if example is None:
        example, _ = example_batch(2)
    example = fit_width(example, width)
    dims = {"images": {0: torch.export.Dim.AUTO}}
    with warnings.catch_warnings():  # torch's own note about how nn.LSTM stores its weights
        warnings.filterwarnings("ignore", message="The tensor attributes .* were assigned")
        program = torch.export.export(LogitsOnly(model.eval()), (example,), dynamic_shapes=dims)
    torch.export.save(program, str(path))
    return path


def fit_width(batch: Tensor, width: int) -> Tensor:
    """Pad with background (0) or crop a (B, 1, H, W) batch to exactly `width` columns."""
    if batch.shape[-1] >= width:
        return batch[..., :width].contiguous()
    return torch.nn.functional.pad(batch, (0, width - batch.shape[-1]))


def load_pt2(path: str | Path) -> torch.nn.Module:
    return torch.export.load(str(path)).module()


def forget_lstm_dispatch() -> None:
    """Empty torch's per-operator dispatch cache of aten.lstm. One torch.export of this model
    fills it, and a later torch.onnx.export in the same process then follows the cached route
    and fixes the width to its example's (seen with torch 2.13): each export starts clean."""
    lstm = torch.ops.aten.lstm
    for name in lstm.overloads():
        cache = getattr(getattr(lstm, name), "_dispatch_cache", None)
        if cache is not None:
            cache.clear()


ONNX_INPUT, ONNX_OUTPUT = "images", "logits"


@contextlib.contextmanager
def _quiet_exporter():
    """The ONNX exporter's progress lines (stdout), its log lines and torch.export's notes about
    the LSTM's weights and deprecated helpers: none of them is about this model."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the fallback's tracing
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


ONNX_EXPORTER_KEY = "exporter"  # the file's metadata says which exporter wrote it
DYNAMO, LEGACY = "torch.onnx.export(dynamo=True)", "torch.onnx.export(dynamo=False)"


def export_onnx(model: LineRecognizer, path: str | Path) -> Path:
    """Export the tensor part (images -> logits) to one ONNX file with torch.onnx.export's
    current exporter (dynamo=True, built on torch.export; the default since torch 2.9), any
    batch size and any width. The file records the charset and line height in its metadata, so
    onnxruntime plus lab_code.ctc read text from it with nothing else (no torch, no model code).

    Where torch.export cannot capture the LSTM with a dynamic width (torch 2.11, Colab's in
    December 2026: "Pending unbacked symbols"), the TorchScript-based exporter (dynamo=False,
    deprecated but still in torch) writes the same graph instead; the file's "exporter" metadata
    says which one did (onnx_exporter), and staging checks its parity either way.

    A model whose output is text cannot be exported (the exporter captures tensor graphs only):
    the decoding is lab_code.ctc's, in numpy, with the TorchScript model's own rule."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, 1, preprocess.HEIGHT, 64)  # both sizes are dynamic: a small example
    props = {ONNX_CHARSET_KEY: json.dumps(list(model.charset)),
             ONNX_HEIGHT_KEY: str(model.height)}
    dims = {ONNX_INPUT: {0: torch.export.Dim("batch"), 3: torch.export.Dim("width")}}
    forget_lstm_dispatch()
    try:
        with _quiet_exporter():
            program = torch.onnx.export(LogitsOnly(model.eval()), (example,), dynamo=True,
                                        input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                        dynamic_shapes=dims, external_data=False)
    except torch.onnx.OnnxExporterError as err:
        reason = type(err.__cause__ or err).__name__
        print(f"note: torch {torch.__version__}'s torch.export cannot capture this model "
              f"({reason}); exporting with the TorchScript-based exporter instead.",
              file=sys.stderr)
        _export_legacy(model, example, path, props, reason)
        return path
    props[ONNX_EXPORTER_KEY] = f"{DYNAMO}, torch {torch.__version__}"
    program.model.metadata_props.update(props)
    with _quiet_exporter():
        program.save(str(path), external_data=False)
    return path


def _export_legacy(model: LineRecognizer, example: Tensor, path: Path, props: dict[str, str],
                   reason: str) -> None:
    """The TorchScript-based exporter, for a torch whose torch.export fails on this model."""
    import onnx

    with _quiet_exporter():
        torch.onnx.export(LogitsOnly(model.eval()), (example,), str(path), dynamo=False,
                          input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT], opset_version=17,
                          dynamic_axes={ONNX_INPUT: {0: "batch", 3: "width"},
                                        ONNX_OUTPUT: {0: "batch", 1: "time"}})
    graph = onnx.load(str(path))
    props[ONNX_EXPORTER_KEY] = f"{LEGACY}, torch {torch.__version__} (torch.export: {reason})"
    for key, value in props.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))


def onnx_exporter(path: str | Path) -> str:
    """Which exporter wrote an ONNX file export_onnx made (its metadata), or "unknown"."""
    from lab_code.artifacts import load_onnx

    return exporter_of(load_onnx(path, threads=1))


def exporter_of(session) -> str:
    """onnx_exporter for a file already loaded in an onnxruntime session."""
    return session.get_modelmeta().custom_metadata_map.get(ONNX_EXPORTER_KEY, "unknown")


@dataclass
class OnnxParity:
    max_abs_diff: float  # largest difference between eager and ONNX Runtime logits
    same_text: bool  # does lab_code.ctc's decoding of ORT's logits give the eager model's text?
    exporter: str  # which exporter wrote the file (onnx_exporter)

    @property
    def ok(self) -> bool:
        return self.same_text and self.max_abs_diff < 1e-3


@torch.inference_mode()
def check_onnx_parity(eager: LineRecognizer, path: str | Path, batch: Tensor) -> OnnxParity:
    """Run the ONNX file with onnxruntime on `batch` and compare with the eager model."""
    from lab_code.artifacts import load_onnx

    eager.eval()
    session = load_onnx(path, threads=1)
    logits = session.run(None, {ONNX_INPUT: batch.numpy()})[0]
    diff = float(np.abs(logits - eager.logits(batch).numpy()).max())
    texts = [text for text, _ in ctc.greedy(logits, list(eager.charset))]
    return OnnxParity(diff, texts == eager(batch), exporter_of(session))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.training export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path,
                        help="checkpoint.pt written by lab_code.training.train")
    parser.add_argument("--out", type=Path, default=Path("text_recognizer.pt"),
                        help="TorchScript file to write (default: %(default)s)")
    parser.add_argument("--pt2", type=Path, default=None, help="also write a torch.export .pt2")
    parser.add_argument("--onnx", type=Path, default=None,
                        help="also write an ONNX file (logits; onnxruntime runs it without torch)")
    parser.add_argument("--pt2-width", type=int, default=128,
                        help="line width in pixels the .pt2 program is made for (default: 128)")
    parser.add_argument("--show-trace", action="store_true",
                        help="also show what torch.jit.trace gets wrong for this model")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.checkpoint.is_file():
        print(f"error: no checkpoint at {args.checkpoint}: train one with "
              "`python -m lab_code.training train` first.", file=sys.stderr)
        return 1
    model, _ = load_checkpoint(args.checkpoint)
    save_torchscript(model, args.out)
    batch, _ = example_batch()
    parity = check_parity(model, load_torchscript(args.out), batch)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB); parity with eager: "
          f"max |diff| {parity.max_abs_diff:.2e}, same text: {parity.same_text}")
    if args.pt2:
        export_pt2(model, args.pt2, batch, width=args.pt2_width)
        print(f"wrote {args.pt2} with torch.export ({args.pt2.stat().st_size / 1e6:.2f} MB)")
    ok = parity.ok
    if args.onnx:
        export_onnx(model, args.onnx)
        onnx_parity = check_onnx_parity(model, args.onnx, batch)
        ok = ok and onnx_parity.ok
        print(f"wrote {args.onnx} with torch.onnx.export(dynamo=True) "
              f"({args.onnx.stat().st_size / 1e6:.2f} MB); parity with eager: max |diff| "
              f"{onnx_parity.max_abs_diff:.2e}, same text: {onnx_parity.same_text}")
    if args.show_trace:
        report = trace_pitfalls(model, batch)
        for key, value in vars(report).items():
            print(f"{key}: {value}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
