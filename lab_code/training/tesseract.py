"""Tesseract, the OCR a user would pick instead, loaded once per process through the C API of the
system's libtesseract (no Python binding to build): the peer the benchmark compares against.

    python -m lab_code.training tesseract line.png --psm 7

The benchmark runs it in a process of its own (`read_apart`): torch ships its own OpenMP runtime
under the same name as the system's, and once torch has loaded it, libtesseract shares it with
torch's settings instead of OMP_THREAD_LIMIT=1. On the course's 2-core machine (2026-12-02) that
made Tesseract 13x slower than on its own (172 vs 13 ms a line), which would flatter the
recognizer.

An optional benchmark dependency, never needed by the lessons or the production side.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

from PIL import Image

from lab_code.training import metrics

INSTALL = "apt-get install -y tesseract-ocr tesseract-ocr-eng"
PSM_BLOCK = 6  # a uniform block of text (paragraphs)
PSM_LINE = 7  # a single text line
# Tesseract answers with typographic characters the charset spells in ASCII.
ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                       "\u2013": "-", "\u2014": "-", "\ufb01": "fi", "\ufb02": "fl"})


class TesseractError(RuntimeError):
    """libtesseract or its English model is missing; the message says how to install them."""


def _library() -> ctypes.CDLL:
    # OpenMP reads its thread limit once, when the library loads: one thread, like the recognizer.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    name = ctypes.util.find_library("tesseract") or "libtesseract.so.5"
    try:
        lib = ctypes.CDLL(name)
    except OSError as err:
        raise TesseractError(f"libtesseract is not installed: {INSTALL}.") from err
    lib.TessBaseAPICreate.restype = ctypes.c_void_p
    lib.TessBaseAPIInit3.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    lib.TessBaseAPISetPageSegMode.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.TessBaseAPISetImage.argtypes = [ctypes.c_void_p, ctypes.c_char_p] + [ctypes.c_int] * 4
    lib.TessBaseAPISetSourceResolution.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.TessBaseAPIGetUTF8Text.argtypes = [ctypes.c_void_p]
    lib.TessBaseAPIGetUTF8Text.restype = ctypes.c_void_p
    lib.TessDeleteText.argtypes = [ctypes.c_void_p]
    lib.TessBaseAPIEnd.argtypes = [ctypes.c_void_p]
    lib.TessBaseAPIDelete.argtypes = [ctypes.c_void_p]
    lib.TessVersion.restype = ctypes.c_char_p
    return lib


class Tesseract:
    """One initialised Tesseract engine (English, LSTM model); `read` one image at a time."""

    def __init__(self, language: str = "eng") -> None:
        self.lib = _library()
        self.version = self.lib.TessVersion().decode()
        self.handle = ctypes.c_void_p(self.lib.TessBaseAPICreate())
        if self.lib.TessBaseAPIInit3(self.handle, None, language.encode()) != 0:
            self.close()
            raise TesseractError(f"Tesseract has no {language!r} model: {INSTALL}.")

    def read(self, image: Image.Image, psm: int = PSM_LINE) -> str:
        """Text of `image`: lines joined by newlines, blank lines dropped, quotes in ASCII."""
        gray = image.convert("L")
        self.lib.TessBaseAPISetPageSegMode(self.handle, psm)
        self.lib.TessBaseAPISetImage(self.handle, gray.tobytes(), gray.width, gray.height, 1,
                                     gray.width)
        self.lib.TessBaseAPISetSourceResolution(self.handle, 96)  # a screen's, not 0 dpi
        pointer = self.lib.TessBaseAPIGetUTF8Text(self.handle)
        if not pointer:
            return ""
        try:
            text = ctypes.string_at(pointer).decode("utf-8", errors="replace")
        finally:
            self.lib.TessDeleteText(pointer)
        lines = (" ".join(line.split()) for line in text.translate(ASCII).splitlines())
        return "\n".join(line for line in lines if line)

    def close(self) -> None:
        if self.handle:
            self.lib.TessBaseAPIEnd(self.handle)
            self.lib.TessBaseAPIDelete(self.handle)
            self.handle = ctypes.c_void_p()

    def __enter__(self) -> Tesseract:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bench(jobs: Sequence[tuple[str, int]], warmup: int, language: str) -> dict:
    """Read every (image path, page segmentation mode), timed exactly as the recognizer is
    (metrics.read_all: one image at a time, decoded beforehand, a few warm-up reads first)."""
    items = [SimpleNamespace(path=path, psm=psm) for path, psm in jobs]
    with Tesseract(language) as engine:
        readings = metrics.read_all(lambda image, job: engine.read(image, job.psm), items, warmup)
        return {"version": engine.version, "readings": [asdict(r) for r in readings],
                "torch_loaded": "torch" in sys.modules}


START_S, PER_IMAGE_S = 30.0, 2.0  # Tesseract takes ~20 ms a line here; a hung child is killed


def read_apart(jobs: Sequence[tuple[str | Path, int]], warmup: int = 3,
               language: str = "eng") -> dict:
    """`_bench` in a fresh Python process that never loads torch, with OpenMP on one thread:
    {"version", "readings": [{"text", "ms", "error"}, ...], "torch_loaded"}. Raises
    TesseractError, with the child's sentence, when libtesseract or the model is missing, or
    when the child runs past START_S + PER_IMAGE_S a read (it is killed then)."""
    request = {"jobs": [[str(path), psm] for path, psm in jobs], "warmup": warmup,
               "language": language}
    limit = START_S + PER_IMAGE_S * (len(request["jobs"]) + warmup)
    try:
        done = subprocess.run([sys.executable, "-m", "lab_code.training", "tesseract", "--bench"],
                              input=json.dumps(request), capture_output=True, text=True,
                              env={**os.environ, "OMP_THREAD_LIMIT": "1"}, check=False,
                              timeout=limit)
    except subprocess.TimeoutExpired as err:
        raise TesseractError(f"Tesseract took more than {limit:.0f} s on {len(jobs)} images "
                             "and was stopped; check the machine's load, or read fewer "
                             "images.") from err
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise TesseractError(lines[-1].removeprefix("error: "))
    return json.loads(done.stdout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.training tesseract",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", type=Path, metavar="IMAGE", help="image file")
    parser.add_argument("--psm", type=int, default=PSM_LINE,
                        help=f"page segmentation mode: {PSM_LINE} one line, {PSM_BLOCK} a block")
    parser.add_argument("--bench", action="store_true",
                        help="read a JSON request from stdin and answer timed readings as JSON "
                             "(what read_apart runs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bench:
        request = json.load(sys.stdin)
        try:
            print(json.dumps(_bench(request["jobs"], request["warmup"], request["language"])))
        except TesseractError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0
    if not args.inputs:
        parser.error("give at least one image")
    try:
        engine = Tesseract()
    except TesseractError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with engine:
        for path in args.inputs:
            print(engine.read(Image.open(path), args.psm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
