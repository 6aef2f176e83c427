"""The production recognizer: loads only the compiled TorchScript file and reads text from images.

    python -m lab_code.recognizer line.png https://example.com/page.png

URLs are fetched under lab_code.urlfetch's policy: public addresses only, unless
--allow-private-urls (or LAB_ALLOW_PRIVATE_URLS=1) opts in for a trusted local server. Every image
is held to lab_code.images' work limits (lines, columns) before the model runs.
It never imports the training code (`data`, `model`, `train`): the compiled file is enough.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lab_code import images, preprocess, urlfetch
from lab_code.artifacts import bundled_model_path, load_torchscript, optimize_for_cpu
from lab_code.threads import PerThread

MAX_BATCH = 64  # lines per forward pass
# Batches are padded to a multiple of this many columns. Every new input shape costs the CPU
# kernels a new plan (and the allocator new buffers); with widths rounded up, a stream of lines
# of any width meets a dozen shapes instead of hundreds (lesson 07 measures it).
WIDTH_STEP = 64


class TextRecognizer:
    """Reads the text in an image (one line or several) with a compiled TorchScript model.

    `loaded` is the module as the file holds it (weights, `logits`, movable to a GPU); `model`
    is what runs: with `optimize` (the default) the same module frozen and rewritten for the
    CPU at load time (lab_code.artifacts.optimize_for_cpu), which gives the same text faster.
    `threads`, when given, is the number of threads torch may use per model call, set on every
    thread that calls the model (lab_code.threads says why a server needs that); None leaves
    torch's setting alone.
    """

    def __init__(self, model_path: str | os.PathLike | None = None,
                 url_policy: urlfetch.UrlPolicy | None = None,
                 limits: images.WorkLimits = images.LIMITS, optimize: bool = True,
                 threads: int | None = None) -> None:
        self.url_policy, self.limits = url_policy, limits
        self.threads = PerThread(threads)
        self.model_path = Path(model_path) if model_path is not None else bundled_model_path()
        self.loaded = load_torchscript(self.model_path)
        height = int(getattr(self.loaded, "height", preprocess.HEIGHT))
        if height != preprocess.HEIGHT:
            raise ValueError(f"{self.model_path} expects {height}-pixel lines, "
                             f"not {preprocess.HEIGHT}.")
        self.model = self.loaded
        self.width_step = WIDTH_STEP if optimize else 1
        if optimize:
            try:
                self.model = optimize_for_cpu(self.loaded)
            except RuntimeError as err:  # a model freezing cannot handle still runs, as loaded
                warnings.warn(f"{self.model_path} runs unoptimized: freezing it failed "
                              f"({str(err).splitlines()[0]}).", RuntimeWarning, stacklevel=2)

    def predict_lines(self, lines: Sequence[np.ndarray]) -> list[str]:
        """Recognize preprocessed line arrays; similar widths are batched together."""
        self.threads.ensure()
        return read_lines(self.model, lines, self.width_step)

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


@torch.inference_mode()
def read_lines(model: Callable[[torch.Tensor], list[str]], lines: Sequence[np.ndarray],
               width_step: int = 1) -> list[str]:
    """Each line's text from `model` (a batch tensor in, one string per row out): lines of
    similar width share a batch of at most MAX_BATCH, padded to a multiple of `width_step`."""
    order = sorted(range(len(lines)), key=lambda i: lines[i].shape[1])
    texts = [""] * len(lines)
    for start in range(0, len(order), MAX_BATCH):
        chunk = order[start : start + MAX_BATCH]
        texts_chunk = model(preprocess.batch([lines[i] for i in chunk], width_step))
        for i, text in zip(chunk, texts_chunk, strict=True):
            texts[i] = text
    return texts


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
                        help="TorchScript model file (default: the bundled model)")
    parser.add_argument(urlfetch.ALLOW_PRIVATE_FLAG, action="store_true",
                        help="also fetch URLs on this machine or a private network, for a trusted "
                             "local server (default: public addresses only; the same as "
                             f"{urlfetch.ALLOW_PRIVATE_ENV}=1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        policy = urlfetch.UrlPolicy(allow_private=True) if args.allow_private_urls else None
        recognizer = TextRecognizer(args.model, url_policy=policy)
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
