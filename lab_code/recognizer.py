"""The production recognizer: loads only a compiled model file and reads text from images.

    python -m lab_code.recognizer line.png https://example.com/page.png

Two runtimes read the same weights to the same text: `TextRecognizer` runs the TorchScript file
(lessons 01-06; needs torch), `OnnxRecognizer` its ONNX export with onnxruntime and numpy (no
torch: what the services ship, lesson 07). `load()` picks one for a service.

URLs are fetched under lab_code.urlfetch's policy: public addresses only, unless
--allow-private-urls (or LAB_ALLOW_PRIVATE_URLS=1) opts in for a trusted local server. Every image
is held to lab_code.images' work limits (lines, columns) before the model runs.
It never imports the training code (`data`, `model`, `train`): the compiled file is enough.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from lab_code import ctc, images, preprocess, urlfetch
from lab_code.artifacts import (
    ONNX_CHARSET_KEY,
    ONNX_HEIGHT_KEY,
    bundled_model_path,
    bundled_onnx_path,
    load_onnx,
    load_torchscript,
    optimize_for_cpu,
)
from lab_code.threads import PerThread

MAX_BATCH = 64  # lines per forward pass
# Batches are padded to a multiple of this many columns. Every new input shape costs the CPU
# kernels a new plan (and the allocator new buffers); with widths rounded up, a stream of lines
# of any width meets a dozen shapes instead of hundreds (lesson 07 measures it).
WIDTH_STEP = 64
RUNTIMES = ("auto", "onnx", "torchscript")
Scored = list[tuple[str, float]]  # each line's (text, confidence), as lab_code.ctc.greedy gives
T = TypeVar("T")


class Recognizer:
    """What every runtime shares: an input (PIL image, path or URL) becomes line arrays within
    work limits, the lines are batched by width, and each batch is read by the runtime.

    A runtime implements `_read(batch)` (texts) and `_read_scored(batch)` ((text, confidence)
    pairs) for a (B, 1, HEIGHT, W) float32 numpy batch."""

    runtime = ""  # "torchscript" or "onnx"
    width_step = WIDTH_STEP

    def __init__(self, model_path: Path, url_policy: urlfetch.UrlPolicy | None,
                 limits: images.WorkLimits) -> None:
        self.model_path, self.url_policy, self.limits = model_path, url_policy, limits

    def _read(self, batch: np.ndarray) -> list[str]:
        raise NotImplementedError

    def _read_scored(self, batch: np.ndarray) -> Scored:
        raise NotImplementedError

    def predict_lines(self, lines: Sequence[np.ndarray]) -> list[str]:
        """Recognize preprocessed line arrays; similar widths are batched together."""
        return read_lines(self._read, lines, self.width_step, preprocess.batch_array)

    def predict_lines_scored(self, lines: Sequence[np.ndarray]) -> Scored:
        """Each line's (text, confidence): the same text as predict_lines, and the mean softmax
        probability of the characters read (lab_code.ctc.greedy says exactly how)."""
        return read_lines(self._read_scored, lines, self.width_step, preprocess.batch_array)

    def predict(self, image: Image.Image | str | os.PathLike) -> str:
        """Text of one image (PIL image, path or http(s) URL); several lines come back joined by
        newlines, recognized together as one batch."""
        return self.predict_batch([image])[0]

    def image_lines(self, image: Image.Image | str | os.PathLike) -> list[np.ndarray]:
        """The line arrays of one input, within this recognizer's work limits (ImageInputError
        with one sentence otherwise); URLs are fetched under its URL policy."""
        img = images.load_image(image, url_policy=self.url_policy, limits=self.limits)
        return images.page_lines(img, self.limits)

    def predict_batch(self, inputs: Sequence[Image.Image | str | os.PathLike]) -> list[str]:
        """Text of each input; all their lines go through the model as shared batches."""
        per_image = [self.image_lines(x) for x in inputs]
        flat = self.predict_lines([line for lines in per_image for line in lines])
        out, at = [], 0
        for lines in per_image:
            out.append(page_text(flat[at : at + len(lines)]))
            at += len(lines)
        return out


class TextRecognizer(Recognizer):
    """Reads the text in an image (one line or several) with a compiled TorchScript model.

    `loaded` is the module as the file holds it (weights, `logits`, movable to a GPU); `model`
    is what runs: with `optimize` (the default) the same module frozen and rewritten for the
    CPU at load time (lab_code.artifacts.optimize_for_cpu), which gives the same text faster.
    `threads`, when given, is the number of threads torch may use per model call, set on every
    thread that calls the model (lab_code.threads says why a server needs that); None leaves
    torch's setting alone.
    """

    runtime = "torchscript"

    def __init__(self, model_path: str | os.PathLike | None = None,
                 url_policy: urlfetch.UrlPolicy | None = None,
                 limits: images.WorkLimits = images.LIMITS, optimize: bool = True,
                 threads: int | None = None) -> None:
        super().__init__(Path(model_path) if model_path is not None else bundled_model_path(),
                         url_policy, limits)
        self.threads = PerThread(threads)
        self.loaded = load_torchscript(self.model_path)
        height = int(getattr(self.loaded, "height", preprocess.HEIGHT))
        if height != preprocess.HEIGHT:
            raise ValueError(f"{self.model_path} expects {height}-pixel lines, "
                             f"not {preprocess.HEIGHT}.")
        self.charset: list[str] = list(getattr(self.loaded, "charset", []))
        self.model = self.loaded
        self.width_step = WIDTH_STEP if optimize else 1
        if optimize:
            try:
                self.model = optimize_for_cpu(self.loaded)
            except RuntimeError as err:  # a model freezing cannot handle still runs, as loaded
                warnings.warn(f"{self.model_path} runs unoptimized: freezing it failed "
                              f"({str(err).splitlines()[0]}).", RuntimeWarning, stacklevel=2)

    def _read(self, batch: np.ndarray) -> list[str]:
        import torch

        self.threads.ensure()  # on the thread that runs the model: the count is per thread
        with torch.inference_mode():
            return self.model(torch.from_numpy(batch))

    def _read_scored(self, batch: np.ndarray) -> Scored:
        import torch

        self.threads.ensure()
        with torch.inference_mode():
            logits = self.model.logits(torch.from_numpy(batch))
        return ctc.greedy(logits.numpy(), self.charset)


class OnnxRecognizer(Recognizer):
    """Reads text like TextRecognizer, from the ONNX export of the same model, with onnxruntime
    and numpy only (no torch: a production image a tenth the size, a cold start several times
    faster). The file computes logits; lab_code.ctc decodes them with the TorchScript model's
    own rule, so both give the same text.

    `threads` is the session's operator thread count (lab_code.artifacts.load_onnx); unlike
    torch's, it belongs to the session, so it holds on whichever thread calls the model. None:
    onnxruntime's default, one per physical core; a server asks for 1.
    """

    runtime = "onnx"

    def __init__(self, model_path: str | os.PathLike | None = None,
                 url_policy: urlfetch.UrlPolicy | None = None,
                 limits: images.WorkLimits = images.LIMITS, threads: int | None = None) -> None:
        super().__init__(Path(model_path) if model_path is not None else bundled_onnx_path(),
                         url_policy, limits)
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}.")
        self.session = load_onnx(self.model_path, threads=threads or 0)
        meta = self.session.get_modelmeta().custom_metadata_map
        if ONNX_CHARSET_KEY not in meta:
            raise ValueError(f"{self.model_path} does not record its charset: export it with "
                             "`python -m lab_code.training export CKPT --onnx FILE`.")
        self.charset: list[str] = json.loads(meta[ONNX_CHARSET_KEY])
        height = int(meta.get(ONNX_HEIGHT_KEY, preprocess.HEIGHT))
        if height != preprocess.HEIGHT:
            raise ValueError(f"{self.model_path} expects {height}-pixel lines, "
                             f"not {preprocess.HEIGHT}.")
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """(B, T, classes) class scores for a (B, 1, HEIGHT, W) float32 batch."""
        return self.session.run(None, {self.input_name: batch})[0]

    def _read(self, batch: np.ndarray) -> list[str]:
        return ctc.texts(self.logits(batch), self.charset)

    def _read_scored(self, batch: np.ndarray) -> Scored:
        return ctc.greedy(self.logits(batch), self.charset)


def onnx_available() -> bool:
    """Whether onnxruntime can be imported here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def model_file(model_path: str | os.PathLike | None = None, runtime: str = "auto") -> Path:
    """The file `load` reads: `model_path` when given, else the bundled file `runtime` names
    ("onnx", "torchscript", or "auto": the ONNX file when it is bundled and onnxruntime is
    installed, so no torch is needed, else the TorchScript file)."""
    if model_path is not None:
        choose_runtime(runtime, has_onnx=False)  # a given file: only the name is checked
        return Path(model_path)
    if choose_runtime(runtime, has_onnx=bundled_onnx_path().is_file()) == "onnx":
        return bundled_onnx_path()
    return bundled_model_path()


