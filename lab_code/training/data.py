"""Synthetic training data: text lines rendered with Pillow in many installed fonts (see
lab_code.training.fonts), with screen and camera augmentation, deterministic seeding and a fixed
held-out test set.

Run `python -m lab_code.training data --out DIR` to save a few sample images and see what the model
learns from.
"""

from __future__ import annotations

import argparse
import functools
import io
import string
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from lab_code import preprocess
from lab_code.training import fonts as font_files
from lab_code.training import metrics
from lab_code.training.charset import CHARSET

MAX_CHARS = 60
TEST_SEED = 20_240_601  # the held-out set's own seed; training seeds never equal it
TEST_SIZE = 600

def _asset_lines(name: str) -> list[str]:
    text = resources.files("lab_code").joinpath("assets", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@functools.cache
def words() -> list[str]:
    """The training vocabulary (lower-case English words)."""
    return _asset_lines("words.txt")


@functools.cache
def english_lines() -> list[str]:
    """Held-out English sentences: for measuring the model, never for training it."""
    return _asset_lines("english_lines.txt")


@functools.cache
def fonts() -> tuple[Path, ...]:
    """Training font files (sorted; held-out families excluded): see lab_code.training.fonts."""
    return font_files.training_fonts(CHARSET)


# How often a training word is the pronoun "I". words.txt has no one-letter words, and a model
# that never saw a lone I read it as l in sans faces (where the two differ by a pixel of height).
# Training lines only: the held-out sets are drawn with 0, so they stay as they were first drawn.
I_SHARE = 0.015


def _word(rng: np.random.Generator, i_share: float = 0.0) -> str:
    if i_share and rng.random() < i_share:
        return "I"
    vocab = words()
    word = vocab[rng.integers(len(vocab))]
    r = rng.random()
    if r < 0.18:
        word = word.capitalize()
    elif r < 0.23:
        word = word.upper()
    return word


def _sentence(rng: np.random.Generator, n_words: int, i_share: float = 0.0) -> str:
    parts = [_word(rng, i_share) for _ in range(n_words)]
    if rng.random() < 0.5:
        parts[0] = parts[0].capitalize()
    for i in range(len(parts) - 1):
        if rng.random() < 0.12:
            parts[i] += rng.choice([",", ",", ";", ":", "."])
    if rng.random() < 0.08:
        i = rng.integers(len(parts))
        q = rng.choice(['"', "'"])
        parts[i] = f"{q}{parts[i]}{q}"
    if rng.random() < 0.06:
        i = rng.integers(len(parts))
        parts[i] = f"({parts[i]})"
    if rng.random() < 0.1:
        parts.insert(rng.integers(len(parts) + 1), rng.choice(["-", "--"]))
    if rng.random() < 0.12:
        parts.insert(rng.integers(len(parts) + 1), _number(rng))
    end = rng.choice([".", ".", ".", "!", "?", "", "", ":", ";"])
    return " ".join(parts) + end


def _number(rng: np.random.Generator) -> str:
    kind = rng.integers(6)
    if kind == 0:
        return str(rng.integers(0, 10 ** rng.integers(1, 6)))
    if kind == 1:
        return f"{rng.integers(1, 13)}:{rng.integers(0, 60):02d}"
    if kind == 2:
        return f"{rng.integers(0, 1000)}.{rng.integers(0, 100):02d}"
    if kind == 3:
        return f"({rng.integers(100, 1000)}) {rng.integers(100, 1000)}-{rng.integers(1000, 10000)}"
    if kind == 4:
        return f"{rng.integers(1, 32)}-{rng.integers(1, 13)}-{rng.integers(1950, 2040)}"
    return str(rng.integers(1, 100))


def random_text(rng: np.random.Generator, max_chars: int = MAX_CHARS,
                i_share: float = 0.0) -> str:
    """A line of training text: mostly English-like word sequences, plus random characters
    (so every symbol is seen in every context) and numbers. `i_share`: see I_SHARE."""
    r = rng.random()
    if r < 0.62:
        text = _sentence(rng, int(rng.integers(1, 11)), i_share)
    elif r < 0.85:
        length = int(rng.integers(1, max_chars + 1))
        pool = CHARSET + "     "  # spaces a little more often than other symbols
        text = "".join(rng.choice(list(pool), size=length))
    else:
        text = " ".join(_number(rng) if rng.random() < 0.6 else _word(rng, i_share)
                        for _ in range(rng.integers(1, 6)))
    text = " ".join(text.split())  # no leading, trailing or double spaces
    if len(text) > max_chars:
        text = text[:max_chars].rstrip()
    return text or rng.choice(list(string.ascii_letters))


def _grey(level: int, spread: int, rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(np.clip(level + rng.integers(-spread, spread + 1), 0, 255)) for _ in range(3))


@dataclass(frozen=True)
class Style:
    """How one line is drawn; `clean()` gives plain dark text on white."""

    font: Path
    size: int
    ink: tuple[int, int, int]
    paper: tuple[int, int, int]
    pad: tuple[int, int, int, int]  # left, top, right, bottom
    angle: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    lowres: float = 1.0
    upscale: float = 1.0  # drawn small, then enlarged (thin strokes of 12-18 px text)
    jpeg: int = 0  # JPEG quality, 0 = none
    shear: float = 0.0  # slight perspective-like shear
    light: float = 0.0  # strength of an uneven-lighting gradient
    border: tuple[int, int, int] | None = None  # a 1-2 px frame around the crop
    rim: int = 0  # px of a foreign-colour rim on one or two edges
    offset: tuple[float, float] = (0.0, 0.0)  # where in its first pixel the text starts

    @staticmethod
    def random(rng: np.random.Generator) -> Style:
        all_fonts = fonts()
        font = all_fonts[rng.integers(len(all_fonts))]
        kind = rng.random()
        if kind < 0.55:  # dark ink on light paper
            ink, paper = _grey(int(rng.integers(0, 90)), 25, rng), _grey(
                int(rng.integers(185, 256)), 12, rng)
        elif kind < 0.70:  # coloured ink on tinted paper
            ink = tuple(int(v) for v in rng.integers(0, 140, size=3))
            paper = tuple(int(v) for v in rng.integers(190, 256, size=3))
        elif kind < 0.85:  # light text on a dark background of any grey level
            bg = int(rng.integers(0, 150))
            paper = _grey(bg, 15, rng)
            ink = _grey(int(rng.integers(min(255, bg + 70), 256)), 10, rng)
        else:  # low contrast
            bg = int(rng.integers(120, 256))
            gap = int(rng.integers(45, 100))
            ink, paper = _grey(max(0, bg - gap), 8, rng), _grey(bg, 8, rng)
            if rng.random() < 0.3:
                ink, paper = paper, ink
        small = rng.random() < 0.15
        size = int(rng.integers(12, 19)) if small else int(rng.integers(20, 44))
        border = None
        if rng.random() < 0.08:
            border = _grey(int(rng.integers(0, 256)), 20, rng)
        return Style(
            font=font,
            size=size,
            ink=ink,
            paper=paper,
            pad=(int(rng.integers(0, 80)), int(rng.integers(1, 25)),
                 int(rng.integers(0, 160)), int(rng.integers(1, 25))),
            angle=float(rng.uniform(-2.0, 2.0)) if rng.random() < 0.5 else 0.0,
            blur=float(rng.uniform(0.3, 1.1)) if rng.random() < 0.25 else 0.0,
            noise=float(rng.uniform(2, 14)) if rng.random() < 0.3 else 0.0,
            lowres=float(rng.uniform(0.5, 0.9)) if size >= 24 and rng.random() < 0.2 else 1.0,
            upscale=float(rng.uniform(1.5, 2.5)) if small else 1.0,
            jpeg=int(rng.integers(15, 70)) if rng.random() < 0.25 else 0,
            shear=float(rng.uniform(-0.12, 0.12)) if rng.random() < 0.15 else 0.0,
            light=float(rng.uniform(0.1, 0.35)) if rng.random() < 0.12 else 0.0,
            border=border,
            rim=int(rng.integers(1, 5)) if border is None and rng.random() < 0.06 else 0,
        )

    @staticmethod
    def clean(font: Path, size: int = 28, pad: int = 12) -> Style:
        return Style(font=font, size=size, ink=(0, 0, 0), paper=(255, 255, 255),
                     pad=(pad, pad, pad, pad))


def render(text: str, style: Style, rng: np.random.Generator | None = None) -> Image.Image:
    """Draw one line of text as an RGB image."""
    font = ImageFont.truetype(str(style.font), style.size)
    left, top, right, bottom = font.getbbox(text or " ")
    pl, pt, pr, pb = style.pad
    size = (right - left + pl + pr + 2, bottom - top + pt + pb + 2)
    img = Image.new("RGB", size, style.paper)
    at = (pl - left + 1 + style.offset[0], pt - top + 1 + style.offset[1])
    ImageDraw.Draw(img).text(at, text, font=font, fill=style.ink)
    bilinear = Image.Resampling.BILINEAR
    if style.upscale > 1.0:
        img = img.resize((round(img.width * style.upscale), round(img.height * style.upscale)),
                         Image.Resampling.BICUBIC)
    if style.shear:
        dx = abs(style.shear) * img.height
        img = img.transform((img.width + int(dx), img.height), Image.Transform.AFFINE,
                            (1, style.shear, -dx if style.shear > 0 else 0, 0, 1, 0),
                            resample=bilinear, fillcolor=style.paper)
    if style.angle:
        img = img.rotate(style.angle, resample=bilinear, expand=True, fillcolor=style.paper)
    if style.border is not None:
        ImageDraw.Draw(img).rectangle((0, 0, img.width - 1, img.height - 1),
                                      outline=style.border, width=1 + int(style.size > 30))
    if style.rim:
        draw = ImageDraw.Draw(img)
        rim_colour = tuple(255 - v for v in style.paper)
        draw.rectangle((0, 0, img.width - 1, style.rim - 1), fill=rim_colour)
        draw.rectangle((img.width - style.rim, 0, img.width - 1, img.height - 1), fill=rim_colour)
    if style.lowres < 1.0:
        small = (max(1, round(img.width * style.lowres)), max(1, round(img.height * style.lowres)))
        img = img.resize(small, bilinear).resize(img.size, bilinear)
    if style.blur:
        img = img.filter(ImageFilter.GaussianBlur(style.blur))
    if style.noise or style.light:
        rng = rng or np.random.default_rng(0)
        arr = np.asarray(img, dtype=np.float32)
        if style.light:
            ramp = np.linspace(1.0 - style.light, 1.0, img.width, dtype=np.float32)
            arr = arr * (ramp if rng.random() < 0.5 else ramp[::-1])[None, :, None]
        if style.noise:
            arr = arr + rng.normal(0.0, style.noise, size=arr.shape[:2])[..., None]
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if style.jpeg:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=style.jpeg)
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def sample(rng: np.random.Generator, text: str | None = None,
           i_share: float = 0.0) -> tuple[Image.Image, str]:
    """One random (image, text) pair."""
    text = random_text(rng, i_share=i_share) if text is None else text
    return render(text, Style.random(rng), rng), text


