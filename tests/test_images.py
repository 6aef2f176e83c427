"""Image input: loading, polarity, any mode or size, page splitting, and clear errors."""

import io

import numpy as np
import pytest
from PIL import Image

from lab_code import data, images, preprocess


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
