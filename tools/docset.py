"""Rebuild the document set: text lines, code lines and blocks of 2-6 lines cut from real PDF
manuals that Debian packages ship, rendered by poppler at screen resolutions (100 and 150 dpi),
with the ground truth taken from each PDF's own text layer.

    python tools/docset.py --out tests/data/documents

It needs poppler (`apt-get install -y poppler-utils`: pdftoppm, pdftotext, pdftohtml) and the
documents' packages (`apt-get install -y r-doc-pdf libtasn1-doc developers-reference maint-guide
siscone-doc-pdf c++-annotations-pdf shared-mime-info`). Pages, lines and resolutions are drawn
with a fixed seed: the same packages give the same set.

A line's text is the words `pdftotext -bbox-layout` finds in its box, typographic quotes, dashes
and ligatures spelled in ASCII; a line with any other character outside the model's charset is
left out. Its typeface is the one `pdftohtml -xml` reports for most of its characters; lines set
in a font file that training uses (see TRAINING_FONTS) are left out, so every line is read in a
font program the model has not seen.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab_code.training.charset import CHARSET  # noqa: E402

SEED = 20_261_210
LABELS = "labels.json"
DPIS = (100, 150)
LINES_PER_DOCUMENT = 44
CODE_LINES_PER_DOCUMENT = 14  # at most; fewer where a manual has fewer code lines in the charset
BLOCKS_PER_DOCUMENT = 10
CODE_BLOCKS_PER_DOCUMENT = 3  # at most


@dataclass(frozen=True)
class Document:
    name: str
    package: str
    path: str  # where the package installs it (.gz: gunzipped first)
    typesetter: str
    pages: tuple[int, int]  # first and last page to draw from (the body, not the index)


DOCUMENTS = (
    Document("r-intro", "r-doc-pdf", "/usr/share/doc/r-doc-pdf/manual/R-intro.pdf",
             "Texinfo, pdfTeX", (8, 100)),
    Document("libtasn1", "libtasn1-doc", "/usr/share/doc/libtasn1-doc/libtasn1.pdf",
             "Texinfo, pdfTeX", (5, 34)),
    Document("developers-reference", "developers-reference",
             "/usr/share/developers-reference/developers-reference.pdf",
             "Sphinx, LaTeX, pdfTeX", (8, 110)),
    Document("maint-guide", "maint-guide", "/usr/share/doc/maint-guide/maint-guide.en.pdf",
             "DocBook, dblatex, XeTeX", (8, 60)),
    Document("siscone", "siscone-doc-pdf", "/usr/share/doc/siscone-doc-pdf/pdf/refman.pdf.gz",
             "Doxygen, LaTeX, Ghostscript", (20, 330)),
    Document("cplusplus", "c++-annotations-pdf", "/usr/share/doc/c++-annotations/cplusplus.pdf",
             "LaTeX, Ghostscript", (30, 1100)),
    Document("shared-mime-info", "shared-mime-info",
             "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf",
             "DocBook, LaTeX, pdfTeX", (2, 16)),
)
# Font programs that training draws with (lab_code.training.fonts, `make fonts`), as PDFs name them:
# a line set in one of these is left out. Same design in another font program stays (the CM
# Type 1 fonts of AMS are not matplotlib's BaKoMa TrueType files; Nimbus Mono L of 1999 is not
# Nimbus Mono PS of 2017).
TRAINING_FONTS = re.compile(
    r"^(FreeSans|FreeSerif|FreeMono|Cousine|Arimo|Tinos|DejaVu|CharisSIL|Gentium|Go-|Hack|"
    r"NimbusRoman-|NimbusSans-|NimbusSansNarrow|NimbusMonoPS|C059|P052|URWBookman|URWGothic|"
    r"LMRoman|LMMono|LMSans|TeXGyreCursor|TeXGyreSchola|TeXGyrePagella|Roboto|Inter|"
    r"Courier ?Prime|STIXGeneral|LinLibertine|LinBiolinum|EBGaramond)", re.IGNORECASE)
MONOSPACE = re.compile(r"(mono|monl|courier|cursor|typewriter|cmtt|cmsltt|xb?tt)", re.IGNORECASE)
ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                       "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00a0": " ",
                       "\ufb01": "fi", "\ufb02": "fl", "\ufb00": "ff", "\ufb03": "ffi",
                       "\ufb04": "ffl", "`": "'"})
INSTALL = ("apt-get install -y poppler-utils " +
           " ".join(sorted({d.package for d in DOCUMENTS})))


class DocSetError(RuntimeError):
    """A tool or a document the set needs is missing; the message says what to install."""


@dataclass
class Line:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in PDF points
    text: str
    block: int  # index of its pdftotext block on the page
    gaps: tuple[tuple[float, float], ...] = ()  # the x ranges between its words
    font: str = ""
    colour: str = ""
    mono: bool = False  # set in a monospace font (80% of its width or more)


def _run(args: list[str]) -> bytes:
    try:
        return subprocess.run(args, capture_output=True, check=True, timeout=120).stdout
    except FileNotFoundError as err:
        raise DocSetError(f"{args[0]} is not installed: {INSTALL}.") from err


def clean_text(words: list[str]) -> str | None:
    """A line's words in the charset's spelling, or None if any character stays outside it."""
    text = " ".join(" ".join(words).translate(ASCII).split())
    if len(text) < 3 or not re.search("[A-Za-z]{2}", text):
        return None
    return text if all(ch in CHARSET for ch in text) else None


def page_lines(pdf: Path, page: int) -> list[Line]:
    """Every line of one page (pdftotext -bbox-layout), with its font and colour (pdftohtml)."""
    xhtml = _run(["pdftotext", "-q", "-f", str(page), "-l", str(page), "-bbox-layout",
                  str(pdf), "-"])
    root = ET.fromstring(xhtml)
    ns = "{http://www.w3.org/1999/xhtml}"
    lines: list[Line] = []
    for b, block in enumerate(root.iter(ns + "block")):
        for line in block.iter(ns + "line"):
            words = [w.text or "" for w in line.iter(ns + "word")]
            boxes = [[float(w.get(k)) for k in ("xMin", "yMin", "xMax", "yMax")]
                     for w in line.iter(ns + "word")]
            if not boxes:
                continue
            height = max(b_[3] - b_[1] for b_ in boxes)
            gaps = [boxes[i + 1][0] - boxes[i][2] for i in range(len(boxes) - 1)]
            text = clean_text(words)
            if gaps and max(gaps) > 2.5 * height:  # a table row or two columns: not one line
                text = None
            box = tuple(float(line.get(k)) for k in ("xMin", "yMin", "xMax", "yMax"))
            spaces = tuple((boxes[i][2], boxes[i + 1][0]) for i in range(len(boxes) - 1))
            lines.append(Line(box, text or "", b, spaces))
    _fonts(pdf, page, lines)
    return lines


def _fonts(pdf: Path, page: int, lines: list[Line]) -> None:
    """Set each line's font and colour: those of most of its characters per pdftohtml."""
    xml = _run(["pdftohtml", "-q", "-xml", "-i", "-zoom", "1", "-stdout", "-f", str(page),
                "-l", str(page), str(pdf)]).decode("utf-8", errors="replace")
    specs = {m.group(1): (m.group(2).split("+")[-1], m.group(3)) for m in re.finditer(
        r'<fontspec id="(\d+)" size="-?\d+" family="([^"]*)" color="([^"]*)"', xml)}
    chunks = []
    for m in re.finditer(r'<text top="(-?\d+)" left="(-?\d+)" width="(\d+)" height="(\d+)" '
                         r'font="(\d+)"[^>]*>(.*?)</text>', xml):
        top, left, width, height = (float(m.group(i)) for i in range(1, 5))
        chunks.append((left, top, left + width, top + height, specs.get(m.group(5), ("", ""))))
    for line in lines:
        x0, y0, x1, y1 = line.box
        votes: dict[tuple[str, str], float] = {}
        for cx0, cy0, cx1, cy1, spec in chunks:
            middle = (cy0 + cy1) / 2
            overlap = min(x1, cx1) - max(x0, cx0)
            if y0 - 1 <= middle <= y1 + 1 and overlap > 0:
                votes[spec] = votes.get(spec, 0.0) + overlap
        if votes:
            line.font, line.colour = max(votes, key=votes.get)
            mono = sum(v for (font, _), v in votes.items() if MONOSPACE.search(font))
            line.mono = mono >= 0.8 * sum(votes.values())


