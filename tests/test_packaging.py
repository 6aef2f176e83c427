"""Packaging stays consistent: pyproject, environment.yml, Makefile, CI and package data."""

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_python_and_torch_ranges():
    assert PYPROJECT["project"]["requires-python"] == ">=3.11,<3.14"
    torch_req = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch")]
    assert torch_req and "==" not in torch_req[0]  # a range: Colab keeps its own torch


def test_environment_yml_installs_the_package_and_the_same_torch_pin():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    makefile = (ROOT / "Makefile").read_text()
    pin = re.search(r"TORCH_SPEC \?= (\S+)", makefile).group(1)
    assert pin in pip
    extras = [p for p in pip if p.startswith("-e .[")]
    assert extras, "environment.yml must install the package itself"
    for extra in re.findall(r"\[(.*)\]", extras[0])[0].split(","):
        assert extra in PYPROJECT["project"]["optional-dependencies"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.split("=")[1] in ("3.11", "3.12", "3.13")


def test_makefile_targets_that_need_the_environment_make_it_first():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("app", "lab", "test", "model", "slides", "lint"):
        line = re.search(rf"^{target}:(.*)$", makefile, re.M).group(1)
        assert "setup" in line, target
    assert "TORCH_SPEC" in re.search(r"^\$\(STAMP\):.*?(?=^\S)", makefile, re.M | re.S).group(0)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme


def test_the_bundled_model_is_tracked_and_ships_in_the_wheel(tmp_path):
    """What ships is what a clone holds, built as pip builds it: the tracked package files (and
    only those) go into a wheel, which must carry the model and its manifest, byte for byte."""
    data = PYPROJECT["tool"]["setuptools"]["package-data"]["lab_code"]
    assert "artifacts/*" in data
    listed = subprocess.run(["git", "ls-files", "-z", "--", "lab_code", "pyproject.toml",
                             "README.md", "LICENSE"], cwd=ROOT, capture_output=True, text=True)
    assert listed.returncode == 0, f"not a git checkout: {listed.stderr.strip()}"
    tracked = [f for f in listed.stdout.split("\0") if f]
    model = "lab_code/artifacts/text_recognizer.pt"
    manifest = "lab_code/artifacts/manifest.json"
    missing = {model, manifest} - set(tracked)
    assert not missing, f"{sorted(missing)} not tracked: `git add` them, or a clone has no model"
    source = tmp_path / "clone"
    for rel in tracked:
        if (ROOT / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, source / rel)
    built = subprocess.run(
        [sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
         "print(b.build_wheel(sys.argv[1]))", str(tmp_path / "dist")],
        cwd=source, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = tmp_path / "dist" / built.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as zf:
        for rel in (model, manifest):
            assert zf.read(rel) == (ROOT / rel).read_bytes(), f"the wheel's {rel} differs"
    assert (ROOT / model).stat().st_size <= 5 * 1024 * 1024


def test_every_test_and_notebook_cell_has_a_time_limit():
    """pytest-timeout is installed where the tests run (the dev extra, the Colab-like venv) and
    set; a notebook cell may take as long as conftest lets a whole notebook take, not longer."""
    from conftest import NOTEBOOK_LIMIT_S

    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(d.startswith("pytest-timeout") for d in dev)
    settings = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert 0 < settings["timeout"] <= 600 and settings["timeout_method"] == "signal"
    makefile = (ROOT / "Makefile").read_text()
    assert "pytest-timeout" in re.search(r"^COLAB_PINS \?=(.*?)(?<!\\)$", makefile,
                                         re.M | re.S).group(1)
    cell = re.search(r"--nbval-cell-timeout=(\d+)", makefile)
    assert cell and int(cell.group(1)) == NOTEBOOK_LIMIT_S
    for target in ("test", "colab-test"):
        recipe = re.search(rf"^{target}:.*?(?=^\S)", makefile, re.M | re.S).group(0)
        assert "$(NBVAL)" in recipe, f"make {target} runs the notebooks without NBVAL's settings"


def test_the_mutation_check_stays_out_of_make_test():
    makefile = (ROOT / "Makefile").read_text()
    test = re.search(r"^test:.*?(?=^\S)", makefile, re.M | re.S).group(0)
    assert "mutate" not in test
    assert re.search(r"^mutate: setup", makefile, re.M)
