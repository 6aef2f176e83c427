"""The synthetic data: charset, fonts, determinism, augmentation and the held-out split."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from lab_code import preprocess
from lab_code.training import data


def test_charset_has_what_the_course_promises():
    for ch in "aZ09 .,;:'\"!?-()":
        assert ch in data.CHARSET
    assert len(set(data.CHARSET)) == len(data.CHARSET)


def test_several_font_families_weights_and_slants():
    names = [p.name for p in data.fonts()]
    assert any("Serif" in n for n in names) and any("Mono" in n for n in names)
    assert any("Bold" in n for n in names) and any("Oblique" in n or "Italic" in n for n in names)
    assert any(n.startswith("STIX") for n in names)


def test_random_text_stays_in_charset_and_length():
    rng = np.random.default_rng(3)
    for _ in range(500):
        text = data.random_text(rng)
        assert 1 <= len(text) <= data.MAX_CHARS
        assert set(text) <= set(data.CHARSET)
        assert text == text.strip() and "  " not in text


def test_same_seed_same_lines_different_seed_different_lines():
    a = [data.sample(np.random.default_rng(5)) for _ in range(1)][0]
    b = [data.sample(np.random.default_rng(5)) for _ in range(1)][0]
    c = [data.sample(np.random.default_rng(6)) for _ in range(1)][0]
    assert a[1] == b[1] and np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert a[1] != c[1]


def test_training_lines_say_I_as_a_word():
    # words.txt has no "I": a model that never saw it alone read it as l in sans faces.
    batches = data.training_batches(seed=1, batch_size=16)
    words = [w.strip(".,;:!?\"'()") for _ in range(30) for t in next(batches)[1] for w in t.split()]
    assert words.count("I") > 0.005 * len(words)  # I_SHARE is 1.5%


def test_the_plain_held_out_set_is_drawn_as_it_first_was():
    # The course's 2% goal was set on this set, and every model since is compared on it: a change
    # to how training text is drawn (such as I_SHARE) must not redraw it.
    texts = "\n".join(text for _, text in data.plain_test_set())
    assert hashlib.sha256(texts.encode()).hexdigest()[:16] == "d6bba60f0719eee5"


def test_augmentation_varies_the_style():
    rng = np.random.default_rng(0)
    styles = [data.Style.random(rng) for _ in range(300)]
    assert len({s.font for s in styles}) > 10
    assert any(s.angle for s in styles) and any(s.blur for s in styles)
    assert any(s.noise for s in styles) and any(s.lowres < 1 for s in styles)
    assert any(sum(s.paper) < sum(s.ink) for s in styles)  # some light-on-dark lines
    assert len({s.size for s in styles}) > 10 and len({s.pad for s in styles}) > 100


def test_held_out_set_is_fixed_large_enough_and_never_trained_on():
    test = data.test_set()
    assert len(test) >= 500
    assert all(a.shape[0] == preprocess.HEIGHT for a, _ in test)
    batches = data.training_batches(seed=1, batch_size=16)
    seen = {t for _ in range(20) for t in next(batches)[1]}
    assert not seen & data.test_texts()
    with pytest.raises(ValueError):
        next(data.training_batches(seed=data.TEST_SEED, batch_size=2))


def test_english_lines_are_two_to_eight_words():
    for line in data.english_lines():
        assert 2 <= len(line.split()) <= 8 and set(line) <= set(data.CHARSET), line


def test_render_gives_an_image_of_the_text(tmp_path):
    font = data.fonts()[len(data.fonts()) // 2]
    img = data.render("Hello, world!", data.Style.clean(font, size=30))
    assert isinstance(img, Image.Image) and img.height >= 20 and img.width > img.height * 3


def test_cli_writes_samples(tmp_path):
    assert data.main(["--out", str(tmp_path), "-n", "3", "--seed", "1"]) == 0
    assert len(list(tmp_path.glob("*.png"))) == 3
