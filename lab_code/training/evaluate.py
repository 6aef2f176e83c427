"""Measure a compiled model the way the README's model card reports it: CER on the held-out sets
and on clean English lines, size, single-line latency of eager vs TorchScript, and CER per family
on the real-world set and the document set, side by side with Tesseract if asked.

    python -m lab_code.training evaluate --checkpoint models/text_recognizer_checkpoint.pt
    python -m lab_code.training evaluate --realworld-only --documents --tesseract --json sbs.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from lab_code import preprocess
from lab_code.artifacts import model_version
from lab_code.recognizer import TextRecognizer
from lab_code.training import data, metrics
from lab_code.training.metrics import Reading, read_all  # noqa: F401 - part of this module's API

# The committed real-world set (rebuilt by tools/realworld.py) and document set (rebuilt by
# tools/docset.py); present in a clone of the repository.
REALWORLD_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "realworld"
DOCUMENTS_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "documents"
REALWORLD_LABELS = "labels.json"
# Rows of the document table that gather families: every single line at 100 dpi (text and
# code), and every code line (100 and 150 dpi).
DOCUMENT_GROUPS = {"lines_100dpi": ("line_100dpi", "code_100dpi"),
                   "code": ("code_100dpi", "code_150dpi")}


def held_out_cer(recognizer: TextRecognizer, size: int = data.TEST_SIZE,
                 which: str = "augmented") -> float:
    return data.held_out_cer(recognizer.predict_lines, size, which=which)["cer"]


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
    out = {"torchscript_ms_p50": p50_ms(lambda: recognizer.loaded(tensor)),
           "optimized_ms_p50": p50_ms(lambda: recognizer.model(tensor)),
           "end_to_end_ms_p50": p50_ms(lambda: recognizer.predict(line))}
    if checkpoint is not None:
        from lab_code.training.train import load_checkpoint

        eager, _ = load_checkpoint(checkpoint)
        with torch.inference_mode():
            out["eager_ms_p50"] = p50_ms(lambda: eager(tensor))
    return out


@dataclass(frozen=True)
class Sample:
    """One image of the real-world set and the exact text in it (lines joined by newlines)."""

    path: Path
    family: str
    text: str

    @property
    def paragraph(self) -> bool:
        return self.family == "paragraph" or "\n" in self.text


Reader = Callable[[Image.Image, Sample], str]


def _labelled_set(root: Path, name: str, script: str) -> list[Sample]:
    labels = Path(root) / REALWORLD_LABELS
    if not labels.is_file():
        raise FileNotFoundError(f"No {name} at {root}: run it from a clone of the "
                                f"repository, or rebuild it with `python {script}`.")
    records = json.loads(labels.read_text(encoding="utf-8"))
    return [Sample(Path(root) / r["file"], r["family"], r["text"]) for r in records]


def realworld_set(root: Path = REALWORLD_DIR) -> list[Sample]:
    """The real-world set's samples, in the labels file's order."""
    return _labelled_set(root, "real-world set", "tools/realworld.py")


def documents_set(root: Path = DOCUMENTS_DIR) -> list[Sample]:
    """The document set's samples (lines and blocks of PDF manuals), in the labels' order."""
    return _labelled_set(root, "document set", "tools/docset.py")


def by_family(samples: Sequence[Sample], readings: Sequence[Reading],
              gather: dict[str, Sequence[str]] | None = None) -> dict[str, dict]:
    """CER, ms per line (the truth's lines), images and errors for each family, for each row of
    `gather` (a name and the families it gathers) and overall."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.family, []).append(i)
    for name, families in (gather or {}).items():
        groups[name] = [i for i, s in enumerate(samples) if s.family in families]
    groups["overall"] = list(range(len(samples)))
    table = {}
    for family, idx in groups.items():
        truths = [samples[i].text for i in idx]
        lines = sum(t.count("\n") + 1 for t in truths)
        table[family] = {
            "images": len(idx), "lines": lines,
            "cer": round(metrics.cer([readings[i].text for i in idx], truths), 4),
            "ms_per_line": round(sum(readings[i].ms for i in idx) / lines, 2),
            "errors": sum(bool(readings[i].error) for i in idx),
        }
    return table


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread for the duration (the peer is held to one thread too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def recognizer_reader(recognizer: TextRecognizer) -> Reader:
    return lambda img, sample: recognizer.predict(img)


def realworld(recognizer: TextRecognizer, samples: Sequence[Sample],
              gather: dict[str, Sequence[str]] | None = None) -> tuple[dict, list[Reading]]:
    """The recognizer's table on a labelled set (one thread, one image at a time)."""
    with one_thread():
        readings = read_all(recognizer_reader(recognizer), samples)
    return by_family(samples, readings, gather), readings


def tesseract_readings(samples: Sequence[Sample]) -> tuple[str, list[Reading]]:
    """Tesseract's version and its readings of `samples`, as a user would run it (`--psm 6` for
    a paragraph card, `--psm 7` for a line), timed in a process of its own on one thread."""
    from lab_code.training import tesseract

    jobs = [(s.path, tesseract.PSM_BLOCK if s.paragraph else tesseract.PSM_LINE) for s in samples]
    answer = tesseract.read_apart(jobs)
    return answer["version"], [Reading(r["text"], r["ms"], r["error"])
                               for r in answer["readings"]]


def machine() -> dict:
    """Where and when the figures were measured."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu, "cores": os.cpu_count(), "load_average": load,
            "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform()}


def side_by_side(recognizer: TextRecognizer, samples: Sequence[Sample],
                 with_tesseract: bool, gather: dict[str, Sequence[str]] | None = None) -> dict:
    """Both readers on the same images in one run, each on one thread."""
    table, readings = realworld(recognizer, samples, gather)
    result: dict = {"images": len(samples), "recognizer": table,
                    "recognizer_errors": [(str(s.path.name), r.error)
                                          for s, r in zip(samples, readings, strict=True)
                                          if r.error][:10]}
    if with_tesseract:
        result["tesseract_version"], readings = tesseract_readings(samples)
        result["tesseract"] = by_family(samples, readings, gather)
    return result


def print_table(result: dict) -> None:
    peer = result.get("tesseract")
    head = f"{'family':12} {'images':>6} {'lines':>6} {'CER':>7} {'ms/line':>8}"
    print(head + (f" | {'Tesseract CER':>13} {'ms/line':>8}" if peer else ""))
    for family, row in result["recognizer"].items():
        line = (f"{family:12} {row['images']:6} {row['lines']:6} {row['cer']:7.2%} "
                f"{row['ms_per_line']:8.2f}")
        if peer:
            line += f" | {peer[family]['cer']:13.2%} {peer[family]['ms_per_line']:8.2f}"
        print(line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.training evaluate",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="TorchScript model (default: the bundled model)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="its training checkpoint, to time eager mode too")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--realworld", type=Path, default=REALWORLD_DIR,
                        help="the real-world set (default: the committed one)")
    parser.add_argument("--realworld-only", action="store_true",
                        help="skip the synthetic sets and the latency (the tables of real images "
                             "only)")
    parser.add_argument("--documents", nargs="?", type=Path, const=DOCUMENTS_DIR, default=None,
                        metavar="DIR", help="also read the document set (lines and blocks of PDF "
                        "manuals at 100 and 150 dpi; default DIR: the committed one)")
    parser.add_argument("--tesseract", action="store_true",
                        help="also run Tesseract on the same images (needs libtesseract: "
                             "apt-get install -y tesseract-ocr tesseract-ocr-eng)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint is not None and args.realworld_only:
        parser.error("--checkpoint times eager mode beside the latency figures, which "
                     "--realworld-only skips: drop one of them.")
    try:
        recognizer = TextRecognizer(args.model)
        samples = realworld_set(args.realworld)
        documents = documents_set(args.documents) if args.documents else []
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    result: dict = {
        "command": "python -m lab_code.training evaluate " + " ".join(sys.argv[1:] if argv is None
                                                             else argv),
        "machine": machine(),
        "model": recognizer.model_path.name,  # a name, not this machine's path
        "model_version": model_version(recognizer.model_path),
        "size_mb": round(recognizer.model_path.stat().st_size / 1e6, 2),
        "parameters": sum(p.numel() for p in recognizer.loaded.parameters()),
    }
    if not args.realworld_only:
        english, wrong = english_cer(recognizer)
        result.update({
            "held_out_cer": round(held_out_cer(recognizer), 4),
            "plain_held_out_cer": round(held_out_cer(recognizer, which="plain"), 4),
            "document_held_out_cer": (round(held_out_cer(recognizer, which="document"), 4)
                                      if data.document_test_set() else None),
            "english_cer": round(english, 4),
            "english_lines_wrong": f"{len(wrong)} of {len(data.english_set())}",
            "threads": torch.get_num_threads(),
            **{k: round(v, 2) for k, v in latency(recognizer, args.checkpoint).items()},
        })
        for key, value in result.items():
            if not isinstance(value, dict):
                print(f"{key:22} {value}")
        for truth, prediction in wrong[:5]:
            print(f"  e.g. {truth!r} -> {prediction!r}")
    try:
        result["realworld"] = side_by_side(recognizer, samples, args.tesseract)
        if documents:
            result["documents"] = side_by_side(recognizer, documents, args.tesseract,
                                               DOCUMENT_GROUPS)
    except RuntimeError as err:  # TesseractError: libtesseract or its model is missing
        print(f"error: {err}", file=sys.stderr)
        return 1
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_end"] = os.getloadavg()
    print(f"real-world set ({len(samples)} images, one thread, one image at a time):")
    print_table(result["realworld"])
    if documents:
        print(f"document set ({len(documents)} images, one thread, one image at a time):")
        print_table(result["documents"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
