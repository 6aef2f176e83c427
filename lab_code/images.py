"""Image input on the production side, the one home of turning bytes, files and URLs into the
line arrays the model reads: decode (PNG and JPEG only, and only after looking at the file: its
size, shape, JPEG scans and chunk count are read from the bytes and refused before a pixel is
decoded), turn phone photos the right way up (EXIF), fetch URLs under `lab_code.urlfetch`'s
policy, and bound the work one image may ask for (lines, columns) before the expensive step.
What happens to the pixels themselves lives in `lab_code.preprocess`.
"""

from __future__ import annotations

import io
import os
import re
import struct
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
# What the API promises, and all Pillow may try: its other 20-odd formats are never opened (an ICO
# or ICNS decodes the PNG inside it, whatever size its directory claims, within Image.open).
# "MPO" is JPEG's own plugin for a camera's multi-picture JPEG; only its first picture is read.
FORMATS = ("PNG", "JPEG")


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
    max_side: int = 16_384  # pixels on the longer side (a 600-dpi scan 69 cm long)
    # longer side / shorter side: 4x the widest line of the training renderer (60 M's, ~31:1)
    # and of the real-world set (~19:1); tests/test_images.py measures both
    max_aspect: float = 128.0
    # progressive scans of a JPEG: libjpeg's own scripts use 6 (grey), 10 (colour), 18 (CMYK);
    # each repeat of a scan is one more pass over every block (~25 ms at 25 M pixels here)
    max_jpeg_scans: int = 32
    max_segments: int = 4096  # JPEG markers or PNG chunks (a 6 MB PNG in 8 KB chunks: 750)
    max_lines: int = 64  # text lines found on one image
    max_columns: int = 120_000  # columns sent to the model, all lines together (~2 s of CPU)
    max_bands: int = 256  # bands of inked rows before merging: a cheap pre-check for stripes


LIMITS = WorkLimits()


def check_size(width: int, height: int, limits: WorkLimits = LIMITS) -> None:
    if width * height > limits.max_pixels:
        raise ImageInputError(
            f"The image is {width}x{height} pixels, more than the {limits.max_pixels:,} allowed: "
            "crop or shrink it and try again.")
    if max(width, height) > limits.max_side:
        raise ImageInputError(
            f"The image is {width}x{height} pixels, longer than {limits.max_side:,} pixels on a "
            "side: crop or shrink it and try again.")
    if max(width, height) > limits.max_aspect * max(1, min(width, height)):
        raise ImageInputError(
            f"The image is {width}x{height} pixels, more than {limits.max_aspect:g} times longer "
            "than it is wide: crop it to the text and try again.")


_MAGIC = {b"GIF8": "a GIF image", b"RIFF": "a WebP (RIFF) file", b"BM": "a BMP image",
          b"II*\0": "a TIFF image", b"MM\0*": "a TIFF image", b"\0\0\1\0": "an ICO icon",
          b"icns": "an ICNS icon", b"8BPS": "a Photoshop file", b"%PDF": "a PDF"}
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # ends a scan's entropy-coded data


def _png_chunks(data: bytes, name: str, limits: WorkLimits) -> None:
    """Walk a PNG's chunks (lengths only): refuse a file of too many, or one cut short."""
    at, count = 8, 0
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        at += 12 + length
        count += 1
        if kind == b"IEND":
            return
        if count > limits.max_segments:
            raise ImageInputError(f"{name} is a PNG of more than {limits.max_segments:,} chunks: "
                                  "save it again with an ordinary image program.")
    raise ImageInputError(f"{name} is a PNG that is cut short: send the whole file.")


def _jpeg_scans(data: bytes, name: str, limits: WorkLimits) -> int:
    """Walk a JPEG's markers without decoding anything and count its scans (SOS); refuse a file
    of too many scans (each one more pass over the whole picture) or too many markers."""
    at, scans, markers = 2, 0, 0
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise ImageInputError(f"{name} is a damaged JPEG: send the file again.")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker == 0xD9:  # end of image
            break
        markers += 1
        if markers > limits.max_segments:
            raise ImageInputError(f"{name} is a JPEG of more than {limits.max_segments:,} "
                                  "markers: save it again with an ordinary image program.")
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
        if marker == 0xDA:  # a scan: its entropy-coded data runs to the next marker
            scans += 1
            if scans > limits.max_jpeg_scans:
                raise ImageInputError(
                    f"{name} is a progressive JPEG of more than {limits.max_jpeg_scans} scans "
                    "(each makes the decoder read the whole picture again): save it as an "
                    "ordinary JPEG or a PNG.")
            found = _JPEG_MARKER.search(data, at)
            at = found.start() if found else len(data)
    return scans


