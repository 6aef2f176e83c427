"""The bundled model meets the course's promise: it really reads text."""

import pytest

from lab_code import evaluate
from lab_code.recognizer import TextRecognizer


@pytest.fixture(scope="module")
def recognizer():
    return TextRecognizer()


def test_held_out_cer_at_most_2_percent(recognizer):
    assert evaluate.held_out_cer(recognizer) <= 0.02


def test_english_lines_in_every_font_cer_at_most_5_percent(recognizer):
    cer, wrong = evaluate.english_cer(recognizer)
    assert cer <= 0.05, wrong[:10]


def test_evaluate_cli_help():
    with pytest.raises(SystemExit) as done:
        evaluate.main(["--help"])
    assert done.value.code == 0