def choose_runtime(runtime: str, has_onnx: bool) -> str:
    """"onnx" or "torchscript": what a service runs of a model that has an ONNX export
    (`has_onnx`) or not. "auto" takes the ONNX file when there is one and onnxruntime imports, so
    no torch is needed; the bundled model (model_file) and a registry version
    (lab_code.registry.served_format) are chosen by this one rule."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}.")
    if runtime == "auto":
        return "onnx" if has_onnx and onnx_available() else "torchscript"
    return runtime


def runtime_of(path: str | os.PathLike) -> str:
    """The runtime that reads a model file: "onnx" for an .onnx file, else "torchscript"."""
    return "onnx" if Path(path).suffix.lower() == ".onnx" else "torchscript"


def load(model_path: str | os.PathLike | None = None, runtime: str = "auto", *,
         threads: int | None = None, optimize: bool = True,
         url_policy: urlfetch.UrlPolicy | None = None,
         limits: images.WorkLimits = images.LIMITS) -> Recognizer:
    """The recognizer a service runs, for the file `model_file(model_path, runtime)` names: an
    .onnx file with onnxruntime (OnnxRecognizer), any other with TorchScript (TextRecognizer;
    `optimize` applies there only). `threads`: per model call (a server asks for 1)."""
    path = model_file(model_path, runtime)
    if runtime_of(path) == "onnx":
        return OnnxRecognizer(path, url_policy=url_policy, limits=limits, threads=threads)
    return TextRecognizer(path, url_policy=url_policy, limits=limits, optimize=optimize,
                          threads=threads)


def read_lines(model: Callable[[object], Sequence[T]], lines: Sequence[np.ndarray],
               width_step: int = 1, stack: Callable[..., object] = preprocess.batch) -> list[T]:
    """Each line's reading from `model` (a batch in, one reading per row out; `stack` makes the
    batch: a torch tensor by default, preprocess.batch_array for numpy): lines of similar width
    share a batch of at most MAX_BATCH, padded to a multiple of `width_step`."""
    order = sorted(range(len(lines)), key=lambda i: lines[i].shape[1])
    out: list = [None] * len(lines)
    for start in range(0, len(order), MAX_BATCH):
        chunk = order[start : start + MAX_BATCH]
        readings = model(stack([lines[i] for i in chunk], width_step))
        for i, reading in zip(chunk, readings, strict=True):
            out[i] = reading
    return out


def page_text(readings: Sequence[str]) -> str:
    """A page's text: its lines' readings, top to bottom, joined by newlines. A line that reads
    as nothing (a stray blob the splitter kept: what is left of a frame, a smudge) is left out,
    so the text never holds an empty line."""
    return "\n".join(text for text in readings if text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.recognizer",
        description="Print the text in each image (file path or http(s) URL).",
    )
    parser.add_argument("inputs", nargs="+", metavar="PATH_OR_URL", help="image file or URL")
    parser.add_argument("--model", type=Path, default=None,
                        help="model file: TorchScript (.pt) or ONNX (.onnx) (default: the "
                             "bundled TorchScript model)")
    parser.add_argument(urlfetch.ALLOW_PRIVATE_FLAG, action="store_true",
                        help="also fetch URLs on this machine or a private network, for a trusted "
                             "local server (default: public addresses only; the same as "
                             f"{urlfetch.ALLOW_PRIVATE_ENV}=1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        policy = urlfetch.UrlPolicy(allow_private=True) if args.allow_private_urls else None
        recognizer = load(args.model, runtime="torchscript", url_policy=policy)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    status = 0
    for source in args.inputs:
        try:
            text = recognizer.predict(source)
        except images.ImageInputError as err:
            print(f"error: {err}", file=sys.stderr)
            status = 1
            continue
        if len(args.inputs) > 1:
            print(f"==> {source} <==")
        print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
