"""Image input: loading, polarity, any mode or size, page splitting, and clear errors."""

import io
import time

import hostile
import numpy as np
import pytest
from PIL import Image

from lab_code import images, preprocess
from lab_code.training import data


def _line(text="Some text here", size=30, font=0):
    return data.render(text, data.Style.clean(data.fonts()[font], size=size))


def _page(lines, size=28):
    rendered = [_line(t, size=size) for t in lines]
    width = max(r.width for r in rendered)
    page = Image.new("RGB", (width, sum(r.height for r in rendered)), "white")
    y = 0
    for r in rendered:
        page.paste(r, (0, y))
        y += r.height
    return page


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "1", "I;16"])
def test_any_mode_becomes_one_line_of_height_32(mode):
    arrays = preprocess.line_arrays(_line().convert(mode))
    assert len(arrays) == 1 and arrays[0].shape[0] == preprocess.HEIGHT


def test_light_on_dark_is_normalised_to_the_same_polarity():
    img = _line().convert("L")
    dark = Image.eval(img, lambda v: 255 - v)
    a, b = preprocess.line_array(img), preprocess.line_array(dark)
    assert a.shape == b.shape and np.abs(a - b).mean() < 0.02


def test_transparent_png_is_composited_on_white():
    rgba = Image.new("RGBA", (300, 60), (0, 0, 0, 0))
    rgba.paste(_line().convert("RGBA").resize((300, 60)))
    assert len(preprocess.line_arrays(rgba)) == 1


def test_blank_image_has_no_lines():
    assert preprocess.line_arrays(Image.new("RGB", (200, 50), "white")) == []


@pytest.mark.parametrize("n", [2, 5, 16])
def test_pages_split_into_their_lines(n):
    lines = [data.english_lines()[i] for i in range(n)]
    assert len(preprocess.line_arrays(_page(lines))) == n


def test_huge_images_are_shrunk_and_bombs_refused():
    big = Image.new("L", (9000, 300), 255)
    assert max(preprocess.shrink(big).size) == preprocess.MAX_SIDE
    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, format="PNG")  # tiny file, 400 Mpx when decoded
    with pytest.raises(images.ImageInputError, match="too many pixels|allowed"):
        images.open_image_bytes(buf.getvalue())