@functools.cache
def test_set(size: int = TEST_SIZE) -> list[tuple[np.ndarray, str]]:
    """The augmented held-out set: (line array, text) pairs drawn like training lines, but
    with TEST_SEED only."""
    rng = np.random.default_rng(TEST_SEED)
    return [(preprocess.line_array(img), text) for img, text in (sample(rng) for _ in range(size))]


# The course's first held-out set: matplotlib's fonts, dark text on light paper (light text on
# dark 8% of the time), 20-43 px, mild rotation, blur, noise and low resolution. The goal of
# at most 2% CER was set on it, so it is drawn exactly as it first was (same seed, same draws).
PLAIN_FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf", "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSansDisplay.ttf", "DejaVuSerifDisplay.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmb10.ttf", "cmss10.ttf",
    "cmtt10.ttf",
)


@functools.cache
def plain_fonts() -> tuple[Path, ...]:
    """The plain set's fonts: those of PLAIN_FONT_FILES that draw the whole charset."""
    paths = (font_files.MATPLOTLIB_DIR / name for name in PLAIN_FONT_FILES)
    return tuple(p for p in paths if p.exists() and font_files.renders(p, CHARSET))


def plain_style(rng: np.random.Generator) -> Style:
    """A style of the plain held-out set (the augmentation the course started with)."""
    all_fonts = plain_fonts()
    dark = int(rng.integers(0, 90))
    ink = tuple(int(np.clip(dark + rng.integers(-25, 26), 0, 255)) for _ in range(3))
    light = int(rng.integers(185, 256))
    paper = tuple(int(np.clip(light - rng.integers(0, 25), 0, 255)) for _ in range(3))
    if rng.random() < 0.08:
        ink, paper = paper, ink
    size = int(rng.integers(20, 44))
    return Style(
        font=all_fonts[rng.integers(len(all_fonts))], size=size, ink=ink, paper=paper,
        pad=(int(rng.integers(0, 80)), int(rng.integers(1, 25)),
             int(rng.integers(0, 160)), int(rng.integers(1, 25))),
        angle=float(rng.uniform(-2.0, 2.0)) if rng.random() < 0.5 else 0.0,
        blur=float(rng.uniform(0.3, 1.1)) if rng.random() < 0.3 else 0.0,
        noise=float(rng.uniform(2, 14)) if rng.random() < 0.4 else 0.0,
        lowres=float(rng.uniform(0.6, 0.9)) if size >= 28 and rng.random() < 0.2 else 1.0,
    )


