"""Measure a compiled model the way the README's model card reports it: CER on the held-out set
and on clean English lines, size, and single-line latency of eager vs TorchScript.

    python -m lab_code.evaluate --checkpoint models/text_recognizer_checkpoint.pt
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lab_code import data, metrics, preprocess
from lab_code.recognizer import TextRecognizer


def held_out_cer(recognizer: TextRecognizer, size: int = data.TEST_SIZE) -> float:
    pairs = data.test_set()[:size]
    return metrics.cer(recognizer.predict_lines([a for a, _ in pairs]), [t for _, t in pairs])


def english_cer(recognizer: TextRecognizer) -> tuple[float, list[tuple[str, str]]]:
    """CER over every English line in every font (whole pipeline: image in, text out), and the
    lines it got wrong as (truth, prediction)."""
    pairs = data.english_set()
    predictions = recognizer.predict_batch([img for img, _ in pairs])
    truths = [t for _, t in pairs]
    wrong = [(t, p) for t, p in zip(truths, predictions, strict=True) if t != p]
    return metrics.cer(predictions, truths), wrong


def p50_ms(fn: Callable[[], object], repeats: int = 30, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def latency(recognizer: TextRecognizer, checkpoint: Path | None) -> dict[str, float]:
    """p50 milliseconds to read one English line (model call only, on a prepared tensor)."""
    line = data.render(data.english_lines()[0], data.Style.clean(data.fonts()[0], size=30))
    tensor = preprocess.batch([preprocess.line_array(line)])
    out = {"torchscript_ms_p50": p50_ms(lambda: recognizer.model(tensor)),
           "end_to_end_ms_p50": p50_ms(lambda: recognizer.predict(line))}
    if checkpoint is not None:
        from lab_code.train import load_checkpoint

        eager, _ = load_checkpoint(checkpoint)
        with torch.inference_mode():
            out["eager_ms_p50"] = p50_ms(lambda: eager(tensor))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="TorchScript model (default: the bundled model)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="its training checkpoint, to time eager mode too")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    recognizer = TextRecognizer(args.model)
    english, wrong = english_cer(recognizer)
    result = {
        "model": str(recognizer.model_path),
        "size_mb": round(recognizer.model_path.stat().st_size / 1e6, 2),
        "parameters": sum(p.numel() for p in recognizer.model.parameters()),
        "held_out_cer": round(held_out_cer(recognizer), 4),
        "english_cer": round(english, 4),
        "english_lines_wrong": f"{len(wrong)} of {len(data.english_set())}",
        "threads": torch.get_num_threads(),
        **{k: round(v, 2) for k, v in latency(recognizer, args.checkpoint).items()},
    }
    for key, value in result.items():
        print(f"{key:22} {value}")
    for truth, prediction in wrong[:5]:
        print(f"  e.g. {truth!r} -> {prediction!r}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
