"""Build the instructor decks (`slides/*.md`, Marp Markdown) into self-contained HTML, and PDF
when a Chromium is available, entirely offline once Marp CLI is installed.

    python tools/slides.py --out build/slides            # HTML, plus PDF if Chromium is found
    python tools/slides.py --out build/slides --pdf no   # HTML only
    python tools/slides.py slides/03_gradio_ui.md --pdf yes
    python tools/slides.py --pipeline 03                 # the pipeline diagram for lesson 03

Every deck shows the course's pipeline with its own lesson's boxes drawn in double lines (a lesson
that reworks earlier boxes instead, like 07, names them in REVISITS); the drawing lives here
(PIPELINE) and tests/test_slides.py checks each deck's copy against it.

Marp CLI is pinned in `slides/package.json` / `slides/package-lock.json`; the first build runs
`npm ci --prefix slides` (needs the npm registry once), later builds need no network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLIDES = ROOT / "slides"
CONFIG = SLIDES / "marp.config.mjs"
MARP = SLIDES / "node_modules" / ".bin" / "marp"
LOCK, INSTALLED = SLIDES / "package-lock.json", SLIDES / "node_modules" / ".package-lock.json"
CHROMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


# Each box's top border carries the number of the lesson that covers it.
PIPELINE = """\
┌─00───┐   ┌─00────┐   ┌─00─────────┐   ┌─01─────┐   ┌─01───────┐
│ data │──►│ train │──►│ checkpoint │──►│ export │──►│ registry │
└──────┘   └───────┘   └────────────┘   └────────┘   └────┬─────┘
                                                          │ fetch
┌─02────────┐  measures  ┌─01─────────┐                   │
│ profiling │┈┈┈┈┈┈┈┈┈┈┈►│ recognizer │◄──────────────────┘
└───────────┘            └─────┬──────┘
                   ┌───────────┴────────────┐
             ┌─03──▼─────┐   HTTP    ┌─04───▼─────┐
             │ app       │┈┈┈┈┈┈┈┈┈┈►│ serverless │
             │ (Gradio)  │ optional  │ (Lambda)   │
             └─────┬─────┘           └────────────┘
             ┌─05──▼─────┐
             │ tunnel    │──► public https URL
             └───────────┘