def inspect_bytes(data: bytes, name: str = "the input", limits: WorkLimits = LIMITS) -> str:
    """Look at image bytes before decoding them: "PNG" or "JPEG", or ImageInputError (415 for
    another format, 422 for a file that asks too much) with one sentence. Reads lengths and
    markers only: a few milliseconds even for a 6 MB file."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        _png_chunks(data, name, limits)
        return "PNG"
    if data[:3] == b"\xff\xd8\xff":
        _jpeg_scans(data, name, limits)
        return "JPEG"
    kind = next((k for magic, k in _MAGIC.items() if data.startswith(magic)), None)
    if kind is not None:
        raise ImageInputError(f"{name} is {kind}; this service reads PNG and JPEG only: "
                              "convert it and try again.", status=415)
    raise ImageInputError(f"{name} is not an image this service reads: send a PNG or JPEG file.")


def exif_upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation of phone photos, so the text is the right way up."""
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, TypeError, KeyError, SyntaxError):  # a broken EXIF block
        return img


def look(data: bytes, name: str = "the input", limits: WorkLimits = LIMITS) -> Image.Image:
    """An image opened but not decoded: its bytes looked at (`inspect_bytes`), then its header
    read and its size and shape checked (`check_size`); ImageInputError with one sentence when
    any of that refuses it. Milliseconds, whatever the file: a server can do this before it
    queues the image for decoding."""
    if not data:
        raise ImageInputError(f"{name} is empty: send the bytes of a PNG or JPEG image.")
    inspect_bytes(data, name, limits)
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as err:
        raise ImageInputError(f"{name} has too many pixels: crop or shrink it.") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageInputError(
            f"{name} is not an image Pillow can read: send a PNG or JPEG file.") from err
    check_size(*img.size, limits=limits)  # header only: no pixels decoded yet
    return img


def open_image_bytes(data: bytes, name: str = "the input",
                     limits: WorkLimits = LIMITS) -> Image.Image:
    """Decode a PNG or JPEG, after looking at it (`look`: nothing refused has a pixel decoded),
    and turn it upright by its EXIF orientation (as a phone photo expects). A JPEG larger than
    preprocess.MAX_SIDE is decoded straight to about that size (libjpeg's DCT scaling,
    `draft`), not decoded whole and shrunk."""
    img = look(data, name, limits)
    try:
        if img.format in ("JPEG", "MPO") and max(img.size) > preprocess.MAX_SIDE:
            scale = preprocess.MAX_SIDE / max(img.size)
            img.draft(img.mode, (round(img.width * scale), round(img.height * scale)))
        declared = img.size
        img.load()
        if img.size != declared:  # what a container that lies about its payload looks like
            raise ImageInputError(f"{name} declares {declared[0]}x{declared[1]} pixels but holds "
                                  f"{img.width}x{img.height}: send an ordinary PNG or JPEG.")
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
        check_size(*source.size, limits=limits)
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


def decode_lines(data: bytes, name: str = "the input", limits: WorkLimits = LIMITS,
                 timings: dict[str, float] | None = None,
                 inspect: Callable[[Image.Image], None] | None = None) -> list[np.ndarray]:
    """Image bytes to line arrays: decoded (time "decode" in `timings`) and split into lines
    ("lines"), within `limits`; `inspect`, when given, sees the decoded picture first. This is
    the work a server runs where a deadline can stop it (lab_code.serving.decoding runs exactly
    this in a worker process)."""
    with stage(timings, "decode"):
        img = open_image_bytes(data, name=name, limits=limits)
    if inspect is not None:
        inspect(img)
    with stage(timings, "lines"):
        return page_lines(img, limits)


Decoder = Callable[[bytes, str, WorkLimits, "dict[str, float] | None"], "list[np.ndarray]"]


def lines_from(source: bytes | str, *, name: str | None = None, limits: WorkLimits = LIMITS,
               url_policy=None, gate: AbstractContextManager | None = None,
               timings: dict[str, float] | None = None,
               decoder: Decoder | None = None,
               inspect: Callable[[Image.Image], None] | None = None) -> list[np.ndarray]:
    """The line arrays of an image given as bytes or as an http(s) URL: fetched under the URL
    policy (time "read" in `timings`), decoded ("decode") and split into lines ("lines"), every
    step within `limits`; ImageInputError (with its HTTP status) and one sentence otherwise.
    `decoder(data, name, limits, timings)` does the decoding and splitting instead of this
    thread (a server passes its worker processes: lab_code.serving.decoding); `gate` is held
    while this thread does it (a bound on images decoded at once: each can take hundreds of
    MB); `name` names the input in messages; `inspect`, when given, sees the decoded picture
    here (the service notes its statistics, lesson 08; a decoder does that itself)."""
    if isinstance(source, str):
        name = name or shown(source)
        with stage(timings, "read"):
            source = fetch_url(source, url_policy)
    if decoder is not None:
        return decoder(source, name or "the input", limits, timings)
    with gate or nullcontext():
        return decode_lines(source, name or "the input", limits, timings, inspect)


def _row_bands(ink: np.ndarray) -> int:
    """Runs of inked rows, before any merging: a few array operations, whatever the picture."""
    rows = (ink > preprocess.INK_THRESHOLD).any(axis=1).astype(np.int8)
    return int(np.count_nonzero(np.diff(rows, prepend=0) == 1))


def page_lines(img: Image.Image, limits: WorkLimits = LIMITS) -> list[np.ndarray]:
    """Every text line of an image as a HEIGHT-row array, top to bottom, after checking that the
    work it asks for is within `limits`; ImageInputError (422) with one sentence when it is not."""
    check_size(*img.size, limits=limits)
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
