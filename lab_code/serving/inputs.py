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
    whichever way: dark text on white and light text on dark count alike)."""
    width, height = img.size
    small = img.convert("L")
    small.thumbnail((THUMBNAIL, THUMBNAIL))
    grey = np.asarray(small, dtype=np.float32) / 255.0
    typical = float(np.median(grey))
    return {"width": width, "height": height,
            "brightness": round(float(grey.mean()), 4),
            "contrast": round(float(grey.std()), 4),
            "ink_share": round(float(np.mean(np.abs(grey - typical) > INK_DELTA)), 4)}
