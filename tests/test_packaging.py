"""Packaging stays consistent: pyproject, environment.yml, Makefile, CI and package data."""

import re
import subprocess
import tomllib
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


def test_bundled_model_ships_as_package_data():
    data = PYPROJECT["tool"]["setuptools"]["package-data"]["lab_code"]
    assert "artifacts/*" in data
    tracked = subprocess.run(["git", "ls-files", "lab_code/artifacts"], cwd=ROOT,
                             capture_output=True, text=True).stdout
    model = ROOT / "lab_code" / "artifacts" / "text_recognizer.pt"
    assert model.is_file() and model.stat().st_size <= 5 * 1024 * 1024
    assert tracked == "" or "text_recognizer.pt" in tracked
