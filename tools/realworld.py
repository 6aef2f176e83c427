"""Rebuild the real-world test set: lines and paragraph cards cut from headless-Chromium
screenshots of generated HTML, in system fonts that training never uses, plus phone-like copies.

    python tools/realworld.py --out tests/data/realworld

The text comes from the licence texts in /usr/share/common-licenses (Debian's base-files), mapped
to the model's charset. Everything is seeded: the same machine set-up gives the same set. It needs
Chromium (`apt-get install -y chromium`), Playwright (`pip install playwright`) and the fonts
(`apt-get install -y fonts-liberation fonts-liberation2 fonts-open-sans fonts-lato
fonts-cantarell fonts-quicksand fonts-inconsolata fonts-crosextra-carlito`).
"""

import argparse
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab_code.training.data import CHARSET  # noqa: E402
from lab_code.training.fonts import HELD_OUT_FAMILIES  # noqa: E402

LICENSES = Path("/usr/share/common-licenses")
LICENSE_FILES = ("Apache-2.0", "GPL-3", "MPL-2.0", "Artistic", "GFDL-1.3", "LGPL-2.1", "CC0-1.0")
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]
SEED = 20_261_201
FAMILIES = {"unseen_font": 120, "screenshot": 120, "paragraph": 60, "phone": 120}
LABELS = "labels.json"
# Typographic characters mapped to the charset; a sentence with anything else left is skipped.
MAPPING = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                         "\u2013": "-", "\u2014": "-", "`": "'"})


class RealWorldError(RuntimeError):
    """Something the set needs (browser, fonts, text) is missing; the message says what to do."""


def held_out_families() -> tuple[str, ...]:
    """The families training never uses (the fonts module's list), in a fixed order."""
    return tuple(sorted(HELD_OUT_FAMILIES))


def sentences(text: str) -> list[str]:
    """Sentences of `text` whose characters all lie in the charset (after mapping typographic
    quotes and dashes), whitespace collapsed; numbered headings, heading rules and short
    fragments dropped."""
    flat = re.sub(r"\s+", " ", text.translate(MAPPING))
    out = []
    for raw in re.split(r"(?<=[.;:!?])\s+", flat):
        s = re.sub(r"^\(?[0-9a-z]{1,3}[.)]\s+", "", raw.strip())  # "1. ", "(a) "
        if (len(s) >= 24 and all(ch in CHARSET for ch in s) and re.search("[a-z]{3}", s)
                and "--" not in s):  # no heading rules ("Definitions ------")
            out.append(s)
    return out


def wrap(sentence: str, width: int) -> list[str]:
    """Greedy word wrap at `width` characters (a longer word gets a line of its own)."""
    lines: list[str] = []
    for word in sentence.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def corpus(root: Path = LICENSES) -> list[str]:
    """Every usable sentence of the licence texts, deduplicated, in a fixed order."""
    seen: dict[str, None] = {}
    for name in LICENSE_FILES:
        path = root / name
        if path.is_file():
            for s in sentences(path.read_text(encoding="utf-8", errors="replace")):
                seen.setdefault(s, None)
    if len(seen) < 200:
        raise RealWorldError(f"Found only {len(seen)} sentences in {root}: install Debian's "
                             "base-files (it ships /usr/share/common-licenses).")
    return list(seen)


@dataclass
class Item:
    """One image of the set: its text (lines), its family and how it is drawn."""

    name: str
    family: str
    lines: list[str]
    font: str
    size: int
    weight: int
    italic: bool
    ink: str
    paper: str
    scheme: str = "light"
    border: str = "none"
    padding: int = 8
    line_height: float = 1.3
    degradations: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in np.clip(rgb, 0, 255))


def _colours(rng: np.random.Generator, scheme: str) -> tuple[str, str]:
    """(ink, paper) for a colour scheme of the browser families."""
    if scheme == "light":
        return _hex(rng.integers(0, 60, 3)), _hex(rng.integers(235, 256, 3))
    if scheme == "dark":
        return _hex(rng.integers(200, 256, 3)), _hex(rng.integers(10, 50, 1).repeat(3))
    if scheme == "tint":
        paper = rng.integers(200, 250, 3)
        return _hex(rng.integers(0, 90, 3)), _hex(paper)
    if scheme == "grey":  # light text on mid-grey, the case a median rule gets wrong
        return _hex(rng.integers(225, 256, 1).repeat(3)), _hex(rng.integers(95, 150, 1).repeat(3))
    if scheme == "ink":  # coloured ink (links, warnings) on white
        inks = [(20, 60, 200), (180, 20, 30), (10, 120, 40), (110, 30, 150), (0, 100, 130)]
        return _hex(np.array(inks[rng.integers(len(inks))])), "#ffffff"
    if scheme == "thin":  # light ink on a tint: thin and pale
        return _hex(rng.integers(90, 130, 3)), _hex(rng.integers(225, 250, 3))
    raise ValueError(scheme)