┌─06──────────────────────────────────────────┐
│ Dockerfiles: package app and serverless     │
└─────────────────────────────────────────────┘"""
DOUBLE = str.maketrans("─│┌┐└┘┬┴├┤", "═║╔╗╚╝╤╧╟╢")
# Lessons that add no box of their own but rework boxes of earlier lessons: the boxes, by the
# first word inside them, that their decks draw in double lines.
REVISITS = {"07": ("recognizer", "serverless"),
            "09": ("registry", "app", "serverless")}


def box_corners(lesson: str) -> list[tuple[int, int]]:
    """The top-left corners (row, column) of the boxes that `lesson` covers or revisits."""
    rows = PIPELINE.splitlines()
    corners = [(y, x) for y, row in enumerate(rows)
               for x in range(len(row)) if row.startswith(f"┌─{lesson}", x)]
    for name in REVISITS.get(lesson, ()):
        corners += [(y - 1, x) for y, row in enumerate(rows) if y > 0
                    for x in range(len(row)) if row.startswith(f"│ {name} ", x)
                    and len(rows[y - 1]) > x and rows[y - 1][x] == "┌"]
    return sorted(set(corners))


def pipeline(lesson: str) -> str:
    """PIPELINE with the boxes of `lesson` ("03") redrawn in double lines."""
    grid = [list(row) for row in PIPELINE.splitlines()]
    corners = box_corners(lesson)
    if not corners:
        raise BuildError(f"The pipeline diagram has no box for lesson {lesson}: add one to "
                         "PIPELINE (or the boxes it revisits to REVISITS) in tools/slides.py.")
    for top, left in corners:
        right = next(x for x in range(left + 1, len(grid[top])) if grid[top][x] == "┐")
        bottom = next(y for y in range(top + 1, len(grid)) if grid[y][left] == "└")
        edge = [(y, x) for y in (top, bottom) for x in range(left, right + 1)]
        edge += [(y, x) for y in range(top, bottom + 1) for x in (left, right)]
        for y, x in edge:
            grid[y][x] = grid[y][x].translate(DOUBLE)
    return "\n".join("".join(row) for row in grid)


class BuildError(RuntimeError):
    """A build problem; the message is one sentence that says what to do."""


def decks() -> list[Path]:
    return sorted(SLIDES.glob("*.md"))


def find_chrome() -> str | None:
    """The browser Marp uses for PDF: $CHROME_PATH, else /usr/bin/chromium or one on PATH."""
    configured = os.environ.get("CHROME_PATH")
    if configured:
        return configured if Path(configured).is_file() else None
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return next((found for name in CHROMES if (found := shutil.which(name))), None)


def needs_install() -> bool:
    """No Marp yet, or slides/package-lock.json changed since npm last installed from it."""
    if not (MARP.exists() and INSTALLED.exists()):
        return True
    return LOCK.stat().st_mtime > INSTALLED.stat().st_mtime


def ensure_marp() -> Path:
    """Install the pinned Marp CLI into slides/node_modules on first use."""
    if not (shutil.which("node") and shutil.which("npm")):
        raise BuildError("Node.js and npm are needed to build the slides: install Node 18 or "
                         "newer (https://nodejs.org) and run `make slides` again.")
    if needs_install():
        print("installing Marp CLI into slides/node_modules (npm ci, once)...", file=sys.stderr)
        done = subprocess.run(["npm", "ci", "--prefix", str(SLIDES), "--no-audit", "--no-fund"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0 or not MARP.exists():
            raise BuildError("`npm ci --prefix slides` failed (no network, or a broken "
                             "slides/package-lock.json): connect once so npm can install Marp "
                             "CLI, then run `make slides` again.")
    return MARP


def marp(inputs: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> None:
    cmd = [str(ensure_marp()), "--config-file", str(CONFIG), "--input-dir", str(inputs),
           "--output", str(out), *extra]
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, **(env or {})}, cwd=SLIDES)
    if done.returncode != 0:
        sys.stderr.write(done.stdout)
        raise BuildError(f"Marp failed on {', '.join(sorted(p.name for p in inputs.glob('*.md')))}"
                         ": read its messages above, fix the deck and build again.")


def pdf_env(chrome: str) -> dict[str, str]:
    env = {"CHROME_PATH": chrome}
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # Chromium refuses its sandbox as root
        env["CHROME_NO_SANDBOX"] = "1"
    return env


def build(sources: list[Path], out: Path, pdf: str = "auto") -> list[Path]:
    """Build each deck to OUT/<name>.html (and .pdf); returns the files written."""
    if not sources:
        raise BuildError("No decks to build: add slides/NN_topic.md files first.")
    chrome = find_chrome() if pdf != "no" else None
    if pdf == "yes" and chrome is None:
        raise BuildError("--pdf yes needs Chromium: install it (Debian: apt-get install "
                         "chromium) or set CHROME_PATH to a Chrome/Chromium executable.")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="slides-") as tmp:
        staged = Path(tmp)  # exactly these decks: --input-dir would also walk theme/ etc.
        for src in sources:
            shutil.copyfile(src, staged / src.name)
        marp(staged, out)
        if chrome:
            marp(staged, out, "--pdf", "--allow-local-files", env=pdf_env(chrome))
    suffixes = [".html", ".pdf"] if chrome else [".html"]
    written = [out / (src.stem + s) for src in sources for s in suffixes]
    missing = [p.name for p in written if not p.is_file()]
    if missing:
        raise BuildError(f"Marp did not write {', '.join(missing)}: run it again with "
                         "`npx --prefix slides marp --debug` on that deck to see why.")
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python tools/slides.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("decks", nargs="*", type=Path,
                        help="decks to build (default: every slides/*.md)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "slides",
                        help="output folder (default: build/slides)")
    parser.add_argument("--pdf", choices=["auto", "yes", "no"], default="auto",
                        help="also write PDF: auto = when Chromium is found (default: auto)")
    parser.add_argument("--pipeline", metavar="NN",
                        help="print the pipeline diagram for lesson NN (to paste into a deck)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sources = [p.resolve() for p in args.decks] or decks()
    try:
        if args.pipeline:
            print(pipeline(args.pipeline))
            return 0
        absent = [str(p) for p in sources if not p.is_file()]
        if absent:
            raise BuildError(f"No deck at {', '.join(absent)}: pass paths of slides/*.md files.")
        written = build(sources, args.out, args.pdf)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    kinds = sorted({p.suffix for p in written})
    print(f"built {len(sources)} decks ({' + '.join(kinds)}) into {args.out}")
    if args.pdf == "auto" and ".pdf" not in kinds:
        print("(no PDF: Chromium not found; set CHROME_PATH to build PDFs too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
