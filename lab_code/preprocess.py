"""The pixel contract between training and serving: how a picture becomes the fixed-height line
arrays the model reads (grey, ink = 1 on a 0 background), how a page splits into lines, and how
lines are stacked into a batch.

Training renders lines and serving receives them; both go through these functions, so the model
sees the same pixels in both. Neither side owns this module: it imports neither.
"""

from __future__ import annotations

import math
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


# LANCZOS weighs ~6 source pixels per output pixel per unit of scale: from 25,000,000 columns to
# 4000 that is gigabytes of weights. A box reduction by an integer factor goes first, to within
# this factor of the target (Pillow's `reducing_gap`; at 3 the result is as good as LANCZOS alone).
REDUCING_GAP = 3.0


def shrink(img: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """Downscale so that neither side exceeds `max_side` (huge uploads stay cheap): an integer
    box reduction first (`Image.reduce`), LANCZOS for the last factor of three at most."""
    if max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


MIN_LINE = 4  # bands of ink fewer rows high than this are never a line of their own
MAX_OUTPUT = 32 * 400_000  # total pixels of all line arrays of one image (bounds a page's cost)
_EDGE_RUN = 0.6  # a straight run of ink this long (of the image's side) is a rule, rim or frame


def _sample(values: np.ndarray) -> np.ndarray:
    """At most ~250,000 of `values` (a 2-D picture or 1-D pixels): plenty for a histogram."""
    step = max(1, int(np.sqrt(values.size / 250_000)))
    return values[::step, ::step] if values.ndim == 2 else values[:: step * step]


GREYS = np.arange(256, dtype=np.float32) / 255.0  # each 8-bit grey as a picture array holds it


def _middle(values: np.ndarray, counts: np.ndarray, average=np.median) -> float:
    """`average` (np.median, or a percentile of 50) of the pixels of a picture that takes
    `values[i]` `counts[i]` times, to the bit: either looks at the middle pixel, or at the two
    middle ones (which it averages, or interpolates halfway between), so given those two alone
    it does what it does to the whole picture."""
    order = np.argsort(values, kind="stable")
    below = np.cumsum(counts[order])  # pixels up to each value, in increasing order
    n = int(below[-1])
    picks = order[np.searchsorted(below, sorted({(n - 1) // 2, n // 2}), side="right")]
    return float(average(values[picks]))


def _percentile_50(values: np.ndarray) -> np.floating:
    """The 50th percentile as numpy takes it: halfway between the two middle values."""
    return np.percentile(values, 50)


def _background(counts: np.ndarray) -> float:
    """The background grey of a picture of 8-bit greys (GREYS[i], counts[i] times): the most
    common level of a coarse histogram (32 levels: robust to rims), refined to the median of
    the pixels within one level of that level's centre. From the histogram, to the bit what
    np.median of those pixels gives, without sorting them."""
    levels = np.bincount(np.minimum((GREYS * 32).astype(np.int64), 31), weights=counts,
                         minlength=32)
    level = int(np.argmax(levels))
    near = np.where(np.abs(GREYS - (level + 0.5) / 32) <= 1 / 32, counts, 0)
    return _middle(GREYS, near) if near.any() else (level + 0.5) / 32


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
    """A number for every horizontal run of True in a 2-D mask (0 where False), 1 to the
    number of runs. (numpy's cumsum and where are slow on booleans: the sum runs on a copy in
    int64, in place, and multiplying by the mask zeroes what is not a run.)"""
    starts = mask.copy()
    starts[:, 1:] &= ~mask[:, :-1]
    ids = starts.astype(np.int64)
    np.cumsum(ids.ravel(), out=ids.ravel())
    ids *= mask
    return ids


def reach(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The pixels of `mask` joined to a seed pixel by a path inside `mask` (4-neighbours).

    Whole horizontal runs, then whole vertical runs, are filled from what is reached so far,
    until nothing changes: a frame or a surround takes two or three rounds, each O(pixels)."""
    rows, cols = _run_ids(mask), _run_ids(np.ascontiguousarray(mask.T)).T
    runs = ((rows, int(rows.max()) + 1), (cols, int(cols.max()) + 1))
    got = mask & seeds
    for _ in range(64):  # a spiral could need more; what is reached by then is kept
        before = np.count_nonzero(got)
        for ids, count in runs:
            hit = np.zeros(count, dtype=bool)
            hit[ids[got]] = True
            hit[0] = False
            got = hit[ids]
        if np.count_nonzero(got) == before:
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


PLANE_ROUNDS = (0.1, LEVEL_KEEP, LEVEL_KEEP, LEVEL_KEEP)  # how near the plane so far, per round


def _plane_points(arr: np.ndarray, where: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The pixels `_plane` fits, as a design matrix (1, x, y per row; x and y run 0 to 1) and
    their greys: at most a few thousand of `where` (None: a grid over the whole picture)."""
    h, w = arr.shape
    if where is None:
        step = max(1, int(np.sqrt(arr.size / 2_000)))
        at = (np.arange(0, h, step)[:, None] * w + np.arange(0, w, step)[None, :]).ravel()
    else:
        at = np.flatnonzero(where)
        at = at[:: max(1, at.size // 2_000)]
    ys, xs = np.divmod(at, w)
    design = np.empty((ys.size, 3))
    design[:, 0], design[:, 1], design[:, 2] = 1.0, xs / max(1, w - 1), ys / max(1, h - 1)
    return design, arr.ravel()[at].astype(np.float64)


def _plane(arr: np.ndarray, where: np.ndarray | None, start: float) -> np.ndarray:
    """The background's grey as a plane a + b*x + c*y, x and y running 0 to 1 across the
    picture (uneven light: a phone's shadow, a lamp to one side), fitted to the pixels of
    `where` (None: all) that lie near it: first those near the grey `start`, then, three more
    times, those near the plane so far. Ink, far from the background, takes no part. A few
    thousand pixels spread over the picture are enough for three numbers. Returns (a, b, c).

    A round that picks the pixels the last one picked ends the fit: the same pixels give the
    same plane, which picks them again in every later round."""
    design, values = _plane_points(arr, where)
    coef = np.array([start, 0.0, 0.0])
    last = None
    for keep in PLANE_ROUNDS:
        # indices and take(): the same rows as a boolean mask picks, in less time
        near = np.flatnonzero(np.abs(values - design @ coef) <= keep)
        if near.size < 16:
            break
        if last is not None and np.array_equal(last, near):
            break  # the same pixels as the last fit: it, and every fit after it, would not change
        last = near
        a, v = design.take(near, axis=0), values.take(near)
        try:
            coef = np.linalg.solve(a.T @ a, a.T @ v)  # least squares, by its normal equations
        except np.linalg.LinAlgError:  # the pixels lie on one line (a one-row picture)
            break
    return coef


def _plane_map(coef: np.ndarray, shape: tuple[int, ...],
               at: np.ndarray | None = None) -> np.ndarray:
    """The plane's grey at every pixel of a picture of this shape, or at the pixels of `at`
    alone (a boolean mask; the same numbers, in the order `picture[at]` lists them)."""
    x = np.linspace(0.0, 1.0, shape[1], dtype=np.float32)
    y = np.linspace(0.0, 1.0, shape[0], dtype=np.float32)
    if at is not None:
        rows, cols = np.nonzero(at)
        return (coef[0] + coef[1] * x[cols] + coef[2] * y[rows]).astype(np.float32)
    return (coef[0] + coef[1] * x[None, :] + coef[2] * y[:, None]).astype(np.float32)


CARD_FILL = 0.8  # a card fills at least this much of its box (a text block fills far less)
CARD_AREA = 0.08  # and covers at least this much of the picture
SURROUND_PX = 3  # a surround is at least this many pixels thick on average (thinner: a frame)


def _spans_area(mask: np.ndarray, axis: int, has: np.ndarray) -> int:
    """Pixels between the first and the last True of each line along `axis` (0: each column's
    span, 1: each row's), ends included; 0 for a line without True (`has`: mask.any(axis))."""
    first = mask.argmax(axis=axis)
    last = mask.shape[axis] - 1 - np.flip(mask, axis=axis).argmax(axis=axis)
    return int(((last - first + 1) * has).sum())


def _may_fill(other: np.ndarray) -> bool:
    """Whether `card` could find a card in `other` (the pixels not of the surround's colour),
    by a bound that costs a few passes instead of a flood fill. The card is `other` and what it
    encloses; a pixel before the first or after the last of `other` in its row (or column) is
    joined to the picture's edge, so the card lies within every row's and column's span of
    `other`, and its box is `other`'s box. Spans that fill less than CARD_FILL of that box, or a
    box under CARD_AREA of the picture (a line of text on its own background), rule a card out:
    `card` would say None too, after the fill. True: the fill decides."""
    in_row, in_col = other.any(axis=1), other.any(axis=0)
    rows, cols = np.flatnonzero(in_row), np.flatnonzero(in_col)
    box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    if box < CARD_AREA * other.size:
        return False
    spans = min(_spans_area(other, 0, in_col), _spans_area(other, 1, in_row))
    return spans >= CARD_FILL * box


def card(arr: np.ndarray, tolerance: float = 0.1) -> np.ndarray | None:
    """The pixels of the card the text sits on, when the picture shows one on a surround of
    another colour (a phone photo of a panel, a framed box, a screen's edge); None when the
    text sits on the picture's own background.

    The surround is what has the colour of the picture's edge and is joined to that edge; the
    card is the rest, if that rest is one solid block: a text block without a card leaves only
    letters, which fill a small part of their box."""
    ring = _ring(arr.shape)
    edge = arr[ring]
    plane = _plane(arr, ring, float(np.median(edge)))  # the surround's colour, in uneven light
    if np.mean(np.abs(edge - _plane_map(plane, arr.shape, ring)) <= tolerance) < 0.7:
        return None  # no one surround colour
    other = np.abs(arr - _plane_map(plane, arr.shape)) > tolerance
    if other.mean() < CARD_AREA * CARD_FILL or other[ring].mean() > 0.2:
        return None  # too little of another colour, or it is not inside a surround
    if not _may_fill(other):  # text on the picture's own background: no flood fill needed
        return None
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
    greys = np.asarray(shrink(to_gray(img)))  # 8-bit
    arr = greys.astype(np.float32) / 255.0
    inside = card(arr)
    values = arr if inside is None else arr[inside]
    # Histograms of the 8-bit greys give the background grey and the median ink, the numbers
    # np.median and np.percentile would give, in a fraction of the time (no sorting).
    every = np.bincount(greys.ravel(), minlength=256)
    sample = _sample(greys if inside is None else greys[inside])
    bg = _background(every if sample.size == greys.size else
                     np.bincount(sample.ravel(), minlength=256))
    level = _plane(arr, inside, bg)
    uneven = abs(level[1]) + abs(level[2]) > UNEVEN
    if uneven:  # uneven light: level the background
        arr = np.clip(arr - _plane_map(level, arr.shape) + bg, 0.0, 1.0)
        values = arr if inside is None else arr[inside]
    flip = _light_on_dark(values, bg)
    if flip:
        arr = 1.0 - arr
        bg = 1.0 - bg
    ink = 1.0 - arr
    if uneven:  # levelled: no longer 256 greys
        median = float(np.percentile(ink, 50))
    else:
        median = _middle(1.0 - (1.0 - GREYS if flip else GREYS), every, _percentile_50)
    lo = min(median, 1.0 - bg)
    # The darkest ink; on a card, of the card alone and past its few brightest specks (the
    # surround's colour bleeding over the card's edge would squash the text's contrast).
    hi = float(ink.max()) if inside is None else float(np.percentile(ink[inside], 99.9))
    if hi - lo < 0.08:  # a blank or nearly blank picture
        return np.zeros_like(ink)
    ink = np.clip((ink - lo) / (hi - lo), 0.0, 1.0)
    if inside is not None:  # the surround, and a frame or anything else joined to it, goes
        ink[reach(_mask(ink) | ~inside, _ring(ink.shape))] = 0.0
    return ink


def _mask(ink: np.ndarray, threshold: float = INK_THRESHOLD) -> np.ndarray:
    """Ink pixels, with isolated noise removed by a 3x3 median filter. On a yes/no picture the
    median of 9 pixels is a majority vote (at least 5 of 9 are ink), so the mask is thresholded
    first and voted on: the same mask as a median of the grey levels, in a fifth of the time.
    Edges count their own pixels again, as Pillow's MedianFilter does."""
    return _vote((ink * 255).astype(np.uint8), threshold)


def _vote(levels: np.ndarray, threshold: float) -> np.ndarray:
    """`_mask` of an ink map already in 8-bit levels (ink * 255, truncated)."""
    above = _padded(levels > threshold * 255, edge=True)
    return _box3(above.view(np.uint8)) >= 5


def _padded(mask: np.ndarray, edge: bool = False) -> np.ndarray:
    """A 2-D boolean array with one more pixel all round: False, or (`edge`) a copy of the
    nearest one. What np.pad does, without its Python overhead (it ran twice per picture)."""
    h, w = mask.shape
    out = np.zeros((h + 2, w + 2), dtype=bool)
    out[1:-1, 1:-1] = mask
    if edge:
        out[0, 1:-1], out[-1, 1:-1] = mask[0], mask[-1]
        out[:, 0], out[:, -1] = out[:, 1], out[:, -2]
    return out


def _box3(padded: np.ndarray) -> np.ndarray:
    """The sum of every 3x3 neighbourhood of a 0/1 uint8 array padded by one pixel all round
    (the result has the unpadded shape): three columns added, then three rows of that."""
    h, w = padded.shape[0] - 2, padded.shape[1] - 2
    cols = padded[:, :w] + padded[:, 1 : w + 1] + padded[:, 2:]
    return cols[:h] + cols[1 : h + 1] + cols[2:]


THIN_KEEP = 0.2  # a vote that keeps less than this share of the faint vote's ink: thin strokes


def _text_mask(ink: np.ndarray) -> np.ndarray:
    """The voted mask lines are found in. Thin light strokes (a Courier of 1999 at 100 dpi: one
    grey pixel wide, darker only where strokes cross) mostly fall under the threshold and then
    lose the vote, leaving a few crossings of a whole line; when the vote at INK_THRESHOLD keeps
    less than THIN_KEEP of what a vote at half of it keeps, the picture is taken at half."""
    levels = (ink * 255).astype(np.uint8)
    voted = _vote(levels, INK_THRESHOLD)
    faint = _vote(levels, INK_THRESHOLD / 2)
    return faint if voted.sum() < THIN_KEEP * faint.sum() else voted


def _spans(profile: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in a 1-D boolean array, as (start, stop)."""
    padded = np.concatenate([[False], profile, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _runs_of(mask: np.ndarray, length: int) -> np.ndarray:
    """Which rows of a 2-D boolean array hold a run of at least `length` True (length >= 1).
    Windows of True twice as long are built from the last ones (1, 2, 4... pixels: a few
    passes, O(pixels) each); two windows of the largest such size that fit cover `length`."""
    size, windows = 1, mask
    while 2 * size <= length:
        windows = windows[:, :-size] & windows[:, size:]
        size *= 2
    if mask.shape[1] < length:
        return np.zeros(mask.shape[0], dtype=bool)
    starts = mask.shape[1] - length + 1
    return (windows[:, :starts] & windows[:, length - size : length - size + starts]).any(axis=1)


def _rules(mask: np.ndarray) -> np.ndarray:
    """Rows (a 1-D boolean array) that hold a straight horizontal run of ink too long for text:
    a rim, a border, an underline or a frame's edge. Only rows dense enough are checked."""
    long = max(8, int(_EDGE_RUN * mask.shape[1]))
    out = np.zeros(mask.shape[0], dtype=bool)
    dense = np.flatnonzero(mask.sum(axis=1) >= long)
    if dense.size:
        out[dense] = _runs_of(mask[dense], long)
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


def _dropped(voted: np.ndarray, cleaned: np.ndarray) -> np.ndarray:
    """Pixels at or next to what `_clean` removed from the voted mask (rims, rules, frame
    edges): no small mark is looked for there."""
    removed = voted & ~cleaned
    near = removed.copy()
    near[1:] |= removed[:-1]
    near[:-1] |= removed[1:]
    near[:, 1:] |= near[:, :-1].copy()
    near[:, :-1] |= near[:, 1:].copy()
    return near


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


MARK_GAP = 0.6  # ink this close to a line (in line heights, sideways) is part of it,
MARK_REACH = 1.5  # up to this far from the text's own ink in all (a final "...")
MARK_ROWS = 0.6  # and up or down by this much (the dot of an i over a line without capitals)
MARK_WIDTH = 0.8  # a mark above or below a line is at most this wide (in line heights)


def _marks(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where a line's small marks are looked for (a final full stop, a colon, the dot of an i,
    a thin stroke the vote erases), and the faint ink around them: pixels above half the
    threshold. A mark is an ink pixel with faint ink beside it (8-neighbours), without the
    majority vote; at 100 dpi a full stop is one dark pixel in a grey halo, while a lone pixel
    on a clean background is a speck. Faint ink tells rules and frame edges apart from marks."""
    faint = ink > INK_THRESHOLD / 2
    votes = _box3(_padded(faint).view(np.uint8))
    return (ink > INK_THRESHOLD) & (votes >= 2), faint


def _walk(profile: np.ndarray, start: int, stop: int, wall: np.ndarray, reach: int,
          clear: int) -> int:
    """How many positions from `start` towards `stop` (excluded) a run of marks covers along
    a 1-D `profile` of mark pixels: marks may be `clear` - 1 positions apart, and must end in
    `clear` empty positions, in `stop` or in a `wall` with one empty position before it. Marks
    that go on past `reach` are not marks (noise, a texture, another line's ink): 0."""
    step = 1 if stop > start else -1
    covered, i = 0, 0
    while True:
        at = start + i * step
        if at == stop:
            return covered
        if wall[at]:
            return covered if i > covered or covered == 0 else 0
        if profile[at]:
            if i >= reach:
                return 0
            covered = i + 1
        elif i + 1 - covered >= clear:
            return covered
        i += 1


def _grow(marks: np.ndarray, faint: np.ndarray, box: tuple[int, int, int, int],
          above: int, below: int) -> tuple[int, int, int, int]:
    """A line box (top, bottom, left, right) grown over the small marks next to it that the
    noise filter erased (see `_marks`): sideways by at most MARK_REACH line heights, marks at
    most MARK_GAP apart; then up and down by at most MARK_ROWS, no further than rows `above`
    and `below` (where the neighbouring lines' room starts). A column that faint ink fills
    mostly, or that reaches well out of the line both up and down (a rule, a frame's edge,
    whole or broken), and a row with a run of faint ink longer than MARK_WIDTH line heights
    (an underline, a frame's top) are walls. Marks that run on past the reach are noise
    and add nothing; specks further away are never reached. Cost: O(pixels around the box)."""
    top, bottom, left, right = box
    height = bottom - top
    gap = max(2, round(MARK_GAP * height))
    reach = max(gap, round(MARK_REACH * height))
    r0, r1 = max(above, top - height // 2), min(below, bottom + height // 2)
    counts = marks[r0:r1].sum(axis=0)
    column, out = faint[r0:r1].copy(), height // 4
    for shift in (1, 2):  # two columns either way: a frame seen at a slant is a wall too
        column[:, shift:] |= faint[r0:r1, :-shift]
        column[:, :-shift] |= faint[r0:r1, shift:]
    wall = column.sum(axis=0) >= 0.7 * (r1 - r0)
    if top - r0 > out and r1 - bottom > out:  # or reaches well out of the line, up and down
        wall |= column[: top - r0 - out].any(axis=0) & column[bottom - r0 + out :].any(axis=0)
    right += _walk(counts, right, marks.shape[1], wall, reach, gap)
    left -= _walk(counts, left - 1, -1, wall, reach, gap)
    vreach = max(1, round(MARK_ROWS * height))
    vclear = max(3, round(0.25 * height))
    r0, r1 = max(above, top - vreach - 1), min(below, bottom + vreach + 1)
    near = marks[r0:r1, left:right]
    rows = np.zeros(marks.shape[0], dtype=np.int64)
    wall = np.zeros(marks.shape[0], dtype=bool)
    rows[r0:r1] = near.sum(axis=1)
    wall[r0:r1] = _runs_of(faint[r0:r1, left:right], math.floor(max(3, MARK_WIDTH * height)) + 1)
    top -= _walk(rows, top - 1, max(above, r0) - 1, wall, vreach, vclear)
    bottom += _walk(rows, bottom, min(below, r1), wall, vreach, vclear)
    return top, bottom, left, right


def line_boxes(ink: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (top, bottom, left, right) of the text lines in an ink map, top to bottom.

    Rims, borders and frame edges are removed first; rows with ink form bands; bands much
    thinner than the tallest one are merged into their nearest neighbour, so a page splits into
    whole lines. Each box then takes in the small marks next to its text that the noise filter
    erased (see `_grow`). Cost: O(pixels) for the mask, O(bands) for the merge.
    """
    voted = _text_mask(ink)
    mask = _clean(voted)
    rows = _spans(mask.any(axis=1))
    if not rows:
        return []
    dropped = _dropped(voted, mask)
    marks, faint = _marks(ink)
    marks &= ~dropped
    bands = [(top, bottom) for top, bottom in _merge(rows)
             if bottom - top >= MIN_LINE or len(rows) == 1]
    boxes = []
    for i, (top, bottom) in enumerate(bands):
        cols = np.flatnonzero(mask[top:bottom].any(axis=0))
        if not cols.size:
            continue
        above = (bands[i - 1][1] + top + 1) // 2 if i else 0
        below = (bottom + bands[i + 1][0]) // 2 if i + 1 < len(bands) else ink.shape[0]
        box = (top, bottom, int(cols[0]), int(cols[-1]) + 1)
        boxes.append(_grow(marks, faint, box, above, below))
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
    voted = _text_mask(ink)
    mask = _clean(voted)  # a rim or border around the crop is not part of the line
    if not mask.any():
        return np.zeros((HEIGHT, HEIGHT // 2), dtype=np.float32)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    marks, faint = _marks(ink)
    box = _grow(marks & ~_dropped(voted, mask), faint, box, 0, ink.shape[0])
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
