"""Course maintenance for notebooks: create a lesson skeleton, generate solution notebooks from
`solutions/NN_topic.py`, strip outputs, and check every convention.

    python tools/nb.py new 07_topic "Title"   # a lesson skeleton that follows the conventions
    python tools/nb.py solutions              # regenerate solutions/*.ipynb from solutions/*.py
    python tools/nb.py strip                  # strip outputs; badges and setup cells from REPO_URL
    python tools/nb.py check                  # what tests/test_course.py checks, as a report
    python tools/nb.py compile [NOTEBOOK...]  # parse every code cell as this IPython would
    python tools/nb.py compile --colab [...]  # ...and as Colab's IPython 7.34 on Python 3.13 would
    python tools/nb.py map                    # write the course map's copies; words, cells, time

Conventions (tests enforce them):
- cell 0: markdown title and the "Open in Colab" badge; cell 1: the setup cell (tag `setup`),
  identical in every notebook, made from REPO_URL in pyproject.toml (its one home);
- a "Learning objectives" markdown cell near the top and a "Recap" markdown cell at the end;
- each exercise: a markdown cell tagged `exercise` starting "### Exercise N: ...", followed by a
  code cell tagged `exercise` and `raises-exception` that ends in `raise NotImplementedError(hint)`;
- `solutions/NN_topic.py` holds `# %% [context]` (code the solutions need) and one
  `# %% [exercise N]` block per exercise; `solutions/NN_topic.ipynb` is generated from it;
- every lesson has its entry in the course map, `lab_code/course.py`, whose copies (the README's
  lesson table, lesson 00's table and diagram, the decks' diagrams) `map` writes.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
import warnings
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # lab_code from this checkout, installed or not
from lab_code import course  # noqa: E402  (the course map)

NOTEBOOKS, SOLUTIONS, SLIDES = ROOT / "notebooks", ROOT / "solutions", ROOT / "slides"
KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def repo_url() -> str:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return meta["project"]["urls"]["Repository"]


def colab_url(path: Path) -> str:
    owner_repo = repo_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_repo}/blob/main/{path.relative_to(ROOT).as_posix()}"


def badge(path: Path) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(path)})")


def setup_source() -> str:
    url = repo_url()
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return f'''# Setup: on Colab, fetch the course and install it (Colab's own torch is kept).
# Locally (after `make setup` or `make lab`) this cell does nothing. Safe to run twice.
import os, subprocess, sys
REPO_URL = "{url}"
if "google.colab" in sys.modules:
    if not os.path.isdir("/content/{name}"):
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "/content/{name}"], check=True)
    os.chdir("/content/{name}/notebooks")
    try:
        import lab_code  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "..[course]"],
                       check=True)
        sys.path.insert(0, "/content/{name}")'''


def read(path: Path) -> nbformat.NotebookNode:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # format 4.4 has no cell ids; nbformat warns about that
        return nbformat.read(path, as_version=4)


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    nb.metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    for cell in nb.cells:
        cell.pop("id", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.nbformat, nb.nbformat_minor = 4, 4  # 4.4: no cell ids, so regenerated files are stable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbformat nags about the missing ids of format 4.5
        text = nbformat.writes(nb, version=4)
    path.write_text(text + "\n")


def md(text: str, *tags: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(text)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def code(text: str, *tags: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def exercises(nb) -> list[tuple[int, str, str]]:
    """(number, markdown prompt, stub code) of each exercise in a lesson notebook."""
    out, cells = [], nb.cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "markdown" and "exercise" in tags(cell):
            m = re.match(r"###\s+Exercise\s+(\d+)", cell.source)
            stub = cells[i + 1] if i + 1 < len(cells) else None
            out.append((int(m.group(1)) if m else -1, cell.source,
                        stub.source if stub is not None and stub.cell_type == "code" else ""))
    return out


def solution_blocks(path: Path) -> dict[str, str]:
    """Blocks of a solutions/NN_topic.py file, keyed 'context' or 'exercise N'."""
    blocks: dict[str, str] = {}
    key = None
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*%%\s*\[(context|exercise \d+)\]\s*$", line)
        if m:
            key = m.group(1)
            blocks[key] = ""
        elif key is not None:
            blocks[key] += line + "\n"
    return {k: v.strip("\n") for k, v in blocks.items()}


def build_solution(lesson: Path) -> nbformat.NotebookNode:
    nb, src = read(lesson), SOLUTIONS / (lesson.stem + ".py")
    blocks = solution_blocks(src)
    title = nb.cells[0].source.splitlines()[0].lstrip("# ").strip()
    out_path = SOLUTIONS / lesson.name
    cells = [
        md(f"# Solutions: {title}\n\n{badge(out_path)}\n\n"
           f"Worked solutions to the exercises of [the lesson](../notebooks/{lesson.name}). "
           f"Generated from `solutions/{src.name}` by `python tools/nb.py solutions`: "
           "edit that file, not this notebook."),
        code(setup_source(), "setup"),
    ]
    if blocks.get("context"):
        cells.append(code(blocks["context"]))
    for number, prompt, _ in exercises(nb):
        cells.append(md(prompt))
        cells.append(code(blocks.get(f"exercise {number}", f"# missing: [exercise {number}]")))
    return nbformat.v4.new_notebook(cells=cells)


def refresh(nb: nbformat.NotebookNode, path: Path) -> nbformat.NotebookNode:
    """Badge and setup cell made anew from the repository URL in pyproject.toml."""
    for cell in nb.cells:
        if "setup" in tags(cell):
            cell.source = setup_source()
        elif cell.cell_type == "markdown" and "colab-badge.svg" in cell.source:
            cell.source = re.sub(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)", badge(path),
                                 cell.source)
    return nb


def lessons() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def new(stem: str, title: str) -> Path:
    path = NOTEBOOKS / f"{stem}.ipynb"
    if path.exists():
        raise SystemExit(f"{path} exists already")
    cells = [
        md(f"# Lesson {stem[:2]}: {title}\n\n{badge(path)}"),
        code(setup_source(), "setup"),
        md("## Learning objectives\n\nBy the end of this lesson you can:\n\n- ..."),
        code("import lab_code"),
        md("## Exercises"),
        md("### Exercise 1: ...\n\nWhat to do and why it matters.", "exercise"),
        code('raise NotImplementedError("Exercise 1: hint ...")', "exercise", "raises-exception"),
        md("## Recap\n\n- ..."),
    ]
    write(nbformat.v4.new_notebook(cells=cells), path)
    src = SOLUTIONS / f"{stem}.py"
    if not src.exists():
        src.write_text("# %% [context]\nimport lab_code\n\n# %% [exercise 1]\n...\n")
    return path


# --- the course map's copies and the lessons' size ---------------------------------------------

MAP_START = "<!-- course map: `python tools/nb.py map` writes this part from lab_code/course.py -->"
MAP_END = "<!-- end of the course map -->"
# A learner's pace, for estimate_minutes: prose read and understood at 100 words a minute, a code
# cell run and its output read in 1.5 minutes, 10 minutes per exercise. Judgement, written down
# once so that every lesson is measured the same way.
WORDS_PER_MINUTE, MINUTES_PER_CODE_CELL, MINUTES_PER_EXERCISE = 100, 1.5, 10
MAX_MINUTES = 90  # a lesson longer than this should be cut or split


def size(path: Path) -> dict[str, int]:
    """Cells, prose words (markdown), code cells and exercises of a lesson notebook."""
    cells = read(path).cells
    return {
        "cells": len(cells),
        "words": sum(len(c.source.split()) for c in cells if c.cell_type == "markdown"),
        "code_cells": sum(c.cell_type == "code" for c in cells),
        "exercises": len(exercises(read(path))),
    }


def estimate_minutes(path: Path) -> int:
    """A learner's time for a lesson notebook, exercises included, at the pace above."""
    s = size(path)
    return round(s["words"] / WORDS_PER_MINUTE + s["code_cells"] * MINUTES_PER_CODE_CELL
                 + s["exercises"] * MINUTES_PER_EXERCISE)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def map_table(links: bool) -> str:
    """The lesson table: with links (README: notebook and Colab badge) or plain (lesson 00)."""
    if links:
        rows = ["| # | lesson | time | open | you will... |", "|---|---|---|---|---|"]
    else:
        rows = ["| # | lesson | time | you will... |", "|---|---|---|---|"]
    for lesson in course.LESSONS:
        time = f"{lesson.minutes} min"
        if links and not lesson.planned:
            path = NOTEBOOKS / f"{lesson.stem}.ipynb"
            rows.append(f"| {lesson.number} | [{lesson.name}]({path.relative_to(ROOT).as_posix()})"
                        f" | {time} | {badge(path)} | {_cell(lesson.goal)} |")
        elif links:
            rows.append(f"| {lesson.number} | {lesson.name} (planned) | {time} | | "
                        f"{_cell(lesson.goal)} |")
        else:
            planned = " (planned)" if lesson.planned else ""
            rows.append(f"| {lesson.number} | {lesson.name}{planned} | {time} | "
                        f"{_cell(lesson.goal)} |")
    return "\n".join(rows)


