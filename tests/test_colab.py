"""The lessons as Colab runs them: every code cell parses under Colab's IPython (7.34 on Python
3.13), and the setup cell's Colab branch installs every library the lessons import.

The parsing check runs twice. Fast, in this environment, with Colab's rules
(`tools/nb.py compile --colab`); and in the Colab-like venv that `make colab-setup` builds
(COLAB_VENV, default .venv-colab), with IPython 7.34 itself, which also checks that the fast
rules still agree with it. Without that venv those checks are skipped locally and fail in CI
(CI=true), where `.ci/run` builds it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_TOOL = ROOT / "tools" / "nb.py"
COLAB_VENV = Path(os.environ.get("COLAB_VENV", ROOT / ".venv-colab"))
COLAB_IPYTHON = "7.34"


def _load_nb_tool():
    spec = importlib.util.spec_from_file_location("course_nb_tool", NB_TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nb = _load_nb_tool()
NOTEBOOKS = nb.lessons() + sorted(nb.SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))


def colab_python() -> Path:
    """The Colab-like venv's python, or a skip (a failure under CI) saying how to build it."""
    python = COLAB_VENV / "bin" / "python"
    if not python.is_file():
        reason = (f"no Colab-like venv at {COLAB_VENV}: run `make colab-setup` "
                  "(Python 3.13, IPython 7.34, torch 2.11)")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    return python


def compile_in_colab_venv(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(colab_python()), str(NB_TOOL), "compile", *map(str, paths)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_colab_venv_has_colab_versions():
    done = subprocess.run([str(colab_python()), "-c",
                           "import sys, IPython; print(sys.version_info[:2] >= (3, 12), "
                           "IPython.__version__)"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "7.34.0"], (
        f"{COLAB_VENV} should have Python 3.12+ and IPython {COLAB_IPYTHON}: "
        "delete it and run `make colab-setup`")


def test_the_colab_venv_imports_this_checkouts_lab_code_from_anywhere(tmp_path):
    """The notebooks run in notebooks/ and solutions/, where only the venv's install can find
    lab_code: a venv shared by several clones must point at this one, wherever Python starts."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # conftest sets one
    done = subprocess.run([str(colab_python()), "-c", "import lab_code; print(lab_code.__file__)"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    found = done.stdout.strip() or done.stderr.strip().splitlines()[-1]
    assert found == str(ROOT / "lab_code" / "__init__.py"), (
        f"{COLAB_VENV} imports lab_code as {found!r}, not from this checkout: "
        "run `make colab-setup` here")


def test_every_cell_compiles_under_colabs_ipython():
    done = compile_in_colab_venv()
    assert done.returncode == 0, (
        "cells Colab's IPython 7.34 cannot parse (keep `!cmd`/`%magic` at the top level of a "
        "cell, or use subprocess):\n" + done.stdout + done.stderr)


def test_the_compile_check_catches_a_shell_escape_in_a_block(tmp_path):
    """The property broken on purpose: an `!cmd` inside an `if` must be reported. (So is
    `x = !cmd` even at the top level: IPython 7.34 on Python 3.12+ leaves it untransformed.)"""
    bad = tmp_path / "bad.ipynb"
    good = nbformat.v4.new_code_cell("!echo hi\n%pwd")
    broken = nbformat.v4.new_code_cell("if True:\n    answer = !echo hi")
    nbformat.write(nbformat.v4.new_notebook(cells=[good, broken]), bad)
    done = compile_in_colab_venv(bad)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "bad.ipynb cell 1: SyntaxError" in done.stdout
    assert "cell 0" not in done.stdout


# The same question answered without the Colab-like venv, by `compile --colab`'s rules; and cells
# on which those rules were compared with IPython 7.34 on Python 3.13 (each either way).
CELLS_TO_COMPARE = [
    "!echo hi",
    "%pwd",
    "x = !echo hi",
    "x = %pwd",
    "if True:\n    !echo hi",
    "if True:\n    %pwd",
    "if True:\n    answer = !echo hi",
    "if True:\n    answer = %pwd",
    "for i in range(2):\n    !echo {i}",
    "def f():\n    !ls",
    "%%time\nx=1",
    "%time x = 1",
    "x?",
    "len??",
    "a = 1\n!ls -l | head",
    "!pip install -q x  # c",
    "x = (1,\n  2)\n!echo hi",
    "print(1) ; !echo",
    "y = 3\n%matplotlib inline",
    "%env A=1",
    "if x:\n    pass\n!echo ok",
    "s = '!not'",
    "x != 1",
    "f'{x!r}'",
    "try:\n    import foo\nexcept ImportError:\n    !pip install foo",
    "    !echo indented top",
    "x = %time 1",
    "files = !ls\nprint(files)",
    "%%bash\necho hi",
    "with open('f') as f:\n    %time f.read()",
    "a = b = !ls",
    "x: list = !ls",
    "x += !ls",
    "if x: !ls",
    "else_ = 1\nif a:\n    pass\nelse:\n    !ls",
    "x = 1 if y else !ls",
    "print(!ls)",
    "[!ls]",
    "x = [\n    1]\ny = !ls",
    "%%capture out\n!ls",
    "x = %%time",
    "def f():\n    x = %pwd\n    return x",
    "!ls\\\n -l",
    "x=!ls",
    "x =!ls",
    "x = ! ls",
    "lambda: !ls",
    "x = 1; y = !ls",
    "(x) = !ls",
    "x, y = !ls",
    "x[0] = !ls",
    "obj.attr = !ls",
    "x = \\\n  !ls",
    "assert x, !ls"
]


def test_every_cell_parses_under_colabs_rules_without_the_colab_venv():
    errors = nb.compile_errors(NOTEBOOKS, colab=True)
    assert not errors, ("cells Colab's IPython 7.34 cannot parse (keep `!cmd`/`%magic` at the "
                        "top level of a cell, never `x = !cmd`; or use subprocess):\n"
                        + "\n".join(errors))


def test_colabs_rules_catch_a_shell_assignment_that_ipython_9_accepts(tmp_path):
    bad = tmp_path / "bad.ipynb"
    cells = ["!echo hi\n%pwd", "if True:\n    answer = !echo hi", "answer = !echo hi",
             "if True:\n    !echo hi\n    here = %pwd"]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]),
                   bad)
    assert nb.compile_errors([bad]) == []  # this environment's IPython takes them all
    failing = [Path(line.split(":")[0]).name for line in nb.compile_errors([bad], colab=True)]
    assert failing == ["bad.ipynb cell 1", "bad.ipynb cell 2"]


def test_colabs_rules_agree_with_colabs_ipython(tmp_path):
    corpus = tmp_path / "corpus.ipynb"
    nbformat.write(nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(c) for c in CELLS_TO_COMPARE]), corpus)
    done = compile_in_colab_venv(corpus)
    assert done.returncode in (0, 1), done.stderr
    real = {line.split(":")[0] for line in done.stdout.splitlines() if " cell " in line}
    fast = {line.split(":")[0] for line in nb.compile_errors([corpus], colab=True)}
    assert fast == real, (f"`compile --colab` and IPython 7.34 disagree: only the fast rules "
                          f"fail {sorted(fast - real)}, only IPython 7.34 fails "
                          f"{sorted(real - fast)}")


# --- the setup cell installs what the lessons import ---------------------------------------

# What Colab has before the setup cell runs (FACTS.md) and that the course does not install.
COLAB_PREINSTALLED = {"ipython", "ipykernel", "torch", "numpy", "pytest", "requests"}
# Imported only in lines that say a learner needs `make setup` (the dev extra), never on Colab.
DEV_ONLY = {"nbval", "playwright"}


def imported_modules(source: str) -> set[str]:
    """Top-level names of the modules a cell imports (IPython syntax lines dropped)."""
    python = "\n".join(line for line in source.splitlines()
                       if not re.match(r"\s*[!%?]", line) and not line.rstrip().endswith("??"))
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def course_requirements() -> set[str]:
    """Distribution names the setup cell's `pip install -e ..[course]` asks for."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras, wanted, todo = project["optional-dependencies"], set(project["dependencies"]), [
        "course"]
    while todo:
        for req in extras[todo.pop()]:
            m = re.fullmatch(r"lab-code\[([\w,]+)\]", req)
            if m:
                todo += m.group(1).split(",")
            else:
                wanted.add(req)
    return {normalize(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0]) for req in wanted}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions_of(module: str) -> set[str]:
    return {normalize(d) for d in importlib.metadata.packages_distributions().get(module, [])}


