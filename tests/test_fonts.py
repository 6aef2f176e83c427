"""Font discovery: training never uses a held-out family, and every training font draws the
whole charset."""

from lab_code.training import data, fonts


def test_no_training_font_is_held_out():
    for path in data.fonts():
        assert not fonts.is_held_out(fonts.family(path)), path


def test_held_out_variants_are_matched_by_family():
    assert fonts.is_held_out("Liberation Sans")
    assert fonts.is_held_out("Liberation Sans Narrow")
    assert not fonts.is_held_out("Latoish")


def test_training_fonts_are_sorted_and_draw_the_charset():
    paths = data.fonts()
    assert list(paths) == sorted(paths)
    assert all(fonts.renders(p, data.CHARSET) for p in paths[:: max(1, len(paths) // 10)])
