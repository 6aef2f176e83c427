"""The instructor decks: every slides/*.md builds with tools/slides.py into HTML that works offline,
opened on its own, and each deck has what a lesson deck needs (title, objectives, the pipeline
diagram with its lesson highlighted, pitfalls, a recap, speaker notes)."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "slides.py"
DECKS = sorted((ROOT / "slides").glob("*.md"))
IDS = [d.stem for d in DECKS]
# Every stage of the course's pipeline; the diagram must name them all.
STAGES = ("data", "train", "checkpoint", "export", "registry", "recognizer", "profiling", "app",
          "serverless", "tunnel", "Dockerfiles", "speed and cost")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
COMMENT = re.compile(r"<!--(.*?)-->", re.S)
# Comments that are Marp directives, not speaker notes.
DIRECTIVE = re.compile(r"^\s*_?[a-zA-Z]+\s*:\s*[^\n]*$")


def _skip_unless_ci(reason: str) -> None:
    """Skip on a learner's machine; on CI (CI set, as .ci/run does) a missing browser fails."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must install Chromium (see .ci/run)")
    pytest.skip(reason)


def _tool():
    spec = importlib.util.spec_from_file_location("slides_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _skip_without_node() -> None:
    """The build needs Node.js and npm: a learner without them skips (`make test` says so too);
    CI fails."""
    if not (shutil.which("node") and shutil.which("npm")):
        _skip_unless_ci("no Node.js and npm here: the decks are checked, not built")


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """Build every deck once per session (HTML only; the PDF path has its own test)."""
    _skip_without_node()
    out = tmp_path_factory.mktemp("slides")
    done = subprocess.run([sys.executable, str(TOOL), "--out", str(out), "--pdf", "no"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, f"tools/slides.py failed:\n{done.stdout}\n{done.stderr}"
    return out


def slides_of(deck: Path) -> list[str]:
    """The deck's slides: Marp splits on `---` lines outside code fences, after the front matter."""
    text = deck.read_text()
    assert text.startswith("---\n"), f"{deck.name}: start with a front matter block (marp: true)"
    body = text.split("\n---\n", 1)[1]
    parts, current, in_fence = [], [], False
    for line in body.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        if line.strip() == "---" and not in_fence:
            parts.append("\n".join(current))
            current = []
        else:
            current.append(line)
    parts.append("\n".join(current))
    return parts


def front_matter(deck: Path) -> dict[str, str]:
    block = deck.read_text().split("\n---\n", 1)[0].removeprefix("---\n")
    return dict(line.split(":", 1) for line in block.splitlines() if ":" in line)


def notes(slide: str) -> list[str]:
    return [c for c in COMMENT.findall(slide) if not DIRECTIVE.match(c.strip())]


def diagram(deck: Path) -> str | None:
    blocks = [b for b in FENCE.findall(deck.read_text()) if "recognizer" in b and "tunnel" in b]
    return blocks[0] if blocks else None


def test_there_are_decks():
    assert len(DECKS) >= 8, "slides/ should hold one deck per lesson (00..07)"


@pytest.mark.parametrize("deck", DECKS, ids=IDS)
def test_deck_builds_to_html(built, deck):
    page = built / f"{deck.stem}.html"
    assert page.is_file(), f"tools/slides.py wrote no {page.name}"
    assert page.stat().st_size > 10_000


class _Resources(HTMLParser):
    """Collects every URL that a browser would fetch while rendering the page."""

    LOADERS = {"script": "src", "img": "src", "source": "src", "video": "src", "audio": "src",
               "iframe": "src", "embed": "src", "object": "data", "track": "src", "input": "src"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in self.LOADERS and attrs.get(self.LOADERS[tag]):
            self.urls.append(attrs[self.LOADERS[tag]])
        if tag == "link" and attrs.get("href") and attrs.get("rel", "") not in ("canonical",):
            self.urls.append(attrs["href"])
        for key in ("srcset", "poster", "background"):
            if attrs.get(key):
                self.urls.append(attrs[key])
        if attrs.get("style"):
            self.urls += _css_urls(attrs["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.urls += _css_urls(data)


def _css_urls(css: str) -> list[str]:
    found = re.findall(r"url\(\s*['\"]?([^'\")]+)", css)
    found += re.findall(r"@import\s+(?:url\()?\s*['\"]([^'\"]+)", css)
    return found


@pytest.mark.parametrize("deck", DECKS, ids=IDS)
def test_html_is_self_contained(built, deck):
    """No scripts, styles, images or fonts from the network or from files next to the HTML."""
    parser = _Resources()
    parser.feed((built / f"{deck.stem}.html").read_text())
    outside = sorted({u for u in parser.urls if not u.startswith(("data:", "#"))})
    assert not outside, (f"{deck.name} loads {outside}: inline it (code-block diagrams, no "
                         "emoji images, no web fonts) so the HTML works offline on its own")


@pytest.mark.parametrize("deck", DECKS, ids=IDS)
def test_deck_has_a_title(built, deck):
    meta = front_matter(deck)
    assert meta.get("marp", "").strip() == "true", f"{deck.name}: front matter needs marp: true"
    title = meta.get("title", "").strip()
    assert title, f"{deck.name}: front matter needs a title: line"
    assert re.search(r"^# \S", slides_of(deck)[0], re.M), f"{deck.name}: slide 1 needs a # title"
    assert f"<title>{html.escape(title, quote=False)}</title>" in (
        built / f"{deck.stem}.html").read_text()


@pytest.mark.parametrize("deck", DECKS, ids=IDS)
def test_deck_has_lesson_sections(deck):
    headings = "\n".join(re.findall(r"^#{1,3} .*$", deck.read_text(), re.M)).lower()
    for section in ("learning objectives", "pitfalls", "recap"):
        assert section in headings, f"{deck.name}: add a slide titled '{section.capitalize()}'"
    assert 8 <= len(slides_of(deck)) <= 15, f"{deck.name}: keep a deck to 8-15 slides"


@pytest.mark.parametrize("deck", DECKS, ids=IDS)
def test_most_slides_have_speaker_notes(built, deck):
    slides = slides_of(deck)
    with_notes = sum(bool(notes(s)) for s in slides)
    assert with_notes >= 0.6 * len(slides), (
        f"{deck.name}: only {with_notes} of {len(slides)} slides have speaker notes (<!-- ... -->)")
    page = (built / f"{deck.stem}.html").read_text()
    assert page.count('class="bespoke-marp-note"') == with_notes, "Marp lost some speaker notes"


@pytest.mark.parametrize("deck", DECKS, ids=IDS)
def test_deck_shows_the_pipeline_with_its_lesson_highlighted(deck):
    """One drawing (tools/slides.py PIPELINE) in every deck, the deck's own boxes doubled."""
    block = diagram(deck)
    assert block, (f"{deck.name}: add the pipeline diagram in a ```text block: "
                   f"python tools/slides.py --pipeline {deck.name[:2]}")
    missing = [s for s in STAGES if s not in block]
    assert not missing, f"{deck.name}: the pipeline diagram lacks {missing}"
    assert "╔" in block, f"{deck.name}: no box is highlighted"
    expected = _tool().pipeline(deck.name[:2])
    assert block.rstrip("\n") == expected, (
        f"{deck.name}: the diagram differs from `python tools/slides.py --pipeline "
        f"{deck.name[:2]}`: paste that output into the deck")


# For each slide: how far its text reaches past the slide's edges (0 = it fits). Code blocks
# shrink to fit by themselves (Marp's auto-scaling); everything else can spill over.
_SPILL = """() => [...document.querySelectorAll('section[id]')].map(section => {
    const box = section.getBoundingClientRect();
    let spill = 0;
    for (const el of section.querySelectorAll('h1, h2, h3, p, li, table')) {
        if (el.closest('footer, header')) continue;
        const r = el.getBoundingClientRect();
        spill = Math.max(spill, r.bottom - box.bottom, box.top - r.top, r.right - box.right);
        if (el.tagName === 'TABLE') {  // a table can shrink to fit and scroll (overflow: auto)
            spill = Math.max(spill, el.scrollHeight - el.clientHeight,
                             el.scrollWidth - el.clientWidth);
        }
    }
    return Math.round(spill);
})"""


@pytest.mark.browser
def test_every_slide_fits_on_the_slide(built):
    """Text that runs off a slide is cut off in the room; render each deck and measure."""
    chrome = _tool().find_chrome()
    if chrome is None:
        _skip_unless_ci("no Chromium here (set CHROME_PATH)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    spilled = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chrome, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            for deck in DECKS:
                page.goto((built / f"{deck.stem}.html").as_uri())
                spills = page.evaluate(_SPILL)
                spilled += [f"{deck.name} slide {i}: {px} px" for i, px in enumerate(spills, 1)
                            if px > 2]
        finally:
            browser.close()
    assert not spilled, ("text runs off these slides (cut it, split the slide, or add "
                         "<!-- _class: small -->):\n" + "\n".join(spilled))


@pytest.mark.slow
def test_pdf_build(tmp_path):
    """The PDF path, on one deck, where a Chromium is installed (CI installs one)."""
    _skip_without_node()
    if _tool().find_chrome() is None:
        _skip_unless_ci("no Chromium here (set CHROME_PATH); the HTML tests still ran")
    done = subprocess.run([sys.executable, str(TOOL), str(DECKS[0]), "--out", str(tmp_path),
                           "--pdf", "yes"], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    pdf = tmp_path / f"{DECKS[0].stem}.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_missing_node_is_one_clear_line(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run([sys.executable, str(TOOL), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env={"PATH": str(empty)}, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "Node.js and npm are needed" in done.stderr


def test_pdf_yes_without_chromium_is_one_clear_line(tmp_path):
    done = subprocess.run([sys.executable, str(TOOL), str(DECKS[0]), "--out", str(tmp_path),
                           "--pdf", "yes"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "CHROME_PATH": str(tmp_path / "no-chromium")})
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "CHROME_PATH" in done.stderr



@pytest.mark.parametrize("ci", [False, True], ids=["learner", "CI"])
def test_make_test_runs_without_node_unless_ci(tmp_path, ci):
    """`make test` needs Python, make and git only: without Node it skips the slides with one
    sentence; under CI=true the slides are required, so the same step fails."""
    make = shutil.which("make")
    if make is None or not (ROOT / ".venv" / ".installed").is_file():
        pytest.skip("needs make and the checkout's .venv (make setup)")
    no_node = tmp_path / "bin"  # a PATH with neither node nor npm on it
    no_node.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PATH=str(no_node), **({"CI": "true"} if ci else {}))
    done = subprocess.run([make, "--no-print-directory", "-C", str(ROOT), "slides-if-node"],
                          capture_output=True, text=True, env=env, timeout=120)
    if ci:
        assert done.returncode != 0 and "Node.js and npm are needed" in done.stderr, done
    else:
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == ("Slides skipped: Node.js and npm are not installed "
                                       "(install them, then run make slides)."), done.stdout