def render(pdf: Path, page: int, dpi: int, folder: Path) -> Image.Image:
    """One page as poppler's pdftoppm draws it (anti-aliased, FreeType at the final size)."""
    stem = folder / f"p{page}-{dpi}"
    _run(["pdftoppm", "-q", "-r", str(dpi), "-f", str(page), "-l", str(page), "-png",
          "-singlefile", str(pdf), str(stem)])
    return Image.open(f"{stem}.png").convert("RGB")


def ink_between_words(image: Image.Image, line: Line, scale: float) -> bool:
    """True when something is drawn where the text layer has a space: an underscore set as a
    rule (Texinfo, Doxygen), which the text layer does not hold, so the label would be wrong."""
    grey = image.convert("L")
    y0, y1 = round(line.box[1] * scale), round(line.box[3] * scale)
    for a, b in line.gaps:
        x0, x1 = round(a * scale) + 1, round(b * scale) - 1
        if x1 > x0 and np.asarray(grey.crop((x0, y0, x1, y1))).min(initial=255) < 150:
            return True
    return False


def crop_box(lines: list[Line], chosen: list[int], scale: float,
             size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel box around the chosen lines: a margin of half a line height left and right, and up
    to a quarter above and below, never reaching more than half-way to another line's box
    ((0, 0, 0, 0) when another line's box overlaps it on the same rows)."""
    x0 = min(lines[i].box[0] for i in chosen)
    x1 = max(lines[i].box[2] for i in chosen)
    y0 = min(lines[i].box[1] for i in chosen)
    y1 = max(lines[i].box[3] for i in chosen)
    height = min(lines[i].box[3] - lines[i].box[1] for i in chosen)
    up, down, side = 0.25 * height, 0.25 * height, 0.5 * height
    for j, other in enumerate(lines):
        if j in chosen or other.box[2] < x0 - side or other.box[0] > x1 + side:
            continue
        # font boxes of consecutive lines often overlap a little: the crop then ends half-way
        # into the overlap, which holds neither line's ink
        centre = (other.box[1] + other.box[3]) / 2
        if centre < y0 + 0.3 * height and other.box[3] < y0 + 0.35 * height:
            up = min(up, (y0 - other.box[3]) / 2)
        elif centre > y1 - 0.3 * height and other.box[1] > y1 - 0.35 * height:
            down = min(down, (other.box[1] - y1) / 2)
        elif other.box[2] <= x0:  # beside it, on the same rows
            side = min(side, (x0 - other.box[2]) / 2)
        elif other.box[0] >= x1:
            side = min(side, (other.box[0] - x1) / 2)
        else:
            return (0, 0, 0, 0)  # overlaps another line's box: not a clean crop
    box = (int(np.floor((x0 - side) * scale)), int(np.floor((y0 - up) * scale)),
           int(np.ceil((x1 + side) * scale)), int(np.ceil((y1 + down) * scale)))
    return (max(0, box[0]), max(0, box[1]), min(size[0], box[2]), min(size[1], box[3]))


@dataclass
class Record:
    file: str
    family: str
    text: str
    document: str
    typesetter: str
    page: int
    dpi: int
    font: str
    colour: str
    monospace: bool
    height_px: int  # the smallest line's box height at this resolution


def _candidates(lines: list[Line]) -> tuple[list[list[int]], list[list[int]]]:
    """Single lines and runs of 2-6 lines of one pdftotext block, all in the charset and in
    fonts training does not use."""
    good = [bool(ln.text) and bool(ln.font) and not TRAINING_FONTS.search(ln.font)
            for ln in lines]
    singles = [[i] for i, ok in enumerate(good) if ok]
    runs = []
    i = 0
    while i < len(lines):
        j = i
        while j < len(lines) and good[j] and lines[j].block == lines[i].block:
            j += 1
        if j - i >= 2:
            runs.append(list(range(i, min(j, i + 6))))
        i = max(j, i + 1)
    return singles, runs


def build(out: Path, seed: int = SEED, scale: float = 1.0) -> list[Record]:
    for tool in ("pdftoppm", "pdftotext", "pdftohtml"):
        if shutil.which(tool) is None:
            raise DocSetError(f"{tool} is not installed: {INSTALL}.")
    missing = [d.path for d in DOCUMENTS if not Path(d.path).is_file()]
    if missing:
        raise DocSetError(f"{missing[0]} is missing: {INSTALL}.")
    rng = np.random.default_rng(seed)
    records: list[Record] = []
    used: set[str] = set()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for doc in DOCUMENTS:
            pdf = Path(doc.path)
            if pdf.suffix == ".gz":
                plain = folder / pdf.stem
                plain.write_bytes(gzip.decompress(pdf.read_bytes()))
                pdf = plain
            records += _document(doc, pdf, folder, out, rng, used, scale)
    (out / LABELS).write_text(json.dumps([asdict(r) for r in records], indent=1) + "\n",
                              encoding="utf-8")
    return records


def _document(doc: Document, pdf: Path, folder: Path, out: Path, rng: np.random.Generator,
              used: set[str], scale: float) -> list[Record]:
    want = {"line": round(LINES_PER_DOCUMENT * scale), "block": round(BLOCKS_PER_DOCUMENT * scale)}
    want_code = {"line": round(CODE_LINES_PER_DOCUMENT * scale),
                 "block": round(CODE_BLOCKS_PER_DOCUMENT * scale)}
    got = {"line": 0, "block": 0}
    got_code = {"line": 0, "block": 0}
    pages = rng.permutation(np.arange(doc.pages[0], doc.pages[1] + 1))
    records: list[Record] = []
    for page in (int(p) for p in pages):
        if got == want:
            break
        lines = page_lines(pdf, page)
        singles, runs = _candidates(lines)
        picks = []
        for kind, options in (("line", singles), ("block", runs)):
            order = rng.permutation(len(options)) if options else []
            per_page = 0
            for k in order:
                chosen = options[int(k)]
                if kind == "block":
                    chosen = chosen[: int(rng.integers(2, len(chosen) + 1))]
                mono = all(lines[i].mono for i in chosen)
                text = "\n".join(lines[i].text for i in chosen)
                if got[kind] >= want[kind] or per_page >= (4 if kind == "line" else 1):
                    break
                if text in used or (mono and got_code[kind] >= want_code[kind]):
                    continue
                # code first: leave room for it while the quota of other lines fills
                if not mono and want[kind] - got[kind] <= want_code[kind] - got_code[kind]:
                    continue
                used.add(text)
                got[kind] += 1
                got_code[kind] += mono
                per_page += 1
                picks.append((kind, chosen, mono, text))
        rendered: dict[int, Image.Image] = {}
        for kind, chosen, mono, text in picks:
            dpi = int(rng.choice(DPIS))
            if dpi not in rendered:
                rendered[dpi] = render(pdf, page, dpi, folder)
            image = rendered[dpi]
            if any(ink_between_words(image, lines[i], dpi / 72) for i in chosen):
                continue
            box = crop_box(lines, chosen, dpi / 72, image.size)
            crop = image.crop(box)
            if box[2] <= box[0] or np.asarray(crop.convert("L")).min() > 160:
                continue  # no clean crop, or no visible ink (a hidden text layer)
            family = f"{'code' if mono and kind == 'line' else kind}_{dpi}dpi"
            name = f"{family}/{doc.name}-p{page}-{len(records):03d}.png"
            (out / family).mkdir(exist_ok=True)
            crop.save(out / name, optimize=True)
            first = lines[chosen[0]]
            height = min(lines[i].box[3] - lines[i].box[1] for i in chosen) * dpi / 72
            records.append(Record(name, family, text, doc.name, doc.typesetter, page, dpi,
                                  first.font, first.colour, mono, round(height)))
    return records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python tools/docset.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "documents",
                        help="folder for the crops and labels.json (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=SEED, help="pages, lines and resolutions")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the full set's size (for a quick look)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        records = build(args.out, args.seed, args.scale)
    except (DocSetError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    families: dict[str, int] = {}
    for r in records:
        families[r.family] = families.get(r.family, 0) + 1
    print(f"{len(records)} images in {args.out}: {families}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
