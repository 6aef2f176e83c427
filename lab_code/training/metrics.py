"""Character error rate (CER): edit distance between prediction and truth, per truth character;
and `read_all`, which times a reader on images one at a time (no torch: the Tesseract benchmark
runs it in a process that must not load torch)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions and substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(predictions: Sequence[str], truths: Sequence[str]) -> float:
    """Total edits over total truth characters (0.0 is perfect; can exceed 1.0)."""
    if len(predictions) != len(truths):
        raise ValueError("predictions and truths must have the same length")
    errors = sum(edit_distance(p, t) for p, t in zip(predictions, truths, strict=True))
    return errors / max(1, sum(len(t) for t in truths))


@dataclass(frozen=True)
class Reading:
    """What a reader made of one image: its text, the milliseconds it took, and the error it
    raised (empty when none)."""

    text: str
    ms: float
    error: str = ""


def read_all(reader: Callable[[Image.Image, Any], str], items: Sequence[Any],
             warmup: int = 3) -> list[Reading]:
    """Run `reader(image, item)` on every item (anything with a `.path` to an image), one image
    at a time, timing each call: images are decoded beforehand, and the first `warmup` items are
    read once untimed. An exception is recorded as an empty reading with its message, so one bad
    image does not end the run."""
    loaded = [Image.open(item.path).convert("RGB") for item in items]
    for img, item in list(zip(loaded, items, strict=True))[:warmup]:
        reader(img, item)
    out = []
    for img, item in zip(loaded, items, strict=True):
        start = time.perf_counter()
        try:
            text, error = reader(img, item), ""
        except Exception as err:  # the bar is "no image raises": count it, keep going
            text, error = "", f"{type(err).__name__}: {err}"
        out.append(Reading(text, (time.perf_counter() - start) * 1000, error))
    return out
