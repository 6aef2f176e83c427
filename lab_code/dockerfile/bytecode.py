"""Bytecode in an image: whether a Dockerfile compiles its Python code at build time, doing that
step on a folder here, and counting what an import still compiles.

Python compiles each module's source to bytecode on import and caches it in `__pycache__/`. In
Lambda the function's folder is read-only (only /tmp is writable), so nothing can be cached: an
image without the step compiles its own code again on every cold start. The dependencies are
not affected, since pip compiles what it installs. `python -m compileall` in a RUN step moves
that work to `docker build`, once.

    step = compile_step(read_dockerfile("docker/lambda.Dockerfile"))
    run_compile_step(step, task_root)          # what the builder does, on a copy of the files
    compiled_on_import(task_root, "lab_code.serving.lambda_function")   # [] once it ran
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from lab_code.dockerfile.steps import Step, _substitute

COMPILE = ("python", "-m", "compileall")
TASK_ROOT_VARIABLE = "LAMBDA_TASK_ROOT"  # set by the Lambda base image: /var/task


def compile_step(steps: Sequence[Step]) -> Step | None:
    """The RUN step that runs `python -m compileall`, or None when the image compiles nothing."""
    return next((s for s in steps if s.instruction == "RUN" and tuple(s.words[:3]) == COMPILE),
                None)


def _filled(word: str, variables: dict[str, str]) -> str:
    """`word` with the base image's `variables` filled in (the steps' own substitution); a
    variable neither the Dockerfile nor `variables` defines is refused in one sentence."""
    filled = _substitute(word, variables)
    unknown = re.search(r"\$\{?(\w+)", filled)
    if unknown:
        raise ValueError(f"The compile step uses ${unknown.group(1)}, which only the base image "
                         f"defines: pass its value.")
    return filled


def run_compile_step(step: Step, task_root: str | os.PathLike, python: str = sys.executable,
                     timeout: float = 120.0) -> None:
    """Do what `step` (a `RUN python -m compileall ...`) does in the image, here, with the
    image's ${LAMBDA_TASK_ROOT} as `task_root` and `python` as the image's interpreter.

    Only that command runs, never a shell: a step that chains others (`&&`, `;`) is refused."""
    words = list(step.words)
    if tuple(words[:3]) != COMPILE or any(w in ("&&", "||", ";", "|") for w in words):
        raise ValueError(f"Line {step.line} is not a plain `python -m compileall` step: "
                         f"{step.value!r}")
    args = [_filled(w, {TASK_ROOT_VARIABLE: str(Path(task_root))})
            for w in (step.expanded or step.words)[1:]]  # the Dockerfile's own variables filled in
    done = subprocess.run([python, *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"The compile step of line {step.line} failed: {tail[0]}")


# A fresh interpreter, as a cold start has: an audit hook sees every source that `compile()`
# turns into bytecode (importing a module without a usable cached .pyc does exactly that).
_PROBE = """
import json, sys
root, module = sys.argv[1], sys.argv[2]
compiled = []
def hook(event, args):
    if event == "compile" and isinstance(args[1], str) and args[1].startswith(root):
        compiled.append(args[1][len(root):].lstrip("/"))
sys.addaudithook(hook)
__import__(module)
print("COMPILED " + json.dumps(sorted(set(compiled))))
"""


def compiled_on_import(task_root: str | os.PathLike, module: str,
                       timeout: float = 120.0) -> list[str]:
    """The files under `task_root` that importing `module` there compiles, in a fresh
    interpreter that writes no bytecode (a read-only folder, as in Lambda): [] when every one
    was compiled ahead, as the image's compile step does."""
    root = str(Path(task_root).resolve())
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MODEL_PATH")}
    full.update(PYTHONPATH=root, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-c", _PROBE, root, module], capture_output=True,
                          text=True, env=full, cwd=root, timeout=timeout)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("COMPILED ")]
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"Importing {module} from {root} failed: {tail[0]}")
    return json.loads(lines[-1].removeprefix("COMPILED "))
