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
from PIL import Image

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


MIN_LINE = 4  # bands of ink fewer rows high than this are never a line of their own
MAX_OUTPUT = 32 * 400_000  # total pixels of all line arrays of one image (bounds a page's cost)
_EDGE_RUN = 0.6  # a straight run of ink this long (of the image's side) is a rule, rim or frame


def _sample(values: np.ndarray) -> np.ndarray:
    """At most ~250,000 of `values` (a 2-D picture or 1-D pixels): plenty for a histogram."""
    step = max(1, int(np.sqrt(values.size / 250_000)))
    return values[::step, ::step] if values.ndim == 2 else values[:: step * step]


def _background(values: np.ndarray) -> float:
    """The background grey: the most common level of a coarse histogram (robust to rims)."""
    sample = _sample(values)
    counts = np.bincount(np.minimum((sample * 32).astype(np.int64), 31).ravel(), minlength=32)
    level = int(np.argmax(counts))
    near = sample[np.abs(sample - (level + 0.5) / 32) <= 1 / 32]
    return float(np.median(near)) if near.size else (level + 0.5) / 32


def _light_on_dark(values: np.ndarray, bg: float) -> bool:
    """Whether the text is lighter than its background: compares how much of the picture lies
    clearly above and clearly below the background grey, whatever that grey is."""
    diff = _sample(values) - bg
    lighter = float(np.clip(diff - 0.1, 0.0, None).sum())
    darker = float(np.clip(-diff - 0.1, 0.0, None).sum())
    if lighter == darker:  # blank: fall back on the background's own grey
        return bg < 0.5
    return lighter > darker


def _run_ids(mask: np.ndarray) -> np.ndarray:
    """A number for every horizontal run of True in a 2-D mask (0 where False)."""
    starts = mask.copy()
    starts[:, 1:] &= ~mask[:, :-1]
    return np.where(mask, np.cumsum(starts.ravel()).reshape(mask.shape), 0)