def lesson_imports() -> dict[str, set[Path]]:
    found: dict[str, set[Path]] = {}
    for path in NOTEBOOKS:
        for cell in nb.read(path).cells:
            if cell.cell_type == "code":
                for name in imported_modules(cell.source):
                    found.setdefault(name, set()).add(path)
    return found


def test_the_import_scan_sees_imports():
    source = textwrap.dedent("""\
        import os, gradio as gr
        from torch.profiler import profile
        !pip list
        from . import nothing
    """)
    assert imported_modules(source) == {"os", "gradio", "torch"}


def test_the_setup_cell_installs_what_the_lessons_import():
    provided = course_requirements() | COLAB_PREINSTALLED
    missing = []
    for module, paths in sorted(lesson_imports().items()):
        if module in sys.stdlib_module_names or module in ("lab_code", "google"):
            continue
        dists = distributions_of(module)
        assert dists, f"{module} (imported by {sorted(p.name for p in paths)}) is not installed"
        if not dists & (provided | DEV_ONLY):
            missing.append(f"{module} ({', '.join(sorted(dists))}) in "
                           f"{', '.join(sorted(p.name for p in paths))}")
    assert not missing, ("the setup cell's `pip install -e ..[course]` does not install: "
                         + "; ".join(missing) + " (add them to an extra in pyproject.toml)")


def test_tqdm_bars_have_ipywidgets_on_colab():
    """Without ipywidgets tqdm.auto prints a red `TqdmWarning: IProgress not found`."""
    assert "ipywidgets" in course_requirements()


# --- lesson 00's environment check, as Colab sees it ------------------------------------------

def test_the_environment_check_asks_only_for_what_the_setup_cell_installs():
    from lab_code.measuring import environment

    provided = course_requirements() | COLAB_PREINSTALLED
    extra = [name for name in environment.LIBRARIES if normalize(name) not in provided]
    assert not extra, (f"lesson 00 reports {extra} as course libraries, but Colab's setup cell "
                       "does not install them: move them to TEST_TOOLS or to the course extra")


def test_the_environment_check_on_colab_gives_colab_advice():
    from lab_code.measuring import environment

    info = {"python": "3.13.15", "platform": "Linux", "colab": True, "cpu_threads": 2,
            "cuda": False, "gpu": None, "internet": True, "ngrok_token": False,
            "libraries": dict.fromkeys(environment.LIBRARIES, "1.0"),
            "test_tools": {"pytest": "8.4.2", "nbval": None}}
    text = environment.summary(info)
    assert "course libraries: all installed" in text
    assert "make setup" not in text, text
    assert "`pip install nbval`" in text
    info["libraries"]["gradio"] = None
    assert "missing gradio (re-run the setup cell" in environment.summary(info)
    info["colab"] = False
    assert "missing gradio (run `make setup`)" in environment.summary(info)