@functools.cache
def plain_test_set(size: int = TEST_SIZE) -> list[tuple[np.ndarray, str]]:
    """The plain held-out set: (line array, text) pairs, TEST_SEED, plain_style."""
    rng = np.random.default_rng(TEST_SEED)
    out = []
    for _ in range(size):
        text = random_text(rng)
        out.append((preprocess.line_array(render(text, plain_style(rng), rng)), text))
    return out


# --- document lines: manuals and screens at 96-150 dpi ------------------------------------------
# A PDF viewer or a browser rasterises text at its final size: body text of 9-11 pt is 12-21 px,
# footnotes and code less. Such lines are drawn here at that size (FreeType's hinting and
# anti-aliasing at the final size, the text starting anywhere inside a pixel), never drawn
# large and scaled; code in thin monospace faces, coloured ink on white, tight serif faces.
DOCUMENT_SHARE = 0.2  # of training lines
DOCUMENT_SIZES = (9, 21)  # font size in pixels, lowest and highest
TIMES_LIKE = ("Nimbus Roman", "Tinos", "FreeSerif", "STIXGeneral", "Latin Modern Roman", "cmr10",
              "TeX Gyre Schola", "C059")
_KEYWORDS = ("return", "if", "else", "while", "for", "struct", "class", "public", "private",
             "const", "void", "int", "double", "char", "static", "new", "namespace", "using",
             "typedef", "unsigned", "bool", "true", "false", "NULL", "self", "def", "import",
             "from", "print", "None", "break", "case", "switch", "enum", "template", "auto")


