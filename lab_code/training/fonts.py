"""Font discovery for the training data: every installed text face that draws the whole
charset, minus the families held out for the real-world test set.

Training fonts come from the system font folders (`make fonts` installs Debian packages)
plus matplotlib's own; the order is sorted by path so seeding stays deterministic.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings
from pathlib import Path

import matplotlib
from PIL import Image, ImageDraw, ImageFont

from lab_code.training.charset import CHARSET

# Families the real-world test set is rendered in (headless Chromium uses these system
# fonts): never used for training. Matched on the name table, not on the file path.
HELD_OUT_FAMILIES = frozenset({
    "Liberation Sans", "Liberation Serif", "Liberation Mono", "Open Sans", "Lato",
    "Cantarell", "Quicksand", "Inconsolata", "Carlito",
})
# Faces that are not ordinary text faces (display, script, symbols, math, dingbats).
_SKIP_WORDS = ("display", "script", "dingbat", "symbol", "math", "emoji", "chancery",
               "zapf", "blackletter", "fraktur", "handwriting", "ornament", "icons",
               "cursor", "decorative", "caps", "unicase", "last resort", "keyboard", "z003",
               "cmex", "cmmi", "cmsy")
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
MATPLOTLIB_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
# Faces TeX typesets manuals in, which Debian keeps outside the font folders (`make fonts`
# installs them: fonts-lmodern, fonts-texgyre): Latin Modern, a digitisation of Computer Modern
# with its thin typewriter face, and TeX Gyre Cursor, a thin Courier. Only document lines use
# them (data.document_sample); TeX Gyre Termes and Heros stay out, the document set's Sphinx
# manual is set in them.
TEX_DIR = Path("/usr/share/texmf/fonts/opentype/public")
TEX_FONT_FILES = (
    "lm/lmmono8-regular.otf", "lm/lmmono9-regular.otf", "lm/lmmono10-regular.otf",
    "lm/lmmono10-italic.otf", "lm/lmmono12-regular.otf", "lm/lmmonolt10-regular.otf",
    "lm/lmmonolt10-bold.otf", "lm/lmroman8-regular.otf", "lm/lmroman9-regular.otf",
    "lm/lmroman10-regular.otf", "lm/lmroman10-italic.otf", "lm/lmroman10-bold.otf",
    "lm/lmroman12-regular.otf", "lm/lmsans8-regular.otf", "lm/lmsans10-regular.otf",
    "tex-gyre/texgyrecursor-regular.otf", "tex-gyre/texgyrecursor-italic.otf",
    "tex-gyre/texgyrecursor-bold.otf", "tex-gyre/texgyreschola-regular.otf",
    "tex-gyre/texgyrepagella-regular.otf",
)
_SUFFIXES = {".ttf", ".otf"}


def family(path: Path) -> str:
    """The font's family name from its name table ('' if Pillow cannot read it)."""
    try:
        return ImageFont.truetype(str(path), 16).getname()[0] or ""
    except OSError:
        return ""


def is_held_out(fam: str) -> bool:
    """True for a held-out family and its variants ('Liberation Sans Narrow' too)."""
    return any(fam == h or fam.startswith(h + " ") for h in HELD_OUT_FAMILIES)


def renders(path: Path, chars: str) -> bool:
    """True if the font draws every character of `chars` with a glyph of its own."""
    try:
        font = ImageFont.truetype(str(path), 32)
    except OSError:
        return False

    def glyph(ch: str) -> bytes:
        img = Image.new("L", (64, 64))
        ImageDraw.Draw(img).text((8, 8), ch, font=font, fill=255)
        return img.tobytes()

    missing = glyph("\uffff")  # what this font draws for a character it lacks
    blank = bytes(64 * 64)
    return all(glyph(ch) not in (missing, blank) for ch in chars if ch != " ")


def _candidates() -> list[Path]:
    dirs = [d for d in FONT_DIRS if d.is_dir()] + [MATPLOTLIB_DIR]
    found = set()
    for root in dirs:
        for dirpath, _, names in os.walk(root):
            for name in names:
                if Path(name).suffix.lower() in _SUFFIXES:
                    found.add(Path(dirpath) / name)
    return sorted(found)


def _is_text_face(path: Path, fam: str) -> bool:
    text = f"{path.name} {fam}".lower()
    return bool(fam) and not any(word in text for word in _SKIP_WORDS)


@functools.cache
def training_fonts(chars: str) -> tuple[Path, ...]:
    """Sorted font files that draw every character of `chars`, held-out families excluded."""
    out = []
    for path in _candidates():
        fam = family(path)
        if is_held_out(fam) or not _is_text_face(path, fam):
            continue
        if renders(path, chars):
            out.append(path)
    if not any(MATPLOTLIB_DIR not in p.parents for p in out):
        warnings.warn("Only matplotlib's fonts found: run `make fonts` for many more "
                      "(training still works).", stacklevel=2)
    if not out:
        raise RuntimeError(f"No usable fonts in {MATPLOTLIB_DIR}: is matplotlib installed?")
    return tuple(out)


@functools.cache
def tex_fonts(chars: str) -> tuple[Path, ...]:
    """The installed TEX_FONT_FILES that draw every character of `chars` (none held out)."""
    paths = (TEX_DIR / name for name in TEX_FONT_FILES)
    return tuple(p for p in paths if p.exists() and not is_held_out(family(p))
                 and renders(p, chars))


@functools.cache
def is_monospace(path: Path) -> bool:
    """True for a fixed-pitch face (an i as wide as an M)."""
    font = ImageFont.truetype(str(path), 40)
    return abs(font.getlength("i") - font.getlength("M")) < 0.5


@functools.cache
def held_out_fonts(chars: str) -> tuple[Path, ...]:
    """Installed font files of HELD_OUT_FAMILIES that draw `chars` (for your own tests)."""
    return tuple(p for p in _candidates() if is_held_out(family(p)) and renders(p, chars))


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="python -m lab_code.training fonts",
                                   description="List the training and held-out font families.")


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    paths = training_fonts(CHARSET)
    families = sorted({family(p) for p in paths})
    print(f"{len(paths)} training font files, {len(families)} families")
    for fam in families:
        print(f"  {fam}")
    held = held_out_fonts(CHARSET)
    print(f"{len(held)} held-out files: {sorted({family(p) for p in held})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