def _png_header_only(width: int, height: int) -> bytes:
    """A whole PNG file that claims `width` x `height` and holds no pixels: its signature and
    IHDR (the size), one IDAT of four bytes that are not compressed data, and IEND. Its chunks
    are all there, so the byte check passes it; Pillow opens it, and decoding it fails."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")
    return buf.getvalue()[:33] + chunk(b"IDAT", b"\0\0\0\0") + chunk(b"IEND", b"")


def test_the_pixel_limit_is_checked_from_the_header_before_decoding():
    """30 Mpx is over the course's 25 Mpx limit but under Pillow's own bomb limit (89 Mpx warns,
    179 Mpx raises), so only the course's check can refuse it, and only with its own sentence.
    The header-only PNG proves the check comes before decoding: decoding it would fail with
    "not an image Pillow can read" instead."""
    assert 30_000_000 < Image.MAX_IMAGE_PIXELS
    with pytest.raises(images.ImageInputError,
                       match=r"^The image is 6000x5000 pixels, more than the 25,000,000 allowed"):
        images.open_image_bytes(_png_header_only(6000, 5000))
    small = images.WorkLimits(max_pixels=999)  # the limit is the caller's, not a constant
    with pytest.raises(images.ImageInputError, match=r"40x25 pixels, more than the 999 allowed"):
        images.open_image_bytes(_png_header_only(40, 25), limits=small)
    with pytest.raises(images.ImageInputError, match="not an image Pillow can read"):
        images.open_image_bytes(_png_header_only(40, 24), limits=images.WorkLimits(max_pixels=960))


def test_clear_errors_for_bad_inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    cases = [tmp_path / "missing.png", tmp_path / "notes.txt", tmp_path, "ftp://host/x.png"]
    for source in cases:
        with pytest.raises(images.ImageInputError) as err:
            images.load_image(source)
        assert "\n" not in str(err.value)
    with pytest.raises(images.ImageInputError):
        images.open_image_bytes(b"")


def test_batch_pads_to_the_widest_line():
    a, b = np.ones((32, 10), np.float32), np.ones((32, 25), np.float32)
    out = preprocess.batch([a, b])
    assert out.shape == (2, 1, 32, 25 + preprocess.TAIL_PAD) and out[0, 0, :, 10:].sum() == 0


# --- EXIF, base64 and the work limits ----------------------------------------------------------
def test_open_image_bytes_turns_a_phone_photo_upright():
    stored = _line().convert("RGB").rotate(90, expand=True)  # as the camera stored it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to display
    buf = io.BytesIO()
    stored.save(buf, "JPEG", exif=exif)
    img = images.open_image_bytes(buf.getvalue())
    assert img.width > img.height  # a line again, not a column
    assert len(preprocess.line_arrays(img)) == 1


@pytest.mark.parametrize(("value", "phrase"), [
    ("data:image/png,abc", "must be base64"), ("@@@", "not valid base64"), ("  ", "empty")])
def test_decode_base64_errors_are_one_sentence_and_a_400(value, phrase):
    with pytest.raises(images.ImageInputError, match=phrase) as err:
        images.decode_base64(value, "The pasted image")
    assert err.value.status == 400 and str(err.value).endswith(".")


def test_decode_base64_reads_data_urls_and_wrapped_text():
    raw = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    text = __import__("base64").b64encode(raw).decode()
    wrapped = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    for value in (f"data:image/png;base64,{text}", wrapped, text.rstrip("=")):
        assert images.decode_base64(value) == raw


def test_page_lines_reads_a_real_page_of_40_lines():
    lines = [data.english_lines()[i] for i in range(40)]
    assert len(images.page_lines(_page(lines, size=22))) == 40


def _stripes(height: int, width: int) -> Image.Image:
    arr = np.full((height, width), 255, np.uint8)
    arr[::2] = 0
    return Image.fromarray(arr)


@pytest.mark.parametrize(("img", "phrase"), [
    (_stripes(1000, 1000), "bands of ink"),
    (_stripes(4000, 4000), "bands of ink"),
    (_stripes(4000, 3), "times longer than it is wide"),  # refused by its shape first
])
def test_page_lines_refuses_stripes_before_splitting_them(monkeypatch, img, phrase):
    def no_split(ink):
        raise AssertionError("line_boxes ran on a stripes bomb")

    monkeypatch.setattr(preprocess, "line_boxes", no_split)
    with pytest.raises(images.ImageInputError, match=phrase) as err:
        images.page_lines(img)
    assert err.value.status == 422


@pytest.mark.parametrize("shape", [(100_000, 1), (1, 100_000)])
def test_a_one_pixel_strip_of_100000_is_bounded(shape):
    """Shrunk to MAX_SIDE first, then either read (a few thousand columns) or refused."""
    arr = np.where(np.arange(100_000) % 2 == 0, 0, 255).astype(np.uint8).reshape(shape)
    try:
        lines = images.page_lines(Image.fromarray(arr))
    except images.ImageInputError as err:
        assert err.status == 422
    else:
        assert sum(a.shape[1] for a in lines) <= images.LIMITS.max_columns


def test_page_lines_limits_lines_and_columns_from_the_boxes():
    tight = images.WorkLimits(max_lines=3, max_columns=10**9)
    with pytest.raises(images.ImageInputError, match="5 text lines, more than the 3"):
        images.page_lines(_page([data.english_lines()[i] for i in range(5)]), tight)
    narrow = images.WorkLimits(max_columns=100)
    with pytest.raises(images.ImageInputError, match="columns"):
        images.page_lines(_line(), narrow)


def test_line_width_matches_the_cropped_width():
    ink = preprocess.ink_map(_page([data.english_lines()[i] for i in range(3)]))
    for box in preprocess.line_boxes(ink):
        assert preprocess.line_width(box, ink.shape) == preprocess.crop_line(ink, box).shape[1]


def test_the_pixel_limit_refuses_before_decoding():
    with pytest.raises(images.ImageInputError, match="pixels"):
        images.load_image(Image.new("1", (6000, 5000)))


# --- looking before decoding: formats, JPEG scans, sides and shapes -------------------------------
def _encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture
def no_decoding(monkeypatch):
    """Image.open fails the test: what is refused must be refused from its bytes alone."""
    def refuse(*args, **kwargs):
        raise AssertionError("Pillow was asked to open a file that should have been refused")

    monkeypatch.setattr(images.Image, "open", refuse)


@pytest.mark.parametrize(("name", "make", "status", "phrase"), [
    ("JPEG of 1000 scans", lambda: hostile.scan_bomb(5000, 1000), 422, "more than 32 scans"),
    ("JPEG of 33 scans", lambda: hostile.scan_bomb(64, 33), 422, "more than 32 scans"),
    ("ICO claiming 16x16", hostile.ico_bomb, 415, "an ICO icon"),
    ("ICNS with a 13000x13000 PNG", hostile.icns_bomb, 415, "an ICNS icon"),
    ("GIF", hostile.gif, 415, "a GIF image"),
    ("not an image", lambda: b"hello, world", 422, "not an image this service reads"),
])
def test_refused_from_the_bytes_before_pillow_opens_them(no_decoding, name, make, status, phrase):
    raw = make()
    start = time.perf_counter()
    with pytest.raises(images.ImageInputError, match=phrase) as err:
        images.open_image_bytes(raw)
    assert err.value.status == status
    assert time.perf_counter() - start < 0.5, "looking at a file must not cost decoding it"


def test_ordinary_progressive_and_baseline_jpegs_still_read():
    line = _line().convert("RGB")
    for options in ({}, {"progressive": True}):
        raw = _encoded(line, "JPEG", quality=90, **options)
        assert images.inspect_bytes(raw) == "JPEG"
        assert images.open_image_bytes(raw).size == line.size
    cmyk = _encoded(line.convert("CMYK"), "JPEG", progressive=True)  # libjpeg's longest script
    assert images.open_image_bytes(cmyk).size == line.size
    scans = [s for s in hostile.jpeg_segments(hostile.scan_bomb(64, 32)) if s[0] == 0xDA]
    assert len(scans) == 32  # the largest count allowed still decodes
    assert images.open_image_bytes(hostile.scan_bomb(64, 32)).size == (64, 64)


@pytest.mark.parametrize(("size", "phrase"), [
    ((25_000_000, 1), "longer than 16,384 pixels"),  # 25 M pixels: passed the pixel cap
    ((16_000, 120), "times longer than it is wide"),
    ((3, 1000), "times longer than it is wide"),
])
def test_absurd_sides_and_shapes_are_refused_from_the_header(size, phrase):
    raw = hostile.thin_png(*size)
    assert len(raw) < 64_000
    with pytest.raises(images.ImageInputError, match=phrase):
        images.open_image_bytes(raw)


def test_the_shape_limit_leaves_room_for_every_line_of_our_data():
    """A line twice as long as the widest the training renderer draws (MAX_CHARS of its widest
    letter, in every training font) and the widest picture of the real-world set both pass
    max_aspect: a text line can be long, but not 128 times longer than it is high. Every font,
    because which fonts sort first depends on the machine's font packages."""
    from pathlib import Path

    folder = Path(__file__).parent / "data" / "realworld"
    real = max(max(im.size) / min(im.size)
               for im in (Image.open(p) for p in folder.glob("*/*")
                          if p.suffix in (".png", ".jpg")))
    longest = "M" * data.MAX_CHARS
    synthetic = max(line.width / line.height
                    for line in (_line(longest, size=s, font=f)
                                 for s in (12, 28) for f in range(len(data.fonts()))))
    assert max(real, synthetic) * 2 < images.LIMITS.max_aspect, (real, synthetic)