@functools.cache
def document_fonts() -> tuple[tuple[Path, ...], tuple[Path, ...], tuple[Path, ...]]:
    """Fonts of document lines: (all of them, the monospace ones, the Times-like ones) of the
    training fonts and the TeX faces (lab_code.training.fonts.tex_fonts)."""
    every = fonts() + font_files.tex_fonts(CHARSET)
    mono = tuple(p for p in every if font_files.is_monospace(p))
    times = tuple(p for p in every if font_files.family(p) in TIMES_LIKE)
    return every, mono, times


def _identifier(rng: np.random.Generator) -> str:
    """A name as code spells it: word, camelCase, PascalCase, UPPER, or with a digit."""
    parts = [words()[rng.integers(len(words()))] for _ in range(int(rng.integers(1, 4)))]
    kind = rng.random()
    if kind < 0.3:
        name = parts[0]
    elif kind < 0.6:
        name = parts[0] + "".join(w.capitalize() for w in parts[1:])
    elif kind < 0.85:
        name = "".join(w.capitalize() for w in parts)
    else:
        name = parts[0].upper()
    if rng.random() < 0.12:
        name += str(rng.integers(0, 100))
    return name


def _code_term(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.45:
        return _identifier(rng)
    if r < 0.65:
        return str(rng.choice(_KEYWORDS))
    if r < 0.8:
        return str(rng.integers(0, 10 ** int(rng.integers(1, 5))))
    if r < 0.9:
        return f'"{_identifier(rng)}"'
    return f"{_identifier(rng)}.{_identifier(rng)}"


def code_text(rng: np.random.Generator, max_chars: int = MAX_CHARS) -> str:
    """A line of code-like text: calls, declarations, labels, qualified names, shell commands,
    with `();`, `::`, `.`, commas and quotes; sometimes a listing's line number in front."""
    name = _identifier(rng)
    args = ", ".join(_code_term(rng) for _ in range(int(rng.integers(0, 4))))
    space = " " if rng.random() < 0.15 else ""
    kind = int(rng.integers(9))
    if kind == 0:
        text = f"{name}{space}({args});"
    elif kind == 1:
        text = f"{rng.choice(_KEYWORDS)} {name}{rng.choice([';', ',', '', ':'])}"
    elif kind == 2:
        text = f"{_identifier(rng)} {name}{space}({args})" + str(rng.choice([";", "", " const;"]))
    elif kind == 3:
        text = f"{name}:" if rng.random() < 0.5 else f"{rng.choice(['public', 'private'])}:"
    elif kind == 4:
        text = "::".join(_identifier(rng) for _ in range(int(rng.integers(2, 4))))
        text += str(rng.choice(["", "()", "();", ";"]))
    elif kind == 5:
        flags = " ".join(str(rng.choice(["-", "--"])) + w for w in
                         (words()[rng.integers(len(words()))] for _ in range(rng.integers(0, 3))))
        text = f"{words()[rng.integers(len(words()))]}-{_identifier(rng).lower()} {flags}".strip()
    elif kind == 6:
        text = f"{rng.choice(['return', 'if', 'while'])} {space}({name}){rng.choice([';', ''])}"
        if text.startswith("return"):
            text = f"return {_code_term(rng)};"
    elif kind == 7:
        text = f"{_identifier(rng)}.{name}({args})"
    else:
        text = " ".join(_code_term(rng) for _ in range(int(rng.integers(1, 5))))
    if rng.random() < 0.1:
        text = f"{rng.integers(0, 100000):05d} {text}"
    text = " ".join(text.split())
    if len(text) > max_chars:
        text = text[:max_chars].rstrip()
    return text or name[:max_chars]


def _ink_on_screen(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Ink and paper of a document line: mostly near-black on white, else links and code in
    colour, grey text, or a code block's light grey or tinted background."""
    r = rng.random()
    if r < 0.6:
        ink = _grey(int(rng.integers(0, 50)), 6, rng)
    elif r < 0.85:  # blue links, dark red, green, teal, purple: one or two channels up
        ink = tuple(int(v) for v in rng.integers(0, 90, size=3))
        ink = tuple(v + int(rng.integers(60, 120)) if rng.random() < 0.4 else v for v in ink)
    else:
        ink = _grey(int(rng.integers(60, 130)), 5, rng)
    r = rng.random()
    if r < 0.8:
        paper = _grey(int(rng.integers(248, 256)), 2, rng)
    else:
        paper = tuple(int(v) for v in rng.integers(228, 252, size=3))
    return ink, paper


def document_style(rng: np.random.Generator, all_fonts: tuple[Path, ...] | None = None,
                   mono: bool | None = None) -> Style:
    """How a document line is drawn (see DOCUMENT_SHARE's note): a font from `all_fonts`
    (default: document_fonts(), 40% monospace, 25% Times-like), drawn at its final size."""
    if all_fonts is None:
        every, monos, times = document_fonts()
        r = rng.random()
        pool = monos if r < 0.4 else times if r < 0.65 else every
    else:
        pool = tuple(p for p in all_fonts if mono is None or font_files.is_monospace(p) == mono)
    ink, paper = _ink_on_screen(rng)
    size = int(rng.integers(DOCUMENT_SIZES[0], DOCUMENT_SIZES[1] + 1))
    margin = max(1, size // 3)
    return Style(
        font=pool[rng.integers(len(pool))], size=size, ink=ink, paper=paper,
        pad=(int(rng.integers(0, 2 * margin)), int(rng.integers(0, margin)),
             int(rng.integers(0, 2 * margin)), int(rng.integers(0, margin))),
        offset=(float(rng.random()), float(rng.random())),
    )


def document_sample(rng: np.random.Generator, max_chars: int = MAX_CHARS,
                    all_fonts: tuple[Path, ...] | None = None,
                    i_share: float = 0.0) -> tuple[Image.Image, str]:
    """One document line: code in a monospace face most of the time, prose otherwise."""
    style = document_style(rng, all_fonts)
    code = rng.random() < (0.7 if font_files.is_monospace(style.font) else 0.1)
    text = code_text(rng, max_chars) if code else random_text(rng, max_chars, i_share)
    return render(text, style, rng), text


DOCUMENT_TEST_SIZE = 400


@functools.cache
def document_test_set(size: int = DOCUMENT_TEST_SIZE) -> list[tuple[np.ndarray, str]]:
    """Held-out document lines: drawn like training's document lines (TEST_SEED), but only in
    the held-out families (lab_code.training.fonts.HELD_OUT_FAMILIES) that are installed; empty when
    none is."""
    held = font_files.held_out_fonts(CHARSET)
    if not held:
        return []
    rng = np.random.default_rng(TEST_SEED)
    return [(preprocess.line_array(img), text)
            for img, text in (document_sample(rng, all_fonts=held) for _ in range(size))]


HELD_OUT_SETS = {"augmented": test_set, "plain": plain_test_set, "document": document_test_set}


@functools.cache
def test_texts() -> frozenset[str]:
    """Every text of both held-out sets: training skips them."""
    return frozenset(text for make in HELD_OUT_SETS.values() for _, text in make())


def held_out_cer(read_lines: Callable[[list[np.ndarray]], list[str]],
                 size: int = TEST_SIZE, batch_size: int = 64,
                 which: str = "augmented") -> dict[str, float]:
    """CER and exact-line accuracy of `read_lines` (line arrays -> texts) on a held-out set:
    "augmented" (drawn like training, every font and augmentation), "plain" (see
    plain_test_set) or "document" (see document_test_set)."""
    pairs = HELD_OUT_SETS[which]()[:size]
    preds: list[str] = []
    for i in range(0, len(pairs), batch_size):
        preds += read_lines([a for a, _ in pairs[i : i + batch_size]])
    truths = [t for _, t in pairs]
    return {
        "cer": metrics.cer(preds, truths),
        "line_accuracy": float(np.mean([p == t for p, t in zip(preds, truths, strict=True)])),
    }


def english_set() -> list[tuple[Image.Image, str]]:
    """Every held-out English line, clean, in 22 training fonts spread over the sorted list,
    at glyph heights from 20 to 40 px."""
    out = []
    all_fonts = fonts()
    picked = [all_fonts[k * len(all_fonts) // 22] for k in range(min(22, len(all_fonts)))]
    for i, text in enumerate(english_lines()):
        for j, font in enumerate(picked):
            size = 20 + (i * 7 + j * 3) % 21  # 20..40 px
            out.append((render(text, Style.clean(font, size=size, pad=8 + (i + j) % 40)), text))
    return out


def training_batches(seed: int, batch_size: int) -> Iterator[tuple[list[np.ndarray], list[str]]]:
    """Endless batches of (line arrays, texts), each batch of similar text length (less padding).

    Lines whose text is in the held-out set are skipped, so training never sees a test line.
    """
    if seed == TEST_SEED:
        raise ValueError("That seed belongs to the held-out test set; pick another.")
    rng = np.random.default_rng(seed)
    held_out = test_texts()
    while True:
        target = int(rng.integers(4, MAX_CHARS + 1))
        arrays, texts = [], []
        while len(texts) < batch_size:
            text = random_text(rng, max_chars=target, i_share=I_SHARE)
            if len(text) < target // 2 or text in held_out:
                continue
            if rng.random() < DOCUMENT_SHARE:
                img, text = document_sample(rng, max_chars=target, i_share=I_SHARE)
                if text in held_out:
                    continue
            else:
                img, _ = sample(rng, text)
            arrays.append(preprocess.line_array(img))
            texts.append(text)
        yield arrays, texts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.training data",
        description="Render sample training lines (random style) to PNG files to look at.",
    )
    parser.add_argument("--out", type=Path, default=Path("samples"), help="folder for the PNGs")
    parser.add_argument("-n", "--count", type=int, default=8, help="how many lines to render")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same lines)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in range(args.count):
        img, text = sample(rng, i_share=I_SHARE)
        path = args.out / f"line_{i:03d}.png"
        img.save(path)
        print(f"{path}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
