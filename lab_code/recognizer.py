"""The production recognizer: loads only the compiled TorchScript file and reads text from images.

    python -m lab_code.recognizer line.png https://example.com/page.png

It never imports the training code (`data`, `model`, `train`): the compiled file is enough.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lab_code import images, preprocess
from lab_code.artifacts import bundled_model_path, load_torchscript

MAX_BATCH = 64  # lines per forward pass


class TextRecognizer:
    """Reads the text in an image (one line or several) with a compiled TorchScript model."""

    def __init__(self, model_path: str | os.PathLike | None = None) -> None:
        self.model_path = Path(model_path) if model_path is not None else bundled_model_path()
        self.model = load_torchscript(self.model_path)
        height = int(getattr(self.model, "height", preprocess.HEIGHT))
        if height != preprocess.HEIGHT:
            raise ValueError(f"{self.model_path} expects {height}-pixel lines, "
                             f"not {preprocess.HEIGHT}.")

    @torch.inference_mode()
    def predict_lines(self, lines: Sequence[np.ndarray]) -> list[str]:
        """Recognize preprocessed line arrays; similar widths are batched together."""
        order = sorted(range(len(lines)), key=lambda i: lines[i].shape[1])
        texts = [""] * len(lines)
        for start in range(0, len(order), MAX_BATCH):
            chunk = order[start : start + MAX_BATCH]
            texts_chunk = self.model(preprocess.batch([lines[i] for i in chunk]))
            for i, text in zip(chunk, texts_chunk, strict=True):
                texts[i] = text
        return texts

    def predict(self, image: Image.Image | str | os.PathLike) -> str:
        """Text of one image (PIL image, path or http(s) URL); several lines come back joined by
        newlines, recognized together as one batch."""
        return self.predict_batch([image])[0]

    def predict_batch(self, inputs: Sequence[Image.Image | str | os.PathLike]) -> list[str]:
        """Text of each input; all their lines go through the model as shared batches."""
        per_image = [preprocess.line_arrays(images.load_image(x)) for x in inputs]
        flat = self.predict_lines([line for lines in per_image for line in lines])
        out, at = [], 0
        for lines in per_image:
            out.append("\n".join(flat[at : at + len(lines)]))
            at += len(lines)
        return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.recognizer",
        description="Print the text in each image (file path or http(s) URL).",
    )
    parser.add_argument("inputs", nargs="+", metavar="PATH_OR_URL", help="image file or URL")
    parser.add_argument("--model", type=Path, default=None,
                        help="TorchScript model file (default: the bundled model)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        recognizer = TextRecognizer(args.model)
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