def plan(texts: list[str], families: tuple[str, ...], counts: dict[str, int] = FAMILIES,
         seed: int = SEED) -> list[Item]:
    """Every item of the set, drawn deterministically from `seed`; no text is used twice."""
    rng = np.random.default_rng(seed)
    pool = list(rng.permutation(len(texts)))
    items: list[Item] = []
    used: set[str] = set()

    def take() -> str:
        return texts[pool.pop()]

    for family, count in counts.items():
        for i in range(count):
            font = families[i % len(families)]
            size = int(rng.integers(12, 41))
            weight = int(rng.choice([300, 400, 400, 400, 600, 700]))
            italic = bool(rng.random() < 0.15)
            paragraph = family == "paragraph" or (family == "phone" and i % 6 == 5)
            if family == "phone":  # a camera needs a few pixels per stroke to begin with
                size = int(rng.integers(16, 41))
            if paragraph:
                size = int(rng.integers(16 if family == "phone" else 13, 29))
                width = int(rng.integers(28, 56))
                lines = [ln for ln in wrap(take(), width) if ln][: int(rng.integers(2, 7))]
                while len(lines) < 2:
                    lines += wrap(take(), width)[:1]
            else:
                width = int(rng.integers(18, 56))
                lines = wrap(take(), width)[:1]
                while lines[0] in used:  # two sentences may open with the same words
                    lines = wrap(take(), width)[:1]
            used.add("\n".join(lines))
            scheme = "light"
            if family != "unseen_font":
                scheme = str(rng.choice(["light", "dark", "tint", "grey", "ink", "thin"]))
            ink, paper = _colours(rng, scheme) if family != "unseen_font" else ("#000", "#fff")
            border = "none"
            if family != "unseen_font" and rng.random() < 0.45:
                px = int(rng.integers(1, 3))
                border = f"{px}px solid {_hex(rng.integers(120, 230, 3))}"
            degradations: list[str] = []
            if family == "phone":
                options = ["blur", "contrast", "rotate", "perspective", "light", "rescale",
                           "noise"]
                picks = rng.choice(len(options), size=int(rng.integers(2, 4)), replace=False)
                degradations = [options[k] for k in sorted(picks)] + ["jpeg"]
            items.append(Item(
                name=f"{family}/{i:03d}", family=family, lines=lines, font=font, size=size,
                weight=weight, italic=italic, ink=ink, paper=paper, scheme=scheme, border=border,
                padding=int(rng.integers(3, 14)),
                line_height=round(float(rng.uniform(1.1, 1.8)), 2), degradations=degradations))
    return items


def page_html(items: list[Item]) -> str:
    """One page holding every item as its own block, to be screenshotted element by element."""
    blocks = []
    for k, it in enumerate(items):
        body = "<br>".join(html.escape(line) for line in it.lines)
        style = (f"font-family:'{it.font}';font-size:{it.size}px;font-weight:{it.weight};"
                 f"font-style:{'italic' if it.italic else 'normal'};color:{it.ink};"
                 f"background:{it.paper};border:{it.border};padding:{it.padding}px;"
                 f"line-height:{it.line_height:.2f}")
        blocks.append(f'<div class="c"><div id="i{k}" style="{style}">{body}</div></div>')
    css = ("body{margin:0;padding:16px;background:#fff}.c{margin:0 0 24px 0}"
           ".c>div{display:inline-block;white-space:nowrap}")
    return f"<!doctype html><html><head><style>{css}</style></head><body>{''.join(blocks)}"


def screenshots(items: list[Item], chromium: Path = CHROMIUM) -> list[Image.Image]:
    """Each item's block as Chromium draws it (element screenshots of one page)."""
    if not chromium.is_file():
        raise RealWorldError(f"No Chromium at {chromium}: apt-get install -y chromium "
                             "(or set CHROMIUM_PATH).")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise RealWorldError("Playwright is not installed: pip install playwright.") from err
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900},
                                    device_scale_factor=1)
            page.route("**/*", lambda route: route.abort())  # nothing leaves the machine
            page.set_content(page_html(items))
            page.evaluate("document.fonts.ready")
            return [Image.open(io.BytesIO(page.locator(f"#i{k}").screenshot())).convert("RGB")
                    for k in range(len(items))]
        finally:
            browser.close()


