"""What the service notes about each input image without keeping it: a few numbers that say what
kind of picture it was (size, lines, brightness, contrast, ink share). The prediction log stores
them, and the drift check compares their recent distribution with the model's reference profile.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

THUMBNAIL = 256  # statistics are taken on a copy at most this many pixels on a side: cheap
INK_DELTA = 0.25  # a pixel is ink when its grey is this far (0-1) from the picture's typical grey

# The statistics the drift check compares (the log keeps more: width, height, bytes).
DRIFT_STATS = ("brightness", "contrast", "ink_share", "height", "lines")


def image_stats(img: Image.Image) -> dict[str, float]:
    """width and height in pixels; brightness (mean grey, 0 = black, 1 = white); contrast (the
    greys' standard deviation); ink share (the fraction of pixels far from the typical grey,
    whichever way: dark text on white and light text on dark count alike). All from one
    256-bin histogram of a copy at most THUMBNAIL pixels on a side: a fraction of a millisecond."""
    width, height = img.size
    factor = max(1, max(width, height) // THUMBNAIL)
    small = img.reduce(factor) if factor > 1 else img  # a box filter, in C
    counts = np.asarray(small.convert("L").histogram(), dtype=np.float64)
    total = counts.sum()
    levels = np.arange(256, dtype=np.float64) / 255.0
    mean = float(counts @ levels / total)
    spread = float(np.sqrt(counts @ (levels - mean) ** 2 / total))
    typical = levels[int(np.searchsorted(np.cumsum(counts), total / 2))]  # the median grey
    ink = float(counts[np.abs(levels - typical) > INK_DELTA].sum() / total)
    return {"width": width, "height": height, "brightness": round(mean, 4),
            "contrast": round(spread, 4), "ink_share": round(ink, 4)}
