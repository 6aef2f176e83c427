"""The pixel contract between training and serving: how a picture becomes the fixed-height line
arrays the model reads (grey, ink = 1 on a 0 background), how a page splits into lines, and how
lines are stacked into a batch.

Training renders lines and serving receives them; both go through these functions, so the model
sees the same pixels in both. Neither side owns this module: it imports neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

if TYPE_CHECKING:
    import torch

HEIGHT = 32  # every line is scaled to this many pixels high before it reaches the model
MAX_SIDE = 4000  # bigger pictures are downscaled first: text lines never need more
INK_THRESHOLD = 0.35  # a pixel counts as ink above this darkness (0 = background, 1 = ink)
# Background columns after every line in a batch. The bidirectional LSTM reads the whole padded
# row, so without a common tail a line read alone and the same line in a batch could differ.
TAIL_PAD = 16


def to_gray(img: Image.Image) -> Image.Image:
    """Any mode (RGB, RGBA, L, P, I;16...) to 8-bit grey; transparency is composited on white."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo + 1e-6) * 255.0
        return Image.fromarray(arr.astype(np.uint8), mode="L")
    return img.convert("L")


def shrink(img: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """Downscale so that neither side exceeds `max_side` (huge uploads stay cheap)."""
    if max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def ink_map(img: Image.Image) -> np.ndarray:
    """Darkness in [0, 1] (1 = ink), with the polarity fixed so text is ink on background."""
    gray = shrink(to_gray(img))
    arr = np.asarray(gray, dtype=np.float32) / 255.0
    if float(np.median(arr)) < 0.5:  # light text on a dark background
        arr = 1.0 - arr
    ink = 1.0 - arr
    lo, hi = float(np.percentile(ink, 50)), float(ink.max())
    if hi - lo < 0.08:  # a blank or nearly blank picture
        return np.zeros_like(ink)
    return np.clip((ink - lo) / (hi - lo), 0.0, 1.0)


def _mask(ink: np.ndarray) -> np.ndarray:
    """Ink pixels, with isolated noise removed by a 3x3 median filter."""
    img = Image.fromarray((ink * 255).astype(np.uint8), mode="L")
    img = img.filter(ImageFilter.MedianFilter(3))
    return np.asarray(img) > INK_THRESHOLD * 255


def _spans(profile: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in a 1-D boolean array, as (start, stop)."""
    padded = np.concatenate([[False], profile, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def line_boxes(ink: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (top, bottom, left, right) of the text lines in an ink map, top to bottom.

    Rows with ink form bands; bands much thinner than the tallest one (a stray dot, an accent,
    descenders that thin strokes leave apart from their line) are merged into their nearest
    neighbour, so a page splits into whole lines.
    """
    mask = _mask(ink)
    rows = _spans(mask.any(axis=1))
    if not rows:
        return []
    bands = [list(r) for r in rows]
    tallest = max(b - a for a, b in bands)
    merged = True
    while merged and len(bands) > 1:
        merged = False
        for i, (a, b) in enumerate(bands):
            if b - a < 0.4 * tallest:
                j = i - 1 if i == len(bands) - 1 else i + 1
                if 0 < i < len(bands) - 1:  # pick the closer neighbour
                    gap_up = a - bands[i - 1][1]
                    gap_down = bands[i + 1][0] - b
                    j = i - 1 if gap_up <= gap_down else i + 1
                lo, hi = min(a, bands[j][0]), max(b, bands[j][1])
                bands[min(i, j)] = [lo, hi]
                del bands[max(i, j)]
                merged = True
                break
    boxes = []
    for top, bottom in bands:
        cols = np.flatnonzero(mask[top:bottom].any(axis=0))
        boxes.append((top, bottom, int(cols[0]), int(cols[-1]) + 1))
    return boxes


def _line_to_array(ink: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop one line with a margin and scale it to HEIGHT rows (float32, ink = 1)."""
    top, bottom, left, right = box
    margin = max(1, round(0.12 * (bottom - top)))
    top, left = max(0, top - margin), max(0, left - margin)
    bottom, right = min(ink.shape[0], bottom + margin), min(ink.shape[1], right + margin)
    crop = Image.fromarray((ink[top:bottom, left:right] * 255).astype(np.uint8), mode="L")
    width = max(HEIGHT // 2, round(crop.width * HEIGHT / crop.height))
    crop = crop.resize((width, HEIGHT), Image.Resampling.BILINEAR)
    return np.asarray(crop, dtype=np.float32) / 255.0


def line_arrays(img: Image.Image) -> list[np.ndarray]:
    """Every text line of an image as a HEIGHT-row array, top to bottom (empty if blank)."""
    ink = ink_map(img)
    return [_line_to_array(ink, box) for box in line_boxes(ink)]


def line_array(img: Image.Image) -> np.ndarray:
    """The whole image taken as one line (used for training images, which hold one line)."""
    ink = ink_map(img)
    mask = _mask(ink)
    if not mask.any():
        return np.zeros((HEIGHT, HEIGHT // 2), dtype=np.float32)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    return _line_to_array(ink, box)


def batch(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack line arrays into a (B, 1, HEIGHT, W_max + TAIL_PAD) tensor, right-padded with
    background, so that every line ends in at least TAIL_PAD columns of background."""
    import torch  # here, so that a frontend that only forwards images never loads torch

    width = max(a.shape[1] for a in arrays) + TAIL_PAD
    out = torch.zeros(len(arrays), 1, HEIGHT, width)
    for i, a in enumerate(arrays):
        out[i, 0, :, : a.shape[1]] = torch.from_numpy(a)
    return out