def degrade(img: Image.Image, steps: list[str], rng: np.random.Generator) -> Image.Image:
    """What a phone camera does to a screenshot: each named step, in order (JPEG is the saver's)."""
    corner = tuple(int(c) for c in np.asarray(img)[0, 0])
    pad = max(4, img.height // 6)
    canvas = Image.new("RGB", (img.width + 2 * pad, img.height + 2 * pad), corner)
    canvas.paste(img, (pad, pad))
    img = canvas
    for step in steps:
        if step == "rotate":
            img = img.rotate(float(rng.uniform(-1.5, 1.5)), Image.Resampling.BICUBIC,
                             expand=False, fillcolor=corner)
        elif step == "perspective":
            w, h = img.size
            d = rng.uniform(-0.02, 0.02, 8) * np.array([w, h] * 4)
            quad = (0 + d[0], 0 + d[1], 0 + d[2], h + d[3], w + d[4], h + d[5], w + d[6], 0 + d[7])
            img = img.transform(img.size, Image.Transform.QUAD, quad, Image.Resampling.BICUBIC,
                                fillcolor=corner)
        elif step == "blur":
            img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.8))))
        elif step == "contrast":
            a = np.asarray(img, dtype=np.float32)
            k = float(rng.uniform(0.55, 0.8))
            img = Image.fromarray(np.clip(a.mean() + (a - a.mean()) * k, 0, 255).astype(np.uint8))
        elif step == "light":
            a = np.asarray(img, dtype=np.float32)
            x = np.linspace(0, 1, a.shape[1])[None, :, None]
            y = np.linspace(0, 1, a.shape[0])[:, None, None]
            gx, gy = rng.uniform(-1, 1, 2)
            shade = 1 - 0.25 * np.clip(gx * x + gy * y + rng.uniform(-0.2, 0.2), 0, 1)
            img = Image.fromarray(np.clip(a * shade, 0, 255).astype(np.uint8))
        elif step == "rescale":
            k = float(rng.uniform(0.6, 0.85))
            small = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))),
                               Image.Resampling.BILINEAR)
            img = small.resize(img.size, Image.Resampling.BILINEAR)
        elif step == "noise":
            a = np.asarray(img, dtype=np.float32)
            a = a + rng.normal(0, float(rng.uniform(2, 6)), a.shape)
            img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        elif step != "jpeg":
            raise ValueError(f"unknown degradation {step!r}")
    return img


def save(items: list[Item], shots: list[Image.Image], out: Path, seed: int = SEED) -> list[dict]:
    """Write every image and return the labels (one record per image)."""
    rng = np.random.default_rng(seed + 1)
    records = []
    for it, shot in zip(items, shots, strict=True):
        path = out / f"{it.name}.{'jpg' if it.degradations else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if it.degradations:
            quality = int(rng.integers(30, 71))
            degrade(shot, it.degradations, rng).save(path, quality=quality)
            it.degradations[-1] = f"jpeg{quality}"
        else:
            shot.save(path, optimize=True)
        record = {"file": path.relative_to(out).as_posix(), **asdict(it), "text": it.text}
        del record["name"], record["lines"]
        records.append(record)
    return records


def check_fonts(families: tuple[str, ...]) -> None:
    """Refuse to build with a missing family (Chromium would fall back silently)."""
    try:
        listed = subprocess.run(["fc-list", ":", "family"], capture_output=True, text=True,
                                check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise RealWorldError("fc-list did not run: apt-get install -y fontconfig.") from err
    have = {name.strip() for line in listed.splitlines() for name in line.split(",")}
    missing = [f for f in families if f not in have]
    if missing:
        raise RealWorldError(f"Fonts missing: {', '.join(missing)}; install them with the "
                             "apt-get line in this script's --help.")


def build(out: Path, counts: dict[str, int] = FAMILIES, seed: int = SEED) -> list[dict]:
    """Rebuild the whole set into `out` (emptied first) with its labels file."""
    families = held_out_families()
    check_fonts(families)
    items = plan(corpus(), families, counts, seed)
    shots = screenshots(items)
    for family in counts:
        shutil.rmtree(out / family, ignore_errors=True)
    records = save(items, shots, out, seed)
    (out / LABELS).write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    return records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python tools/realworld.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "realworld",
                        help="where the images and labels.json go (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="the set's seed")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of each family's count to build (for a quick look)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    counts = {k: max(1, round(v * args.scale)) for k, v in FAMILIES.items()}
    try:
        records = build(args.out, counts, args.seed)
    except RealWorldError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{len(records)} images, {size / 1e6:.1f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
