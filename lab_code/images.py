"""Image input on the production side, the one home of turning bytes, files and URLs into the
line arrays the model reads: decode (refusing what is not an image or is too large before its
pixels are decoded), turn phone photos the right way up (EXIF), fetch URLs under
`lab_code.urlfetch`'s policy, and bound the work one image may ask for (lines, columns) before
the expensive step. What happens to the pixels themselves lives in `lab_code.preprocess`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lab_code import preprocess, urlfetch
from lab_code.timings import stage
from lab_code.urlfetch import shown

MAX_PIXELS = 25_000_000  # refuse to decode anything larger: a 6000 x 4000 phone photo still fits


class ImageInputError(ValueError):
    """An input that is not a usable image, or asks for too much work; the message is one
    sentence a person can act on, `status` the HTTP status a service answers with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class WorkLimits:
    """The most work one image may ask for, checked before the model runs. A real page of 40
    lines fits easily; a tiny PNG of alternating rows (thousands of one-pixel "lines", millions
    of columns) does not."""

    max_pixels: int = MAX_PIXELS  # decoded size
    max_lines: int = 64  # text lines found on one image
    max_columns: int = 120_000  # columns sent to the model, all lines together (~2 s of CPU)
    max_bands: int = 256  # bands of inked rows before merging: a cheap pre-check for stripes


LIMITS = WorkLimits()


def _check_size(width: int, height: int, limits: WorkLimits = LIMITS) -> None:
    if width * height > limits.max_pixels:
        raise ImageInputError(
            f"The image is {width}x{height} pixels, more than the {limits.max_pixels:,} allowed: "
            "crop or shrink it and try again.")


def exif_upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation of phone photos, so the text is the right way up."""
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, TypeError, KeyError, SyntaxError):  # a broken EXIF block
        return img


def open_image_bytes(data: bytes, name: str = "the input",
                     limits: WorkLimits = LIMITS) -> Image.Image:
    """Decode image bytes, refusing oversized images *before* decoding their pixels, and turn
    the picture upright by its EXIF orientation (as a phone photo expects)."""
    if not data:
        raise ImageInputError(f"{name} is empty: send the bytes of a PNG or JPEG image.")
    try:
        img = Image.open(io.BytesIO(data))
        _check_size(*img.size, limits=limits)  # header only: no pixels decoded yet
        img.load()
    except ImageInputError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageInputError(f"{name} has too many pixels: crop or shrink it.") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageInputError(
            f"{name} is not an image Pillow can read: send a PNG or JPEG file.") from err
    return exif_upright(img)


def fetch_url(url: str, policy=None) -> bytes:
    """Download an image URL under lab_code.urlfetch's policy (no internal addresses unless
    opted in, redirects re-checked, a total deadline and a byte cap)."""
    try:
        return urlfetch.fetch(url, policy)
    except urlfetch.UrlError as err:
        raise ImageInputError(str(err), status=err.status) from err


def load_image(source: Image.Image | str | os.PathLike, url_policy=None,
               limits: WorkLimits = LIMITS) -> Image.Image:
    """Return a PIL image from a PIL image, a file path or an http(s) URL."""
    if isinstance(source, Image.Image):
        _check_size(*source.size, limits=limits)
        return source
    text = os.fspath(source)
    if "://" in text[:12]:
        name = shown(text)
        return open_image_bytes(fetch_url(text, url_policy), name=name, limits=limits)
    path = Path(text)
    if not path.exists():
        raise ImageInputError(f"No file at {path}: check the path.")
    if path.is_dir():
        raise ImageInputError(f"{path} is a folder, not an image file.")
    return open_image_bytes(path.read_bytes(), name=str(path), limits=limits)


def lines_from(source: bytes | str, *, name: str | None = None, limits: WorkLimits = LIMITS,
               url_policy=None, gate: AbstractContextManager | None = None,
               timings: dict[str, float] | None = None,
               inspect: Callable[[Image.Image], None] | None = None) -> list[np.ndarray]:
    """The line arrays of an image given as bytes or as an http(s) URL: fetched under the URL
    policy (time "read" in `timings`), decoded ("decode") and split into lines ("lines"), every
    step within `limits`; ImageInputError (with its HTTP status) and one sentence otherwise.
    `gate` is held while decoding and splitting (a server bounds how many images it decodes at
    once: each can take hundreds of MB); `name` names the input in messages; `inspect`, when
    given, sees the decoded picture (the service notes its statistics, lesson 08)."""
    if isinstance(source, str):
        name = name or shown(source)
        with stage(timings, "read"):
            source = fetch_url(source, url_policy)
    with gate or nullcontext():
        with stage(timings, "decode"):
            img = open_image_bytes(source, name=name or "the input", limits=limits)
        if inspect is not None:
            inspect(img)
        with stage(timings, "lines"):
            return page_lines(img, limits)


def _row_bands(ink: np.ndarray) -> int:
    """Runs of inked rows, before any merging: a few array operations, whatever the picture."""
    rows = (ink > preprocess.INK_THRESHOLD).any(axis=1).astype(np.int8)
    return int(np.count_nonzero(np.diff(rows, prepend=0) == 1))


def page_lines(img: Image.Image, limits: WorkLimits = LIMITS) -> list[np.ndarray]:
    """Every text line of an image as a HEIGHT-row array, top to bottom, after checking that the
    work it asks for is within `limits`; ImageInputError (422) with one sentence when it is not."""
    _check_size(*img.size, limits=limits)
    ink = preprocess.ink_map(img)
    if _row_bands(ink) > limits.max_bands:
        raise ImageInputError(
            f"The image has more than {limits.max_bands} separate bands of ink (stripes or "
            "noise, not text): send a picture of at most "
            f"{limits.max_lines} lines of text.")
    boxes = preprocess.line_boxes(ink)
    if len(boxes) > limits.max_lines:
        raise ImageInputError(
            f"The image has {len(boxes)} text lines, more than the {limits.max_lines} allowed: "
            "crop it into smaller parts.")
    columns = sum(preprocess.line_width(box, ink.shape) for box in boxes)
    if columns > limits.max_columns:
        raise ImageInputError(
            f"The image's lines come to {columns:,} columns for the model, more than the "
            f"{limits.max_columns:,} allowed (lines very wide for their height): crop it or send "
            "fewer lines.")
    return [preprocess.crop_line(ink, box) for box in boxes]


def decode_base64(value: str, name: str = "The image") -> bytes:
    """Bytes of a base64 string or a `data:image/...;base64,` URL (line breaks are allowed);
    ImageInputError (400) with one sentence naming `name` when it is neither."""
    import base64
    import binascii

    data = value.strip()
    if data.startswith("data:"):
        header, comma, data = data.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ImageInputError(f'The data URL in {name} must be base64, like '
                                  '"data:image/png;base64,iVBOR...".', status=400)
    data = "".join(data.split())
    if not data:
        raise ImageInputError(f"{name} is empty: send a base64-encoded PNG or JPEG.", status=400)
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageInputError(f"{name} is not valid base64: encode the file's bytes, for example "
                              "base64.b64encode(path.read_bytes()).decode().", status=400) from err