def map_block(links: bool, diagram: bool) -> str:
    """What sits between MAP_START and MAP_END: the diagram (lesson 00) and the table."""
    parts = [MAP_START]
    if diagram:
        parts.append("```\n" + course.PIPELINE + "\n```")
    parts += [map_table(links), MAP_END]
    return "\n\n".join(parts)


def with_block(text: str, block: str, where: str) -> str:
    """`text` with its MAP_START..MAP_END part replaced by `block`."""
    start, end = text.find(MAP_START), text.find(MAP_END)
    if start < 0 or end < start:
        raise SystemExit(f"{where} has no course map part: put the lines {MAP_START!r} and "
                         f"{MAP_END!r} where the table goes, then run `python tools/nb.py map`.")
    return text[:start] + block + text[end + len(MAP_END):]


def lesson_00_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The markdown cell of lesson 00 that holds the course map."""
    found = [c for c in nb.cells if c.cell_type == "markdown" and MAP_START in c.source]
    if len(found) != 1:
        raise SystemExit("notebooks/00_overview.ipynb needs exactly one markdown cell with the "
                         f"line {MAP_START!r} (and {MAP_END!r}).")
    return found[0]


def slide_pipeline(number: str) -> str:
    spec = importlib.util.spec_from_file_location("course_slides_tool",
                                                  ROOT / "tools" / "slides.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pipeline(number)


DIAGRAM = re.compile(r"(```text\n)([┌╔].*?)(\n```)", re.S)


def write_map() -> list[Path]:
    """Write the course map's copies; returns the files it changed."""
    changed = []
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = with_block(text, map_block(links=True, diagram=False), "README.md")
    if new != text:
        readme.write_text(new)
        changed.append(readme)
    overview = NOTEBOOKS / "00_overview.ipynb"
    nb = read(overview)
    cell = lesson_00_cell(nb)
    source = with_block(cell.source, map_block(links=False, diagram=True), overview.name)
    if source != cell.source:
        cell.source = source
        write(nb, overview)
        changed.append(overview)
    for lesson in course.LESSONS:
        deck = SLIDES / f"{lesson.stem}.md"
        if lesson.planned or not deck.is_file():
            continue
        text = deck.read_text()
        drawn = slide_pipeline(lesson.number)
        new = DIAGRAM.sub(lambda m, drawn=drawn: m.group(1) + drawn + m.group(3), text, count=1)
        if new != text:
            deck.write_text(new)
            changed.append(deck)
    return changed


