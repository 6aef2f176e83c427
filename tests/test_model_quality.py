"""The bundled model really reads text, synthetic and real, and no retrained model gets worse.

The course's goals are the limits here: real-world overall <= 0.6% and phone-like <= 1.5%
(Tesseract 5 makes about 1.2% and 3.6% on the same images), the plain held-out set (the
course's first one, see data.plain_test_set) <= 1.316% (what the model read before the work on
documents: no retrain may read it worse), clean English lines <= 0.5%; on the document set
(lines and blocks of PDF manuals at 100 and 150 dpi) <= 2% overall and <= 3% on the lines at
100 dpi, <= 5% on its code lines. The augmented held-out set, drawn like training,
has no goal of its own: its limit sits just above what the bundled model measured (README, model
card), so a regression fails here; so do the held-out document lines.
"""

import os

import pytest

from lab_code.recognizer import TextRecognizer
from lab_code.training import data, evaluate, fonts

# the model reads thousands of lines: up to 375 s a test at load average 14
pytestmark = pytest.mark.timeout(900)

# measured on 2026-12-06 (model 7ac87565be10): 0.34%, 0.84%, 0.03%, 2.65% (plain set 1.24%),
# 0.05%; documents 0.91% (lines at 100 dpi 1.14%, code lines 3.51%), held-out document lines 2.50%.
# The plain set's bar: no worse than the model before the work on documents (1.316%).
REALWORLD_CER = 0.006
PHONE_CER = 0.015
UNSEEN_FONT_CER = 0.006
HELD_OUT_CER = 0.03
PLAIN_HELD_OUT_CER = 0.01316
ENGLISH_CER = 0.005
DOCUMENT_CER = 0.02
DOCUMENT_100DPI_CER = 0.03
CODE_CER = 0.05
DOCUMENT_HELD_OUT_CER = 0.03


@pytest.fixture(scope="module")
def recognizer():
    return TextRecognizer()


@pytest.fixture(scope="module")
def training_fonts():
    """The synthetic sets are drawn in the installed training fonts: their figures hold only
    with the fonts `make fonts` installs (matplotlib's alone draw other lines). Skipped without
    them, except in CI, where that fails."""
    if not any(fonts.MATPLOTLIB_DIR not in path.parents for path in data.fonts()):
        reason = "only matplotlib's fonts are installed: run `sudo make fonts` to measure this"
        if os.environ.get("CI"):
            pytest.fail(f"CI must measure the synthetic sets, but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def documents(recognizer):
    """The recognizer's table on the committed document set (one thread, ~5-15 s here)."""
    samples = evaluate.documents_set()
    table, readings = evaluate.realworld(recognizer, samples, evaluate.DOCUMENT_GROUPS)
    return samples, table, readings


@pytest.fixture(scope="module")
def realworld(recognizer):
    """The recognizer's table on the committed real-world set (one thread, ~5-15 s here)."""
    samples = evaluate.realworld_set()
    table, readings = evaluate.realworld(recognizer, samples)
    return samples, table, readings


def _worst(samples, readings, family=None, n=8):
    from lab_code.training import metrics

    rows = [(metrics.cer([r.text], [s.text]), s.path.name, s.text, r.text)
            for s, r in zip(samples, readings, strict=True) if family in (None, s.family)]
    return sorted(rows, reverse=True)[:n]


def test_held_out_cer(recognizer, training_fonts):
    assert evaluate.held_out_cer(recognizer) <= HELD_OUT_CER


def test_plain_held_out_cer_no_worse_than_before_the_work_on_documents(recognizer, training_fonts):
    assert evaluate.held_out_cer(recognizer, which="plain") <= PLAIN_HELD_OUT_CER


def test_english_lines_cer_at_most_half_a_percent(recognizer, training_fonts):
    cer, wrong = evaluate.english_cer(recognizer)
    assert cer <= ENGLISH_CER, wrong[:10]


def test_no_real_world_image_raises(realworld):
    samples, _, readings = realworld
    errors = [(s.path.name, r.error) for s, r in zip(samples, readings, strict=True) if r.error]
    assert not errors, errors[:10]


def test_real_world_cer(realworld):
    samples, table, readings = realworld
    assert table["overall"]["cer"] <= REALWORLD_CER, (table, _worst(samples, readings))


def test_lines_in_fonts_training_never_used(realworld):
    samples, table, readings = realworld
    assert table["unseen_font"]["cer"] <= UNSEEN_FONT_CER, (table["unseen_font"],
                                                            _worst(samples, readings,
                                                                   "unseen_font"))


def test_phone_like_cer(realworld):
    samples, table, readings = realworld
    assert table["phone"]["cer"] <= PHONE_CER, (table["phone"],
                                                _worst(samples, readings, "phone"))


def test_evaluate_says_when_checkpoint_would_be_ignored(capsys):
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--realworld-only", "--checkpoint", "runs/recognizer/checkpoint.pt"])
    assert exit_.value.code == 2
    assert "--realworld-only skips: drop one of them" in capsys.readouterr().err


def test_evaluate_cli_help():
    with pytest.raises(SystemExit) as done:
        evaluate.main(["--help"])
    assert done.value.code == 0


def test_document_set_cer(documents):
    samples, table, readings = documents
    assert table["overall"]["cer"] <= DOCUMENT_CER, (table, _worst(samples, readings))


def test_document_lines_at_100_dpi(documents):
    samples, table, readings = documents
    assert table["lines_100dpi"]["cer"] <= DOCUMENT_100DPI_CER, table["lines_100dpi"]


def test_monospace_code_lines(documents):
    samples, table, readings = documents
    worst = _worst(samples, readings, "code_100dpi") + _worst(samples, readings, "code_150dpi")
    assert table["code"]["cer"] <= CODE_CER, (table["code"], worst)


def test_no_document_image_raises(documents):
    samples, _, readings = documents
    assert not [(s.path.name, r.error) for s, r in zip(samples, readings, strict=True) if r.error]


def test_held_out_document_lines(recognizer):
    if not data.document_test_set():
        pytest.skip("no held-out family is installed (fonts-liberation)")
    assert evaluate.held_out_cer(recognizer, which="document") <= DOCUMENT_HELD_OUT_CER
