"""Image input on the production side: decode bytes, files and URLs into PIL images, refusing
what is not an image or is too large before decoding its pixels, and turning phone photos the
right way up. What happens to the pixels next lives in `lab_code.preprocess`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # refuse to decode anything larger (a decompression bomb)
MAX_DOWNLOAD_BYTES = 10 * 1024 * 1024


class ImageInputError(ValueError):
    """An input that is not a usable image; the message is one sentence a person can act on."""


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageInputError(
            f"The image is {width}x{height} pixels, more than the {MAX_PIXELS:,} allowed: "
            "crop or shrink it and try again."
        )


def open_image_bytes(data: bytes, name: str = "the input") -> Image.Image:
    """Decode image bytes, refusing oversized images *before* decoding their pixels."""
    if not data:
        raise ImageInputError(f"{name} is empty: send the bytes of a PNG or JPEG image.")
    try:
        img = Image.open(io.BytesIO(data))
        _check_size(*img.size)  # header only: no pixels decoded yet
        img.load()
    except ImageInputError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageInputError(f"{name} has too many pixels: crop or shrink it.") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageInputError(
            f"{name} is not an image Pillow can read: send a PNG or JPEG file."
        ) from err
    return img


def fetch_url(url: str, timeout: float = 10.0) -> bytes:
    """Download an http(s) URL, with a clear error when it cannot be fetched."""
    import requests  # imported here: only URL inputs need it

    if not url.lower().startswith(("http://", "https://")):
        raise ImageInputError(f"Only http:// and https:// URLs can be fetched, not {url!r}.")
    try:
        with requests.get(url, timeout=timeout, stream=True) as resp:
            resp.raise_for_status()
            chunks, total = [], 0
            for chunk in resp.iter_content(64 * 1024):
                total += len(chunk)
                if total > MAX_DOWNLOAD_BYTES:
                    raise ImageInputError(
                        f"{url} is larger than {MAX_DOWNLOAD_BYTES // 2**20} MB: "
                        "use a smaller image."
                    )
                chunks.append(chunk)
    except requests.RequestException as err:
        raise ImageInputError(
            f"Could not download {url} ({type(err).__name__}): check the URL and your network."
        ) from err
    return b"".join(chunks)


def load_image(source: Image.Image | str | os.PathLike) -> Image.Image:
    """Return a PIL image from a PIL image, a file path or an http(s) URL."""
    if isinstance(source, Image.Image):
        _check_size(*source.size)
        return source
    text = os.fspath(source)
    if text.lower().startswith(("http://", "https://")):
        return open_image_bytes(fetch_url(text), name=text)
    path = Path(text)
    if not path.exists():
        raise ImageInputError(f"No file at {path}: check the path.")
    if path.is_dir():
        raise ImageInputError(f"{path} is a folder, not an image file.")
    return open_image_bytes(path.read_bytes(), name=str(path))


def exif_upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation of phone photos, so the text is the right way up."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block is not worth failing over
        return img