def reach(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The pixels of `mask` joined to a seed pixel by a path inside `mask` (4-neighbours).

    Whole horizontal runs, then whole vertical runs, are filled from what is reached so far,
    until nothing changes: a frame or a surround takes two or three rounds, each O(pixels)."""
    rows, cols = _run_ids(mask), _run_ids(mask.T).T
    got = mask & seeds
    for _ in range(64):  # a spiral could need more; what is reached by then is kept
        before = int(got.sum())
        for ids in (rows, cols):
            hit = np.zeros(int(ids.max()) + 1, dtype=bool)
            hit[ids[got]] = True
            hit[0] = False
            got = hit[ids]
        if int(got.sum()) == before:
            break
    return got


def _ring(shape: tuple[int, ...]) -> np.ndarray:
    """The outermost pixels of a picture of this shape."""
    ring = np.zeros(shape, dtype=bool)
    ring[[0, -1], :] = True
    ring[:, [0, -1]] = True
    return ring


LEVEL_KEEP = 0.06  # pixels this close to the fitted background count as background
UNEVEN = 0.04  # a background whose fitted grey varies more than this across the picture: levelled


def _plane(arr: np.ndarray, where: np.ndarray | None, start: float) -> np.ndarray:
    """The background's grey as a plane a + b*x + c*y, x and y running 0 to 1 across the
    picture (uneven light: a phone's shadow, a lamp to one side), fitted to the pixels of
    `where` (None: all) that lie near it: first those near the grey `start`, then, three more
    times, those near the plane so far. Ink, far from the background, takes no part. A few
    thousand pixels spread over the picture are enough for three numbers. Returns (a, b, c)."""
    h, w = arr.shape
    if where is None:
        step = max(1, int(np.sqrt(arr.size / 2_000)))
        at = (np.arange(0, h, step)[:, None] * w + np.arange(0, w, step)[None, :]).ravel()
    else:
        at = np.flatnonzero(where)
        at = at[:: max(1, at.size // 2_000)]
    ys, xs = np.divmod(at, w)
    design = np.stack([np.ones(ys.size), xs / max(1, w - 1), ys / max(1, h - 1)], axis=1)
    values = arr.ravel()[at].astype(np.float64)
    coef = np.array([start, 0.0, 0.0])
    for keep in (0.1, LEVEL_KEEP, LEVEL_KEEP, LEVEL_KEEP):
        near = np.abs(values - design @ coef) <= keep
        if near.sum() < 16:
            break
        a, v = design[near], values[near]
        try:
            coef = np.linalg.solve(a.T @ a, a.T @ v)  # least squares, by its normal equations
        except np.linalg.LinAlgError:  # the pixels lie on one line (a one-row picture)
            break
    return coef


def _plane_map(coef: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The plane's grey at every pixel of a picture of this shape."""
    x = np.linspace(0.0, 1.0, shape[1], dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, shape[0], dtype=np.float32)[:, None]
    return (coef[0] + coef[1] * x + coef[2] * y).astype(np.float32)


CARD_FILL = 0.8  # a card fills at least this much of its box (a text block fills far less)
CARD_AREA = 0.08  # and covers at least this much of the picture
SURROUND_PX = 3  # a surround is at least this many pixels thick on average (thinner: a frame)


def card(arr: np.ndarray, tolerance: float = 0.1) -> np.ndarray | None:
    """The pixels of the card the text sits on, when the picture shows one on a surround of
    another colour (a phone photo of a panel, a framed box, a screen's edge); None when the
    text sits on the picture's own background.

    The surround is what has the colour of the picture's edge and is joined to that edge; the
    card is the rest, if that rest is one solid block: a text block without a card leaves only
    letters, which fill a small part of their box."""
    ring = _ring(arr.shape)
    colour = _plane_map(_plane(arr, ring, float(np.median(arr[ring]))), arr.shape)  # uneven light
    if np.mean(np.abs(arr[ring] - colour[ring]) <= tolerance) < 0.7:  # no one surround colour
        return None
    other = np.abs(arr - colour) > tolerance
    if other.mean() < CARD_AREA * CARD_FILL or other[ring].mean() > 0.2:
        return None  # too little of another colour, or it is not inside a surround
    rest = ~reach(~other, ring)
    if rest[ring].mean() > 0.1:  # a card lies inside its surround
        return None
    if (~rest).sum() < SURROUND_PX * ring.sum():  # a thin frame: _clean trims it
        return None
    rows, cols = np.flatnonzero(rest.any(axis=1)), np.flatnonzero(rest.any(axis=0))
    box = rest[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    if box.size < CARD_AREA * arr.size or box.mean() < CARD_FILL:
        return None
    return rest


def ink_map(img: Image.Image) -> np.ndarray:
    """Darkness in [0, 1] (1 = ink), with the polarity fixed so text is ink on background.

    The polarity comes from the background (the most common grey), not from a median threshold,
    so light text on a mid-grey or any dark-mode grey reads the same as dark text on white.
    When the text sits on a card inside a surround (see `card`), the background, polarity and
    contrast are the card's: the surround, whatever its colour, does not decide them. Uneven
    light is levelled first (see `_plane`), so a shadow across the paper is not taken for ink."""
    gray = shrink(to_gray(img))
    arr = np.asarray(gray, dtype=np.float32) / 255.0
    inside = card(arr)
    values = arr if inside is None else arr[inside]
    bg = _background(values)
    level = _plane(arr, inside, bg)
    if abs(level[1]) + abs(level[2]) > UNEVEN:  # uneven light: level the background
        arr = np.clip(arr - _plane_map(level, arr.shape) + bg, 0.0, 1.0)
        values = arr if inside is None else arr[inside]
    if _light_on_dark(values, bg):
        arr = 1.0 - arr
        bg = 1.0 - bg
    ink = 1.0 - arr
    lo = min(float(np.percentile(ink, 50)), 1.0 - bg)
    # The darkest ink; on a card, of the card alone and past its few brightest specks (the
    # surround's colour bleeding over the card's edge would squash the text's contrast).
    hi = float(ink.max()) if inside is None else float(np.percentile(ink[inside], 99.9))
    if hi - lo < 0.08:  # a blank or nearly blank picture
        return np.zeros_like(ink)
    ink = np.clip((ink - lo) / (hi - lo), 0.0, 1.0)
    if inside is not None:  # the surround, and a frame or anything else joined to it, goes
        ink[reach(_mask(ink) | ~inside, _ring(ink.shape))] = 0.0
    return ink


def _mask(ink: np.ndarray) -> np.ndarray:
    """Ink pixels, with isolated noise removed by a 3x3 median filter. On a yes/no picture the
    median of 9 pixels is a majority vote (at least 5 of 9 are ink), so the mask is thresholded
    first and voted on: the same mask as a median of the grey levels, in a fifth of the time.
    Edges count their own pixels again, as Pillow's MedianFilter does."""
    above = np.pad((ink * 255).astype(np.uint8) > INK_THRESHOLD * 255, 1, mode="edge")
    votes = above.astype(np.uint8)
    h, w = ink.shape
    votes = sum(votes[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
    return votes >= 5


def _spans(profile: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in a 1-D boolean array, as (start, stop)."""
    padded = np.concatenate([[False], profile, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _longest_runs(mask: np.ndarray) -> np.ndarray:
    """The longest run of True in each row of a 2-D boolean array (vectorised, O(pixels))."""
    if mask.size == 0:
        return np.zeros(mask.shape[0], dtype=np.int64)
    count = np.cumsum(mask, axis=1, dtype=np.int32)
    reset = np.maximum.accumulate(np.where(mask, 0, count), axis=1)
    return (count - reset).max(axis=1)


def _rules(mask: np.ndarray) -> np.ndarray:
    """Rows (a 1-D boolean array) that hold a straight horizontal run of ink too long for text:
    a rim, a border, an underline or a frame's edge. Only rows dense enough are checked."""
    long = max(8, int(_EDGE_RUN * mask.shape[1]))
    out = np.zeros(mask.shape[0], dtype=bool)
    dense = np.flatnonzero(mask.sum(axis=1) >= long)
    if dense.size:
        out[dense] = _longest_runs(mask[dense]) >= long
    out[1:] |= out[:-1].copy()  # and their neighbours: the 3x3 filter leaves a rule's corners
    out[:-1] |= out[1:].copy()
    return out


FRAME_EDGE = 0.4  # ink joined to the picture's edge along this much of it is a frame or surround
FRAME_BAND = 4  # px from the edge that such a frame is trimmed in


def _frame(mask: np.ndarray) -> np.ndarray:
    """Ink joined to the picture's edge, when it lines much of that edge: a frame, a surround
    or rims, slanted or not (a phone's perspective). Letters that touch the edge of a tight
    crop touch it at a few points, and stay; a thin frame is trimmed only near the edge, so a
    letter that touches it loses no more than the frame's rows."""
    ring = _ring(mask.shape)
    if mask[ring].mean() < FRAME_EDGE:
        return np.zeros_like(mask)
    joined = reach(mask, ring)
    if joined[ring].mean() < FRAME_EDGE:
        return np.zeros_like(mask)
    h, w = mask.shape
    if h > 2 * SURROUND_PX and w > 2 * SURROUND_PX:
        inner = _ring((h - 2 * SURROUND_PX, w - 2 * SURROUND_PX))  # SURROUND_PX in from the edge
        if joined[SURROUND_PX:-SURROUND_PX, SURROUND_PX:-SURROUND_PX][inner].mean() >= 0.6:
            return joined  # a thick surround (a phone's view of a panel) goes whole
    near = np.zeros_like(mask)  # a thin frame goes near the edge: a letter touching it stays
    near[:FRAME_BAND], near[-FRAME_BAND:], near[:, :FRAME_BAND], near[:, -FRAME_BAND:] = (True,) * 4
    return joined & near


def _clean(mask: np.ndarray) -> np.ndarray:
    """The mask without rims, borders and frame edges: long horizontal rules go first; long
    vertical ones go too when what is left is a page (two or more bands), since in a single
    line a tall letter can span almost the whole crop."""
    mask = mask & ~_frame(mask)
    mask[_rules(mask)] = False
    tall = _rules(mask.T)  # columns with a long vertical run
    if tall.any():
        bands = _spans(mask[:, ~tall].any(axis=1))
        edge = tall.copy()
        edge[2:-2] = False  # a rim column at the image's edge never belongs to text
        if len(bands) >= 2:
            mask[:, tall] = False
        elif edge.any():
            mask[:, edge] = False
    return mask


def _merge(bands: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge every band much thinner than the tallest (a stray dot, an accent, descenders left
    apart from their line) into its closer neighbour, in one pass: O(number of bands)."""
    tallest = max(b - a for a, b in bands)
    thin = [b - a < 0.4 * tallest for a, b in bands]
    out: list[list[int]] = []
    pending: list[int] | None = None  # thin bands waiting to join the next band down
    for i, (a, b) in enumerate(bands):
        if pending is not None:
            a, pending = pending[0], None
        if thin[i] and len(bands) > 1:
            gap_up = a - out[-1][1] if out else None
            gap_down = bands[i + 1][0] - b if i + 1 < len(bands) else None
            if gap_up is not None and (gap_down is None or gap_up <= gap_down):
                out[-1][1] = b
                continue
            if gap_down is not None:
                pending = [a, b]
                continue
        out.append([a, b])
    if pending is not None:  # only when every band was thin and the last one went down
        out.append(pending)
    return [(a, b) for a, b in out]


def line_boxes(ink: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (top, bottom, left, right) of the text lines in an ink map, top to bottom.

    Rims, borders and frame edges are removed first; rows with ink form bands; bands much
    thinner than the tallest one are merged into their nearest neighbour, so a page splits into
    whole lines. Cost: O(pixels) for the mask, O(bands) for the merge.
    """
    mask = _clean(_mask(ink))
    rows = _spans(mask.any(axis=1))
    if not rows:
        return []
    boxes = []
    for top, bottom in _merge(rows):
        if bottom - top < MIN_LINE and len(rows) > 1:
            continue
        cols = np.flatnonzero(mask[top:bottom].any(axis=0))
        if cols.size:
            boxes.append((top, bottom, int(cols[0]), int(cols[-1]) + 1))
    return boxes


def _with_margin(box: tuple[int, int, int, int],
                 shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """A line box grown by the margin crop_line keeps around the ink, inside the image."""
    top, bottom, left, right = box
    margin = max(1, round(0.12 * (bottom - top)))
    return (max(0, top - margin), min(shape[0], bottom + margin),
            max(0, left - margin), min(shape[1], right + margin))


def line_width(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> int:
    """How many columns the line in `box` (of an ink map of `shape`) becomes once crop_line
    scales it to HEIGHT rows, from the box alone: nothing is cropped or resized."""
    top, bottom, left, right = _with_margin(box, shape)
    return max(HEIGHT // 2, round((right - left) * HEIGHT / max(1, bottom - top)))


def crop_line(ink: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Crop one line with a margin and scale it to HEIGHT rows (float32, ink = 1)."""
    top, bottom, left, right = _with_margin(box, ink.shape)
    crop = Image.fromarray((ink[top:bottom, left:right] * 255).astype(np.uint8), mode="L")
    crop = crop.resize((line_width(box, ink.shape), HEIGHT), Image.Resampling.BILINEAR)
    return np.asarray(crop, dtype=np.float32) / 255.0


def line_arrays(img: Image.Image) -> list[np.ndarray]:
    """Every text line of an image as a HEIGHT-row array, top to bottom (empty if blank).

    The arrays of one image hold at most MAX_OUTPUT pixels in all; lines past that are dropped,
    so an adversarial picture (thousands of thin stripes) costs no more than a long page."""
    ink = ink_map(img)
    out, total = [], 0
    for box in line_boxes(ink):
        total += HEIGHT * line_width(box, ink.shape)
        if total > MAX_OUTPUT:
            break
        out.append(crop_line(ink, box))
    return out


def line_array(img: Image.Image) -> np.ndarray:
    """The whole image taken as one line (used for training images, which hold one line)."""
    ink = ink_map(img)
    mask = _clean(_mask(ink))  # a rim or border around the crop is not part of the line
    if not mask.any():
        return np.zeros((HEIGHT, HEIGHT // 2), dtype=np.float32)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    return crop_line(ink, box)


def batch_array(arrays: Sequence[np.ndarray], multiple_of: int = 1) -> np.ndarray:
    """Stack line arrays into a (B, 1, HEIGHT, W) float32 array, right-padded with background, so
    that every line ends in at least TAIL_PAD columns of background; W = W_max + TAIL_PAD, rounded
    up to a multiple of `multiple_of` (few distinct widths let a compiled model reuse its plans).
    numpy only: the ONNX runtime feeds it to onnxruntime as it is, without torch."""
    width = max(a.shape[1] for a in arrays) + TAIL_PAD
    width = -(-width // multiple_of) * multiple_of
    out = np.zeros((len(arrays), 1, HEIGHT, width), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, 0, :, : a.shape[1]] = a
    return out


def batch(arrays: Sequence[np.ndarray], multiple_of: int = 1) -> torch.Tensor:
    """batch_array as a torch tensor (sharing its memory): for TorchScript and training."""
    import torch  # here, so that a frontend that only forwards images never loads torch

    return torch.from_numpy(batch_array(arrays, multiple_of))