def test_a_png_of_too_many_chunks_is_refused():
    raw = _encoded(Image.new("L", (8, 8), 255), "PNG")
    text_chunk = (b"\0\0\0\0tEXt" + (0x8A4A0E7A).to_bytes(4, "big"))  # an empty tEXt chunk
    flood = raw[:33] + text_chunk * (images.LIMITS.max_segments + 1) + raw[33:]
    with pytest.raises(images.ImageInputError, match="chunks"):
        images.open_image_bytes(flood)


def test_a_huge_jpeg_is_decoded_straight_to_about_the_working_size():
    """draft(): libjpeg scales the DCT down while decoding (no 8000 x 6000 image in memory)."""
    raw = _encoded(Image.new("RGB", (9000, 2000), "white"), "JPEG")
    img = images.open_image_bytes(raw)
    assert img.size == (4500, 1000)  # libjpeg's scale 1/2: the largest that is not below 4000


def test_shrinking_a_very_wide_picture_stays_cheap():
    """LANCZOS alone from 25,000,000 columns to 4000: 6 s and 1.2 GB here; reduce() first: ms."""
    start = time.perf_counter()
    out = preprocess.shrink(Image.new("L", (25_000_000, 1), 255))
    assert out.size == (preprocess.MAX_SIDE, 1)
    assert time.perf_counter() - start < 1.5


@pytest.mark.parametrize("make", [hostile.ico_bomb, hostile.gif])
def test_pillow_opens_only_png_and_jpeg(monkeypatch, make):
    """Behind the look at the bytes, Pillow itself is allowed only its PNG and JPEG plugins: an
    ICO's plugin would decode the PNG inside it within Image.open."""
    monkeypatch.setattr(images, "inspect_bytes", lambda *args: "PNG")  # the first check gone
    with pytest.raises(images.ImageInputError, match="not an image Pillow can read"):
        images.open_image_bytes(make())
