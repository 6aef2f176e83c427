"""Course hygiene and conventions: notebooks stripped and uniform, the tools/nb.py conventions
(badge, setup cell, objectives, exercises, recap, solutions in sync, one deck per lesson), no
machine paths and no secrets in any file, and a setup cell that is safe outside and inside Colab.

`python tools/nb.py check` runs this file. New lessons are picked up without editing it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from fnmatch import fnmatch
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_nb_tool():
    spec = importlib.util.spec_from_file_location("course_nb_tool", ROOT / "tools" / "nb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nb = _load_nb_tool()
LESSONS = nb.lessons()
NOTEBOOKS = LESSONS + sorted((ROOT / "solutions").glob("*.ipynb"))
DECKS = sorted((ROOT / "slides").glob("[0-9][0-9]_*.md"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def repo_files() -> list[Path]:
    """Tracked files plus untracked ones git does not ignore (works before the first commit)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return sorted(p for p in {ROOT / name for name in out.split("\0") if name} if p.is_file())


def text_files() -> list[tuple[Path, str]]:
    out = []
    for path in repo_files():
        try:
            out.append((path, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue  # binary (the model file, images)
    return out


def normalized(node: nbformat.NotebookNode, tmp_path: Path) -> str:
    """The text tools/nb.py writes for this notebook (stripped, uniform metadata)."""
    out = tmp_path / "normalized.ipynb"
    nb.write(node, out)
    return out.read_text()


# --- notebooks are stripped and uniform ----------------------------------------------------------

def test_every_lesson_has_a_deck_and_every_deck_a_lesson():
    lesson_numbers = {p.name[:2] for p in LESSONS}
    deck_numbers = {p.name[:2] for p in DECKS}
    assert lesson_numbers, "no lessons in notebooks/ yet (python tools/nb.py new NN_topic Title)"
    assert not lesson_numbers - deck_numbers, (
        f"lessons without a deck: {sorted(lesson_numbers - deck_numbers)} (add slides/NN_topic.md)")
    assert not deck_numbers - lesson_numbers, (
        f"decks without a lesson: {sorted(deck_numbers - lesson_numbers)}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=rel)
def test_notebook_is_stripped_with_the_python3_kernel(path, tmp_path):
    node = nb.read(path)
    dirty = [i for i, c in enumerate(node.cells)
             if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{rel(path)}: cells {dirty} keep outputs: run `python tools/nb.py strip`"
    assert node.metadata.get("kernelspec") == nb.KERNEL, (
        f"{rel(path)}: kernelspec should be {nb.KERNEL}: run `python tools/nb.py strip`")
    assert path.read_text() == normalized(node, tmp_path), (
        f"{rel(path)} is not in the committed form (ids, metadata, format): "
        "run `python tools/nb.py strip`")


# --- lesson conventions --------------------------------------------------------------------------

@pytest.mark.parametrize("lesson", LESSONS, ids=rel)
def test_lesson_opens_with_title_badge_and_setup(lesson):
    cells = nb.read(lesson).cells
    assert cells[0].cell_type == "markdown" and cells[0].source.startswith("# "), (
        f"{rel(lesson)}: cell 0 should be the markdown title")
    assert nb.badge(lesson) in cells[0].source, (
        f"{rel(lesson)}: cell 0 needs the Colab badge for {nb.repo_url()} "
        "(python tools/nb.py new makes it)")
    setup = cells[1]
    assert setup.cell_type == "code" and "setup" in nb.tags(setup), (
        f"{rel(lesson)}: cell 1 should be the setup code cell, tagged 'setup'")
    assert setup.source == nb.setup_source(), (
        f"{rel(lesson)}: the setup cell differs from tools/nb.py setup_source(): copy it back")


@pytest.mark.parametrize("lesson", LESSONS, ids=rel)
def test_lesson_has_objectives_and_ends_with_a_recap(lesson):
    cells = nb.read(lesson).cells
    heads = [i for i, c in enumerate(cells)
             if c.cell_type == "markdown" and re.search(r"^#+\s*Learning objectives", c.source,
                                                         re.M | re.I)]
    assert heads and heads[0] <= 4, f"{rel(lesson)}: add '## Learning objectives' near the top"
    last = cells[-1]
    assert last.cell_type == "markdown" and re.match(r"#+\s*Recap", last.source, re.I), (
        f"{rel(lesson)}: the last cell should be the '## Recap' markdown cell")


@pytest.mark.parametrize("lesson", LESSONS, ids=rel)
def test_lesson_exercises_follow_the_convention(lesson):
    cells = nb.read(lesson).cells
    found = nb.exercises(nb.read(lesson))
    assert 2 <= len(found) <= 4, f"{rel(lesson)}: give 2-4 exercises, found {len(found)}"
    numbers = [n for n, _, _ in found]
    assert numbers == list(range(1, len(found) + 1)), (
        f"{rel(lesson)}: exercises should be numbered 1..{len(found)} ('### Exercise N: ...'), "
        f"found {numbers}")
    prompts = [i for i, c in enumerate(cells) if "exercise" in nb.tags(c)
               and c.cell_type == "markdown"]
    for i in prompts:
        stub = cells[i + 1] if i + 1 < len(cells) else None
        assert stub is not None and stub.cell_type == "code", (
            f"{rel(lesson)} cell {i}: an exercise prompt must be followed by its stub code cell")
        assert {"exercise", "raises-exception"} <= set(nb.tags(stub)), (
            f"{rel(lesson)} cell {i + 1}: tag the stub 'exercise' and 'raises-exception'")
        assert raises_not_implemented(stub.source), (
            f"{rel(lesson)} cell {i + 1}: the stub must raise NotImplementedError(hint)")


def raises_not_implemented(source: str) -> bool:
    """Does the stub contain `raise NotImplementedError(...)` (at the end, or in a function the
    cell then calls)?"""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython syntax (!, %): fall back to the text
        return bool(re.search(r"^\s*raise NotImplementedError\(", source, re.M))
    return any(isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
               and getattr(node.exc.func, "id", None) == "NotImplementedError"
               for node in ast.walk(tree))


@pytest.mark.parametrize("lesson", LESSONS, ids=rel)
def test_solutions_exist_and_are_in_sync(lesson, tmp_path):
    source = nb.SOLUTIONS / f"{lesson.stem}.py"
    assert source.is_file(), f"{rel(lesson)}: write its worked solutions in {rel(source)}"
    blocks = nb.solution_blocks(source)
    wanted = {f"exercise {n}" for n, _, _ in nb.exercises(nb.read(lesson))}
    have = {k for k in blocks if k.startswith("exercise")}
    assert have == wanted, (f"{rel(source)}: blocks {sorted(have)} should match the lesson's "
                            f"exercises {sorted(wanted)} ('# %% [exercise N]')")
    assert all(blocks[k].strip() not in ("", "...") for k in wanted), (
        f"{rel(source)}: some solution blocks are still empty")
    generated = nb.SOLUTIONS / lesson.name
    assert generated.is_file(), f"run `python tools/nb.py solutions` to write {rel(generated)}"
    assert generated.read_text() == normalized(nb.build_solution(lesson), tmp_path), (
        f"{rel(generated)} is out of date with {rel(source)} or the lesson: "
        "run `python tools/nb.py solutions`")


# --- the setup cell ------------------------------------------------------------------------------

SETUP_HARNESS = textwrap.dedent("""
    import json, os, subprocess, sys, types
    colab, lab_code_importable, clone_exists, source = json.loads(sys.argv[1])
    calls, chdirs = [], []
    subprocess.run = lambda cmd, *a, **k: calls.append(list(cmd))
    os.chdir = chdirs.append
    real_isdir = os.path.isdir
    os.path.isdir = lambda p: clone_exists if str(p).startswith("/content/") else real_isdir(p)
    if colab:
        sys.modules["google"] = types.ModuleType("google")
        sys.modules["google.colab"] = types.ModuleType("google.colab")
    if not lab_code_importable:
        sys.modules["lab_code"] = None  # import lab_code raises ImportError
    for _ in range(2):  # twice: the cell must be safe to run again
        exec(compile(source, "setup-cell", "exec"), {"__name__": "__main__"})
    print(json.dumps({"calls": calls, "chdirs": chdirs, "cwd": os.getcwd()}))
""")


def run_setup_cell(tmp_path: Path, colab: bool, importable: bool, clone_exists: bool) -> dict:
    arg = json.dumps([colab, importable, clone_exists, nb.setup_source()])
    done = subprocess.run([sys.executable, "-c", SETUP_HARNESS, arg], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_setup_cell_does_nothing_outside_colab(tmp_path):
    result = run_setup_cell(tmp_path, colab=False, importable=True, clone_exists=False)
    assert result["calls"] == [] and result["chdirs"] == []
    assert Path(result["cwd"]).resolve() == tmp_path.resolve()


def test_setup_cell_is_idempotent_on_colab(tmp_path):
    name = nb.repo_url().rstrip("/").rsplit("/", 1)[-1]
    result = run_setup_cell(tmp_path, colab=True, importable=True, clone_exists=True)
    assert result["calls"] == [], "with the course cloned and importable, nothing is installed"
    assert result["chdirs"] == [f"/content/{name}/notebooks"] * 2


def test_setup_cell_clones_and_installs_on_a_fresh_colab(tmp_path):
    result = run_setup_cell(tmp_path, colab=True, importable=False, clone_exists=False)
    clones = [c for c in result["calls"] if c[:2] == ["git", "clone"]]
    installs = [c for c in result["calls"] if "pip" in c and "install" in c]
    assert clones and clones[0][-2] == nb.repo_url()
    assert installs and installs[0][-1] == "..[course]"


# --- no machine paths, no secrets ----------------------------------------------------------------

# An absolute path of a particular machine: a home directory, this workspace, a temp file.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|home|Users)/[\w.-]+|(?<![\w.~-])/tmp/[\w.-]+")
# (file pattern, what may appear there, why)
ALLOWED_PATHS = [
    ("docker/*", re.compile(r"^/(tmp|home)/"), "inside an image: Lambda's writable /tmp, a user's "
                                                "home; not this machine"),
]


def test_no_absolute_paths_of_a_machine():
    found = []
    for path, text in text_files():
        if path == Path(__file__):
            continue  # this file names the patterns it looks for
        for m in MACHINE_PATH.finditer(text):
            allowed = any(fnmatch(rel(path), pattern) and ok.match(m.group())
                          for pattern, ok, _ in ALLOWED_PATHS)
            if not allowed:
                line = text.count("\n", 0, m.start()) + 1
                found.append(f"{rel(path)}:{line}: {m.group()}")
    assert not found, ("machine-specific paths (use relative paths, tmp_path or "
                       "tempfile.gettempdir()):\n" + "\n".join(found))


_ALNUM = "[A-Za-z0-9]"
SECRETS = {
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}\b", re.I),
    "ngrok authtoken": re.compile(rf"\b[0-9]{_ALNUM}{{25,28}}_{_ALNUM}{{20,22}}\b"),
    "NGROK_AUTHTOKEN with a value": re.compile(
        r"NGROK_AUTHTOKEN\s*[=:]\s*['\"]?(?![A-Z_]+\b|<|\$|\{|your|\.\.\.)[A-Za-z0-9_]{20,}"),
    "W&B API key (40 hex)": re.compile(r"(?<![0-9a-fA-F])[0-9a-f]{40}(?![0-9a-fA-F])"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
}


def secrets_in(text: str) -> list[str]:
    return [kind for kind, pattern in SECRETS.items() if pattern.search(text)]


def test_the_secret_patterns_catch_secrets():
    fake = {  # assembled here so this file holds no token-shaped strings itself
        "AWS access key id": "AKIA" + "Q" * 16,
        "ngrok authtoken": "2" + "a" * 26 + "_" + "b" * 21,
        "NGROK_AUTHTOKEN with a value": "NGROK_AUTHTOKEN=" + "x1" * 12,
        "W&B API key (40 hex)": "WANDB_API_KEY=" + "0123456789" * 4,
        "GitHub token": "ghp_" + "Z" * 36,
        "private key": "-----BEGIN " + "RSA PRIVATE KEY-----",
    }
    for kind, text in fake.items():
        assert kind in secrets_in(text), kind
    for harmless in ("NGROK_AUTHTOKEN=<your token>", "NGROK_AUTHTOKEN=$NGROK_AUTHTOKEN",
                     "export NGROK_AUTHTOKEN=YOUR_TOKEN", "sha256 " + "ab" * 32):
        assert not secrets_in(harmless), harmless


def test_no_secrets_in_the_repository():
    found = [f"{rel(path)}: {kind}" for path, text in text_files() for kind in secrets_in(text)]
    assert not found, "token-like secrets (remove them and rotate the key):\n" + "\n".join(found)


# --- claims about today's tools ------------------------------------------------------------------

# What ngrok's free plan no longer is (its docs, December 2026): every account has one assigned
# dev domain, <name>.ngrok-free.dev, that stays the same across agent restarts.
STALE_NGROK = re.compile(r"ngrok-free\.app|<random>\.ngrok|URLs? (?:\w+ )?changes?\b|"
                         r"URLs? change when|changes? (?:on|every time|when) .{0,20}restart",
                         re.I)


def lesson_05_texts() -> dict[str, str]:
    paths = [p for d in ("notebooks", "solutions", "slides") for p in (ROOT / d).glob("05_*")]
    texts = {rel(p): "\n".join(c.source for c in nb.read(p).cells) if p.suffix == ".ipynb"
             else p.read_text() for p in sorted(paths)}
    texts["README.md"] = (ROOT / "README.md").read_text()
    return texts


def test_no_file_says_the_free_ngrok_url_changes_on_restart():
    found = [f"{name}: {m.group(0)!r}" for name, text in lesson_05_texts().items()
             for m in STALE_NGROK.finditer(text)]
    assert not found, ("ngrok's free dev domain (*.ngrok-free.dev) stays the same across "
                       "restarts; random URLs are paid: " + "; ".join(found))
    assert STALE_NGROK.search("free URLs change when it restarts")  # the pattern still bites


def test_lesson_05_teaches_the_free_plan_as_it_is():
    lesson = lesson_05_texts()["notebooks/05_ngrok_tunnel.ipynb"]
    for fact in ("ngrok-free.dev", "stays the same when the agent restarts",
                 "ngrok-skip-browser-warning", "20,000 HTTP requests", "December 2026"):
        assert fact in lesson, f"lesson 05 should say {fact!r} (ngrok's free plan, checked)"
    solution = nb.solution_blocks(ROOT / "solutions" / "05_ngrok_tunnel.py")["exercise 3"]
    assert "ngrok-skip-browser-warning" in solution and "same URL" in solution


def test_lesson_05_never_prints_the_password():
    """Outputs are saved with the notebook: a printed password is a published password."""
    lesson = nb.read(ROOT / "notebooks" / "05_ngrok_tunnel.ipynb")
    for i, cell in enumerate(lesson.cells):
        if cell.cell_type == "code":
            printed = re.findall(r"print\(.*(?:\{password\}|[,+(]\s*password\b)", cell.source)
            assert not printed, f"lesson 05 cell {i} prints the password: {printed}"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The tensor attributes .* were assigned during export")
def test_a_dynamic_width_still_fails_on_another_width_with_a_guard_message():
    """Deck 01 once claimed `{3: Dim.AUTO}` makes one .pt2 take any line length; run, it exports
    but a wider line fails with `Guard failed: ...`. The lesson prints that message."""
    import torch
    from torch.export import Dim

    from lab_code.training import export
    from lab_code.training.model import LogitsOnly
    from lab_code.training.train import load_checkpoint

    model, _ = load_checkpoint(ROOT / "models" / "text_recognizer_checkpoint.pt")
    batch = export.fit_width(export.example_batch(2)[0], 96)
    program = torch.export.export(LogitsOnly(model.eval()), (batch,),
                                  dynamic_shapes={"images": {0: Dim.AUTO, 3: Dim.AUTO}}).module()
    with pytest.raises(Exception, match="Guard failed: images.size"):
        program(export.fit_width(batch, 160))
    deck = (ROOT / "slides" / "01_torchscript.md").read_text()
    assert not re.search(r"3: Dim\.AUTO", deck), "deck 01 declares the width dynamic again"
    lesson = "\n".join(c.source for c in nb.read(ROOT / "notebooks" / "01_torchscript.ipynb").cells)
    assert 'str(err).splitlines()[0])' in lesson, "lesson 01 should print the guard message"


def test_no_lesson_calls_the_bundled_model_a_placeholder():
    """The bundled model is trained (its model card is in the README)."""
    found = [rel(p) for p in NOTEBOOKS + DECKS
             if re.search(r"untrained placeholder|bundled placeholder", p.read_text(), re.I)]
    assert not found, found


def test_every_lambda_build_command_has_the_flags_lambda_needs():
    """Lambda takes a linux/amd64 image with no provenance attestation (lesson 04)."""
    sources = [*DECKS, *nb.lessons(), ROOT / "README.md", ROOT / "docker" / "README.md"]
    for path in sources:
        text = path.read_text().replace("\\\\\n", " ").replace("\\\n", " ")
        pattern = r"docker (?:buildx )?build[^\n`\"]*lambda\.Dockerfile[^\n`\"]*"
        for line in re.findall(pattern, text):
            assert "--platform linux/amd64" in line and "--provenance=false" in line, (
                f"{rel(path)}: {line.strip()}")


# What starts something that keeps running, and what stops it, counted in pairs.
START_STOP = [(r"\.launch\(", r"\.close\(\)"), (r"start_background\(", r"stop_background\("),
              (r"open_tunnel\(", r"close_tunnel\(")]


@pytest.mark.parametrize("lesson", LESSONS, ids=rel)
def test_servers_stop_before_the_exercises(lesson):
    """"Run all" halts at the first exercise: by then every server the lesson started is stopped."""
    cells = nb.read(lesson).cells
    first = next((i for i, c in enumerate(cells) if "exercise" in nb.tags(c)), len(cells))
    body = "\n".join(c.source for c in cells[:first] if c.cell_type == "code")
    for start, stop in START_STOP:
        started, stopped = len(re.findall(start, body)), len(re.findall(stop, body))
        assert stopped >= started, (f"{rel(lesson)}: {started} x {start} but {stopped} x {stop} "
                                    "before the exercises: stop servers before them")


# --- the course map (lab_code/course.py) ----------------------------------------------------------

from lab_code import course  # noqa: E402

MAPPED = [lesson for lesson in course.LESSONS if not lesson.planned]
# Lessons whose estimate is over MAX_MINUTES today, each with why; cutting one to size makes its
# strict xfail an XPASS, which fails the suite: then delete its line here.
OVER_LONG: dict[str, str] = {}


def slides_tool():
    spec = importlib.util.spec_from_file_location("course_slides", ROOT / "tools" / "slides.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_map_lists_every_lesson_once_in_order():
    numbers = [lesson.number for lesson in course.LESSONS]
    assert numbers == [f"{i:02d}" for i in range(len(numbers))], (
        f"lab_code/course.py: lessons should be numbered 00, 01, ... in order, not {numbers}")
    on_disk = {p.stem for p in LESSONS}
    listed = {lesson.stem for lesson in MAPPED}
    assert not on_disk - listed, (f"notebooks missing from lab_code/course.py: "
                                  f"{sorted(on_disk - listed)} (add an entry to LESSONS)")
    assert not listed - on_disk, (f"lab_code/course.py lists lessons without a notebook: "
                                  f"{sorted(listed - on_disk)} (write it, or mark planned=True)")
    early = [lesson.stem for lesson in course.LESSONS if lesson.planned
             and (ROOT / "notebooks" / f"{lesson.stem}.ipynb").exists()]
    assert not early, f"these lessons exist now: drop planned=True in lab_code/course.py: {early}"


@pytest.mark.parametrize("lesson", MAPPED, ids=lambda lesson: lesson.stem)
def test_each_lesson_matches_its_map_entry(lesson):
    notebook = ROOT / "notebooks" / f"{lesson.stem}.ipynb"
    title = nb.read(notebook).cells[0].source.splitlines()[0]
    assert title == f"# Lesson {lesson.number}: {lesson.title}", (
        f"{rel(notebook)}: its title {title!r} differs from lab_code/course.py")
    deck = ROOT / "slides" / f"{lesson.stem}.md"
    assert deck.is_file(), f"write the deck {rel(deck)}"
    header = deck.read_text().split("\n---\n", 1)[0]
    assert f"title: Lesson {lesson.number} · {lesson.name}\n" in header + "\n", (
        f"{rel(deck)}: its front matter should say `title: Lesson {lesson.number} · "
        f"{lesson.name}` (lab_code/course.py)")
    assert (nb.SOLUTIONS / f"{lesson.stem}.py").is_file()
    assert slides_tool().box_corners(lesson.number), (
        f"lesson {lesson.number} has no box in the pipeline diagram: add one to PIPELINE (or "
        "REVISITS) in lab_code/course.py, then run `python tools/nb.py map`")


def map_copies() -> dict[str, tuple[str, str]]:
    """Each copy of the map: where -> (the text there now, the text the map makes)."""
    readme = (ROOT / "README.md").read_text()
    cell = nb.lesson_00_cell(nb.read(ROOT / "notebooks" / "00_overview.ipynb")).source
    return {
        "README.md": (readme, nb.with_block(readme, nb.map_block(links=True, diagram=False),
                                            "README.md")),
        "notebooks/00_overview.ipynb": (cell, nb.with_block(
            cell, nb.map_block(links=False, diagram=True), "lesson 00")),
    }


def test_the_maps_copies_are_current():
    stale = [where for where, (now, made) in map_copies().items() if now != made]
    assert not stale, f"{stale} differ from lab_code/course.py: run `python tools/nb.py map`"


def test_a_stale_copy_is_caught():
    readme, made = map_copies()["README.md"]
    first = course.LESSONS[1]
    changed = readme.replace(f"| {first.minutes} min |", f"| {first.minutes + 5} min |", 1)
    assert changed != readme
    assert nb.with_block(changed, nb.map_block(links=True, diagram=False), "README") != changed


@pytest.mark.parametrize("lesson", MAPPED, ids=lambda lesson: lesson.stem)
def test_a_lessons_time_follows_its_notebook(lesson):
    """The map's time stays within 10 minutes of the estimate that `tools/nb.py map` prints."""
    estimate = nb.estimate_minutes(ROOT / "notebooks" / f"{lesson.stem}.ipynb")
    assert abs(lesson.minutes - estimate) <= 10, (
        f"lesson {lesson.number} now takes about {estimate} min, the map says {lesson.minutes}: "
        "update lab_code/course.py and run `python tools/nb.py map`")


@pytest.mark.parametrize("lesson", [
    pytest.param(lesson, marks=pytest.mark.xfail(strict=True, reason=OVER_LONG[lesson.number]))
    if lesson.number in OVER_LONG else lesson for lesson in MAPPED],
    ids=lambda lesson: lesson.stem)
def test_no_lesson_runs_longer_than_90_minutes(lesson):
    estimate = nb.estimate_minutes(ROOT / "notebooks" / f"{lesson.stem}.ipynb")
    assert estimate <= nb.MAX_MINUTES, (
        f"lesson {lesson.number} takes about {estimate} min (`python tools/nb.py map`): cut it "
        "or split it (say each idea once; move what belongs to another lesson there)")


# --- every page the course starts carries its limits ---------------------------------------------

# A call of Gradio's own `.launch(` or `.queue(`: only `app.launch(...)` (lab_code.serving.app's
# helper, which adds the upload cap and the bounded queue) may start a page.
LAUNCH = re.compile(r"([\w)\]]+)\s*\.\s*(launch|queue)\s*\(")


def other_launches(source: str) -> list[str]:
    return [m.group(0) for m in LAUNCH.finditer(source)
            if (m.group(1), m.group(2)) != ("app", "launch")]


def launching_sources() -> dict[str, str]:
    """Every place a learner reads or runs code that could start a page: notebooks and solutions
    (code cells), the solutions' sources, the decks' code blocks, and lab_code without the
    helper itself."""
    found = {}
    for path in NOTEBOOKS:
        for i, cell in enumerate(nb.read(path).cells):
            if cell.cell_type == "code":
                found[f"{rel(path)} cell {i}"] = cell.source
    for path in sorted((ROOT / "solutions").glob("*.py")):
        found[rel(path)] = path.read_text()
    fence = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
    for path in DECKS:
        found[rel(path)] = "\n".join(fence.findall(path.read_text()))
    helper = ROOT / "lab_code" / "serving" / "app.py"
    for path in sorted((ROOT / "lab_code").rglob("*.py")):
        text = path.read_text()
        if path == helper:
            tree = ast.parse(text)  # the helper and the Gradio call behind it
            for own in [n for n in tree.body if isinstance(n, ast.FunctionDef)
                        and n.name in ("launch", "launch_gradio")]:
                text = text.replace(ast.get_source_segment(text, own), "")
        found[rel(path)] = text
    return found


def test_every_page_is_launched_with_its_limits():
    offenders = [f"{where}: {call}" for where, source in launching_sources().items()
                 for call in other_launches(source)]
    assert not offenders, ("start Gradio pages with `app.launch(demo, ...)` "
                           "(lab_code.serving.app), which adds the upload cap and the bounded "
                           "queue:\n" + "\n".join(offenders))


def test_the_launch_check_bites():
    assert other_launches('demo.launch(server_name="127.0.0.1")')
    assert other_launches("gr.Interface(fn, 'image', 'text').launch(share=True)")
    assert other_launches("demo.queue(max_size=None)")
    assert not other_launches("url, _ = app.launch(demo, auth=(user, password))")
    sources = launching_sources()
    assert any("app.launch(" in s for w, s in sources.items() if w.startswith("notebooks/05"))


def test_the_pages_limits_are_quoted_as_they_are():
    """Decks quote app.launch's limits in numbers: they must be the app's."""
    from lab_code.serving import app

    quoted = re.compile(r"(\d+) MB\s+upload cap, (\d+) predictions at once,? (\d+) waiting")
    found = [(rel(path), m.groups()) for path in DECKS
             for m in quoted.finditer(path.read_text())]
    assert found, "the decks no longer quote the page's limits (a test guards the numbers)"
    wanted = (str(app.MAX_UPLOAD_MB), str(app.CONCURRENCY), str(app.QUEUE_SIZE))
    wrong = [f"{where}: {numbers}" for where, numbers in found if numbers != wanted]
    assert not wrong, f"the page's limits are {wanted}: " + "; ".join(wrong)

# --- AWS facts (AWS's Lambda documentation, read 2026-12-03) -------------------------------------

def aws_chunks() -> dict[str, str]:
    """Units of prose a reader takes in at once: markdown cells, slides, README sections."""
    chunks = {}
    for path in LESSONS:
        for i, cell in enumerate(nb.read(path).cells):
            if cell.cell_type == "markdown":
                chunks[f"{rel(path)} cell {i}"] = cell.source
    for path in DECKS:
        for i, slide in enumerate(path.read_text().split("\n---\n")):
            chunks[f"{rel(path)} slide {i}"] = slide
    for path in (ROOT / "README.md", ROOT / "docker" / "README.md",
                 ROOT / "profiling" / "README.md"):
        for i, section in enumerate(re.split(r"\n(?=## )", path.read_text())):
            chunks[f"{rel(path)} section {i}"] = section
    return chunks


LAMBDA_KIND = re.compile(r"CPU only|one request (?:per|each)|one request at a time", re.I)
LAMBDA_LIMIT = re.compile(r"(?<![\d.,])(?:6 MB|15 minutes|10,240 MB|1,769 MB|"
                          r"1,000 (?:environments|concurrent))", re.I)
DATED = re.compile(r"\b20\d\d-\d\d-\d\d\b|\b(?:January|February|March|April|May|June|July|"
                   r"August|September|October|November|December) 20\d\d\b")


def lambda_problems(chunks: dict[str, str]) -> list[str]:
    problems = []
    for where, text in chunks.items():
        if "lambda" not in text.lower():
            continue
        if re.search(r"own account", text, re.I):
            problems.append(f"{where}: Lambda may pull an image from another account's ECR "
                            "repository in the same Region")
        if LAMBDA_KIND.search(text) and not re.search(r"default|Managed Instances", text):
            problems.append(f"{where}: say which kind of function (a default one; Managed "
                            f"Instances differ): {LAMBDA_KIND.search(text).group(0)!r}")
        if re.search(r"1,000 (?:environments|concurrent)", text) and "new account" not in text:
            problems.append(f"{where}: quote the default concurrency with new accounts' "
                            "lower quota")
        if LAMBDA_LIMIT.search(text) and not DATED.search(text):
            problems.append(f"{where}: date the limit {LAMBDA_LIMIT.search(text).group(0)!r}")
    return problems


def test_lambda_facts_are_the_current_ones_and_dated():
    problems = lambda_problems(aws_chunks())
    assert not problems, "\n".join(problems)


def test_the_lambda_fact_check_bites():
    assert lambda_problems({"x": "Lambda pulls images only from ECR in its own account."})
    assert lambda_problems({"x": "Lambda is CPU only (AWS, read 2026-12-03)."})
    assert lambda_problems({"x": "Lambda: 1,000 concurrent executions (read 2026-12-03)."})
    assert lambda_problems({"x": "Lambda takes 6 MB payloads."})
    assert not lambda_problems({"x": "A default Lambda function is CPU only; its payloads are "
                                     "6 MB (AWS quotas page, read 2026-12-03)."})


def test_the_deploy_steps_create_the_role_and_grant_both_permissions():
    """docker/README.md's hand steps: an execution role, and both permissions for a public URL
    (since October 2025 a new Function URL needs lambda:InvokeFunctionUrl and
    lambda:InvokeFunction; with one of them it answers 403)."""
    text = (ROOT / "docker" / "README.md").read_text()
    assert "aws iam create-role" in text and "lambda.amazonaws.com" in text
    assert "aws iam attach-role-policy" in text and "AWSLambdaBasicExecutionRole" in text
    assert re.search(r"add-permission [^\n]*--action lambda:InvokeFunctionUrl [^\n]*"
                     r"--function-url-auth-type NONE", text)
    assert re.search(r"add-permission [^\n]*--action lambda:InvokeFunction [^\n]*"
                     r"--invoked-via-function-url", text)


# --- lesson 00's claims -------------------------------------------------------------------------

def lesson_00_cell(marker: str, kind: str) -> str:
    cells = [c.source for c in nb.read(ROOT / "notebooks" / "00_overview.ipynb").cells
             if c.cell_type == kind and marker in c.source]
    assert len(cells) == 1, f"lesson 00 should have one {kind} cell with {marker!r}"
    return cells[0]


def test_lesson_00_lists_the_package_without_loading_anything():
    """The listing reads docstrings from the files: no torch, no model, no module of lab_code."""
    cell = lesson_00_cell("ast.get_docstring", "code")
    probe = cell + textwrap.dedent("""
        import sys
        loaded = sorted(m for m in sys.modules if m.startswith(("torch", "gradio", "lab_code.")))
        print("LOADED", loaded[:4], len(loaded))
    """)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "lambda_function" in done.stdout and "recognizer" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "LOADED [] 0", done.stdout.splitlines()[-1]


@pytest.mark.slow
def test_lesson_00_font_claims_hold():
    """The first prediction's line: a font family training leaves out, at a size training draws."""
    import numpy as np

    from lab_code.training import data, fonts
    from lab_code.training.charset import CHARSET

    prose = lesson_00_cell("## A first prediction", "markdown")
    code = lesson_00_cell('"Deploying a model is a skill."', "code")
    assert not re.search(r"never been asked|never seen|never used", prose), (
        "lesson 00 may claim only what the cell prints: whether training used the font")
    assert "training leaves out" in prose and "fonts.held_out_fonts(CHARSET)" in code
    held, training = set(fonts.held_out_fonts(CHARSET)), set(data.fonts())
    assert not held & training, "a held-out font is in the training list"
    size = int(re.search(r"size, (\d+) pixels, is one that training draws", prose).group(1))
    assert f"size={size})" in code
    rng = np.random.default_rng(0)
    drawn = {data.Style.random(rng).size for _ in range(3000)}
    assert size in drawn, f"training draws sizes {min(drawn)}-{max(drawn)}, not {size}"


# --- timings in prose ----------------------------------------------------------------------------

# "20 ms with one thread and 7 seconds with two": a figure typed into prose drifts from the runs it
# came from. Lessons print such figures from a committed run in profiling/results instead.
THREAD_TIMING = re.compile(r"\b\d[\d.,]*\s*(?:ms|s|seconds?|milliseconds?)\b[^.|]{0,40}?"
                           r"\bwith (?:one|two|three|four|\d+)(?: torch)? threads?\b", re.I)


def thread_timings(chunks: dict[str, str]) -> list[str]:
    return [f"{where}: {m.group(0)!r}" for where, text in chunks.items()
            for m in THREAD_TIMING.finditer(text)]


def test_thread_timings_are_printed_from_committed_runs_not_typed():
    found = thread_timings(aws_chunks())
    assert not found, ("print these from a committed run in profiling/results (as lesson 07 "
                       "does), or drop them:\n" + "\n".join(found))
    old = ("the 95th percentile for the one-line image was\n20 ms with one thread and 7 "
           "**seconds** with two.")
    assert thread_timings({"old lesson 04": old.replace("**", "")})
