"""The bundled model meets the course's promise: it really reads text, synthetic and real.

The bars are issue 12's: real-world set overall CER <= 1.5% and phone-like <= 5% with no image
raising; held-out synthetic CER <= 2% and clean English lines <= 0.5%.
"""

import pytest

from lab_code import evaluate
from lab_code.recognizer import TextRecognizer

REALWORLD_CER = 0.015
PHONE_CER = 0.05
HELD_OUT_CER = 0.02
ENGLISH_CER = 0.005


@pytest.fixture(scope="module")
def recognizer():
    return TextRecognizer()


@pytest.fixture(scope="module")
def realworld(recognizer):
    """The recognizer's table on the committed real-world set (one thread, ~5-15 s here)."""
    samples = evaluate.realworld_set()
    table, readings = evaluate.realworld(recognizer, samples)
    return samples, table, readings


def _worst(samples, readings, family=None, n=8):
    from lab_code import metrics

    rows = [(metrics.cer([r.text], [s.text]), s.path.name, s.text, r.text)
            for s, r in zip(samples, readings, strict=True) if family in (None, s.family)]
    return sorted(rows, reverse=True)[:n]


def test_held_out_cer_at_most_2_percent(recognizer):
    assert evaluate.held_out_cer(recognizer) <= HELD_OUT_CER


def test_english_lines_in_every_font_cer_at_most_half_a_percent(recognizer):
    cer, wrong = evaluate.english_cer(recognizer)
    assert cer <= ENGLISH_CER, wrong[:10]


def test_no_real_world_image_raises(realworld):
    samples, _, readings = realworld
    errors = [(s.path.name, r.error) for s, r in zip(samples, readings, strict=True) if r.error]
    assert not errors, errors[:10]


def test_real_world_cer_at_most_1_5_percent(realworld):
    samples, table, readings = realworld
    assert table["overall"]["cer"] <= REALWORLD_CER, (table, _worst(samples, readings))


def test_phone_like_cer_at_most_5_percent(realworld):
    samples, table, readings = realworld
    assert table["phone"]["cer"] <= PHONE_CER, (table["phone"],
                                                _worst(samples, readings, "phone"))


def test_evaluate_cli_help():
    with pytest.raises(SystemExit) as done:
        evaluate.main(["--help"])
    assert done.value.code == 0
