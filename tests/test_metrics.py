"""The character error rate on pairs worked out by hand: every figure the course reports (held-out
CER, the real-world table, the model card) is computed by these two functions."""

import pytest

from lab_code.training.metrics import cer, edit_distance


@pytest.mark.parametrize(("a", "b", "edits", "what"), [
    ("kitten", "kitten", 0, "the same text"),
    ("kitten", "sitten", 1, "one substitution"),
    ("kitten", "kittens", 1, "one insertion at the end"),
    ("kitten", "skitten", 1, "one insertion at the start: every letter shifts by one"),
    ("kitten", "kiten", 1, "one deletion in the middle"),
    ("kitten", "sitting", 3, "two substitutions and an insertion"),
    ("flaw", "lawn", 2, "a deletion and an insertion, where a position-by-position count says 4"),
    ("Kitten", "kitten", 1, "case matters: K and k are different characters"),
    ("a b", "ab", 1, "a space is a character"),
    ("", "abc", 3, "from nothing: every character inserted"),
    ("abc", "", 3, "to nothing: every character deleted"),
    ("", "", 0, "two empty strings"),
])
def test_edit_distance_on_hand_made_pairs(a, b, edits, what):
    assert edit_distance(a, b) == edits, what
    assert edit_distance(b, a) == edits, f"{what} (the other way round)"


def test_cer_is_total_edits_over_total_truth_characters():
    # 1 substitution over 6 characters, then 2 edits over 4: (1 + 2) / (6 + 4), not a mean of rates
    assert cer(["sitten", "lawn"], ["kitten", "flaw"]) == pytest.approx(3 / 10)
    assert cer(["kitten"], ["kitten"]) == 0.0


def test_cer_counts_case_and_spaces():
    assert cer(["hello world"], ["Hello World"]) == pytest.approx(2 / 11)
    assert cer(["helloworld"], ["hello world"]) == pytest.approx(1 / 11)


def test_cer_of_an_empty_reading_is_one_and_extra_text_can_exceed_one():
    assert cer([""], ["abcd"]) == 1.0
    assert cer(["abcdefgh"], ["abcd"]) == 1.0  # four insertions over four characters
    assert cer(["xyzxyzxyz"], ["abc"]) == pytest.approx(9 / 3)


def test_cer_with_empty_truths_counts_edits_and_does_not_divide_by_zero():
    assert cer(["", ""], ["", ""]) == 0.0
    assert cer(["ab"], [""]) == 2.0


def test_cer_needs_one_truth_per_prediction():
    with pytest.raises(ValueError, match="same length"):
        cer(["a", "b"], ["a"])
