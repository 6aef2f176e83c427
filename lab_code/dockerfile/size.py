"""How big an image's own layers will be, estimated without a Docker engine: what its requirements
install (their whole dependency closure, sized from this environment's installed copies of the
same distributions), what its COPY steps take from the build context, and the bytecode a
`RUN python -m compileall` step adds for the copied code.

    python -m lab_code.dockerfile docker/lambda.Dockerfile --size

An estimate, and how it is made: the requirements files are those the Dockerfile copies in (a
COPY of a `requirements*.txt`); each pinned distribution and everything it depends on (read from
the installed metadata, with markers evaluated for the base image's Python) is sized by the files
pip recorded when it installed it here, .pyc files included. The copied code's bytecode is sized by
compiling those files here (bytecode is a few percent larger or smaller from one Python to the
next). The base image is not counted (its
size is the registry's to tell), nor are files pip writes on another platform only; a
distribution not installed here is listed as unknown.
"""

from __future__ import annotations

import py_compile
import re
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from lab_code.dockerfile.bytecode import compile_step
from lab_code.dockerfile.ignore import DockerIgnore
from lab_code.dockerfile.rebuild import copied_files
from lab_code.dockerfile.steps import Step

PYTHON_TAG = re.compile(r"python:(\d+\.\d+)")


def base_python(steps: list[Step]) -> str | None:
    """The base image's Python version when its tag says it (python:3.12-slim, .../python:3.12)."""
    for step in steps:
        if step.instruction == "FROM":
            match = PYTHON_TAG.search(step.words[0])
            return match.group(1) if match else None
    return None


def marker_env(python: str) -> dict[str, str]:
    """The environment markers (`python_version >= "3.13"`) are evaluated against."""
    return {"python_version": python, "python_full_version": f"{python}.0"}


def read_requirements(path: str | Path) -> list:
    """The requirements of a requirements file (options such as --extra-index-url skipped)."""
    from packaging.requirements import Requirement

    lines = [line.split(" #")[0].strip() for line in Path(path).read_text().splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith(("#", "-"))]


def closure(reqs: list, env: dict[str, str]) -> set[str]:
    """Every distribution that pip installs for `reqs` (from this environment's metadata), on
    the Python that `env` describes."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = [(r, "") for r in reqs]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({**env, "extra": extra}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            sub = Requirement(text)
            extras = ["", *sorted(req.extras)]
            ok = [e for e in extras if not sub.marker or sub.marker.evaluate({**env, "extra": e})]
            if ok:
                todo.append((sub, ok[0]))
    return seen


def installed_bytes(name: str) -> int | None:
    """Bytes of the files pip recorded for distribution `name` here (None: not installed)."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    return total


@dataclass
class SizeEstimate:
    requirements: list[str]  # the requirements files sized
    python: str  # the Python the markers were evaluated for
    distributions: dict[str, int] = field(default_factory=dict)  # name -> bytes, largest first
    unknown: list[str] = field(default_factory=list)  # in the closure, not installed here
    copied_bytes: int = 0  # what the COPY steps take from the build context
    compiled_bytes: int = 0  # the .pyc files a compileall step writes for the copied code

    @property
    def installed_bytes(self) -> int:
        return sum(self.distributions.values())

    def summary(self, top: int = 6) -> str:
        mb = 1e6
        largest = ", ".join(f"{n} {b / mb:.0f} MB" for n, b in
                            list(self.distributions.items())[:top])
        lines = [f"pip installs {len(self.distributions)} distributions from "
                 f"{', '.join(self.requirements)} (Python {self.python}): about "
                 f"{self.installed_bytes / mb:.0f} MB ({largest})",
                 f"COPY takes {self.copied_bytes / mb:.1f} MB from the build context",
                 *([f"compileall adds {self.compiled_bytes / mb:.1f} MB of bytecode"]
                   if self.compiled_bytes else []),
                 f"the image's own layers: about "
                 f"{(self.installed_bytes + self.copied_bytes + self.compiled_bytes) / mb:.0f} MB,"
                 " plus the base "
                 "image (not counted here)"]
        if self.unknown:
            lines.append(f"not installed here, so not counted: {', '.join(self.unknown)}")
        return "\n".join(lines)


def estimate(steps: list[Step], context: str | Path, python: str | None = None) -> SizeEstimate:
    """The size of what the Dockerfile's `steps` install and copy (see the module's note)."""
    context = Path(context)
    files = DockerIgnore.for_build(context).context_files(context)
    copies = [s for s in steps if s.instruction in ("COPY", "ADD") and "from" not in s.flags]
    req_files = [src for s in copies for src in s.sources
                 if Path(src).name.startswith("requirements") and src.endswith(".txt")]
    python = python or base_python(steps) or "3.12"
    env = marker_env(python)
    reqs = [r for path in req_files for r in read_requirements(context / path)]
    sizes, unknown = {}, []
    for name in sorted(closure(reqs, env)):
        size = installed_bytes(name)
        if size is None:
            unknown.append(name)
        else:
            sizes[name] = size
    copied = {rel for s in copies for rel in copied_files(s, files)}
    copied_bytes = sum((context / rel).stat().st_size for rel in copied)
    ordered = dict(sorted(sizes.items(), key=lambda kv: -kv[1]))
    return SizeEstimate(req_files, python, ordered, unknown, copied_bytes,
                        _compiled_bytes(steps, copies, files, context))


def _compiled_bytes(steps: list[Step], copies: list[Step], files: list[str],
                    context: Path) -> int:
    """The bytecode a `RUN python -m compileall FOLDER...` step writes: the .py files copied to
    a destination inside one of its folders, compiled here to a scratch folder and sized."""
    step = compile_step(steps)
    if step is None:
        return 0
    folders = [w.rstrip("/") for w in step.words[3:] if not w.startswith("-")]
    sources = sorted({rel for s in copies for rel in copied_files(s, files)
                      if rel.endswith(".py")
                      and any(s.destination.rstrip("/").startswith(f) for f in folders)})
    total = 0
    with tempfile.TemporaryDirectory() as scratch:
        for number, rel in enumerate(sources):
            out = Path(scratch) / f"{number}.pyc"
            try:
                py_compile.compile(str(context / rel), cfile=str(out), doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
            except py_compile.PyCompileError:
                continue  # the builder's compileall reports it; nothing is written
            total += out.stat().st_size
    return total
