"""The production recognizer: inputs of every kind, the CLI, and the import boundary."""

import subprocess
import sys

import pytest
from stand_ins import serve_http

from lab_code.artifacts import bundled_model_path
from lab_code.recognizer import TextRecognizer
from lab_code.training import data


@pytest.fixture(scope="module")
def recognizer():
    return TextRecognizer()


@pytest.fixture(scope="module")
def line_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "line.png"
    data.render("Fresh bread at noon", data.Style.clean(data.fonts()[0], size=30)).save(path)
    return path


def test_loads_the_bundled_model_by_default(recognizer):
    assert recognizer.model_path == bundled_model_path() and bundled_model_path().is_file()
    assert bundled_model_path().stat().st_size <= 5 * 1024 * 1024


def test_path_pil_and_modes_agree(recognizer, line_png):
    from PIL import Image

    img = Image.open(line_png)
    text = recognizer.predict(line_png)
    assert isinstance(text, str)
    for mode in ("RGB", "RGBA", "L"):
        assert recognizer.predict(img.convert(mode)) == text
    assert recognizer.predict_batch([line_png, str(line_png)]) == [text, text]


def test_http_url_input(recognizer, line_png, monkeypatch):
    import functools
    import http.server

    monkeypatch.setenv("LAB_ALLOW_PRIVATE_URLS", "1")  # the server is on this machine: opt in

    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(line_png.parent))
    with serve_http(handler) as base:
        url = f"{base}/{line_png.name}"
        assert recognizer.predict(url) == recognizer.predict(line_png)


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make model"):
        TextRecognizer(tmp_path / "nope.pt")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lab_code.recognizer", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_prints_the_text(recognizer, line_png):
    result = _cli(str(line_png))
    assert result.returncode == 0 and result.stdout.strip() == recognizer.predict(line_png)


@pytest.mark.parametrize("make_input", ["missing", "not_image", "folder", "bad_url"])
def test_cli_bad_inputs_exit_nonzero_with_one_line(tmp_path, make_input):
    target = {
        "missing": str(tmp_path / "missing.png"),
        "not_image": str(tmp_path / "notes.txt"),
        "folder": str(tmp_path),
        "bad_url": "http://127.0.0.1:9/none.png",  # port 9 (discard): nothing listens
    }[make_input]
    (tmp_path / "notes.txt").write_text("hello")
    result = _cli(target)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:")


def test_a_line_reads_the_same_alone_and_in_a_batch(recognizer):
    from lab_code import preprocess

    fonts = data.fonts()
    lines = [preprocess.line_array(data.render(t, data.Style.clean(fonts[i % len(fonts)],
                                                                   size=24 + i)))
             for i, t in enumerate(data.english_lines()[:12])]
    alone = [recognizer.predict_lines([line])[0] for line in lines]
    assert recognizer.predict_lines(lines) == alone


def test_a_line_that_reads_as_nothing_leaves_no_empty_line():
    from lab_code.recognizer import page_text

    assert page_text(["Grants Each Contributor", ""]) == "Grants Each Contributor"
    assert page_text(["one", "", "two"]) == "one\ntwo"
    assert page_text(["", ""]) == ""


def test_a_framed_phone_crop_reads_as_its_one_line(recognizer):
    # The splitter keeps what is left of this card's frame as a second "line" that reads as
    # nothing; the text must not end in a newline.
    from lab_code.training import evaluate

    sample = next(s for s in evaluate.realworld_set() if s.path.name == "096.jpg"
                  and s.family == "phone")
    assert recognizer.predict(sample.path) == sample.text == "Grants Each Contributor"