def compile_errors(paths: list[Path], colab: bool = False) -> list[str]:
    """One line per code cell that this interpreter's IPython cannot turn into Python.

    Run with Colab's IPython (7.34 on Python 3.13) it finds what Colab would reject: its
    token-based transforms predate PEP 701, so `x = !cmd` inside an indented block is a
    SyntaxError there even though IPython 9 accepts it.

    `colab=True` applies Colab's rules with any IPython 8 or 9 and any Python: since Python 3.12
    tokenizes `!` as an operator, IPython 7.34's SystemAssign (which looks for an error token)
    never matches, so every `x = !cmd`, at any indentation, stays untransformed and fails; the
    other escapes, `%magic` assignments included, still work. So the check is this IPython's
    transforms without SystemAssign. It agreed with IPython 7.34 on Python 3.13 on all 201 code
    cells of the course and 55 made-up ones (tests/test_colab.py compares them again when the
    Colab-like venv is there)."""
    from IPython.core.inputtransformer2 import SystemAssign, TransformerManager

    manager, errors = TransformerManager(), []
    if colab:
        manager.token_transformers = [t for t in manager.token_transformers
                                      if t is not SystemAssign]
    for path in paths:
        for i, cell in enumerate(read(path).cells):
            if cell.cell_type != "code":
                continue
            try:
                compile(manager.transform_cell(cell.source), f"{path.name} cell {i}", "exec")
            except Exception as error:  # SyntaxError, or a transformer's own failure
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                errors.append(f"{where} cell {i}: {type(error).__name__}: {error}")
    return errors


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd = argv[0]
    if cmd == "new" and len(argv) == 3:
        print(new(argv[1], argv[2]))
    elif cmd == "solutions":
        for lesson in lessons():
            if (SOLUTIONS / (lesson.stem + ".py")).exists():
                write(build_solution(lesson), SOLUTIONS / lesson.name)
                print(f"wrote solutions/{lesson.name}")
    elif cmd == "strip":  # also refreshes badges and setup cells from REPO_URL
        for path in [*lessons(), *sorted(SOLUTIONS.glob("*.ipynb"))]:
            write(refresh(read(path), path), path)
    elif cmd == "compile":
        import IPython

        colab = "--colab" in argv[1:]
        paths = [Path(p).resolve() for p in argv[1:] if p != "--colab"] or [
            *lessons(), *sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))]
        errors = compile_errors(paths, colab=colab)
        for line in errors:
            print(line)
        verdict = f"{len(errors)} code cells fail" if errors else "all code cells compile"
        rules = ", with Colab's IPython 7.34 rules" if colab else ""
        print(f"{verdict} in {len(paths)} notebooks "
              f"(IPython {IPython.__version__}, Python {sys.version.split()[0]}{rules})")
        return 1 if errors else 0
    elif cmd == "map":
        for path in write_map():
            print(f"wrote {path.relative_to(ROOT)}")
        print(f"{'lesson':<30}{'cells':>6}{'words':>7}{'code':>6}{'exerc.':>7}{'estimate':>10}"
              f"{'map':>6}")
        for lesson in course.LESSONS:
            path = NOTEBOOKS / f"{lesson.stem}.ipynb"
            if not path.is_file():
                print(f"{lesson.stem:<30}  (planned: no notebook yet){'':>15}{lesson.minutes:>6}")
                continue
            s = size(path)
            print(f"{lesson.stem:<30}{s['cells']:>6}{s['words']:>7}{s['code_cells']:>6}"
                  f"{s['exercises']:>7}{estimate_minutes(path):>7} min{lesson.minutes:>6}")
    elif cmd == "check":
        sys.path.insert(0, str(ROOT))
        import pytest
        return pytest.main(["-q", str(ROOT / "tests" / "test_course.py")])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
