"""Which layers `docker build` reruns after some files change, and which come from the cache: a
COPY rebuilds when it takes in a changed file that .dockerignore lets into the context, and every
step after it follows."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab_code.dockerfile.ignore import DockerIgnore, clean_path, glob_regex
from lab_code.dockerfile.steps import FILESYSTEM, Step


def source_matches(source: str, path: str) -> bool:
    """Whether the COPY/ADD source `source` (a path or a Go-style pattern, from the context root)
    takes in `path`: the path itself, or a folder that contains it."""
    source = clean_path(source)
    if source == ".":
        return True
    regex = re.compile(glob_regex(source, double_star=False))
    parts = clean_path(path).split("/")
    return any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1))


def _is_remote(source: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://|^git@", source))


def copied_files(step: Step, files: Iterable[str]) -> list[str]:
    """Of the context's `files`, those that the COPY/ADD `step` copies (none for --from)."""
    if "from" in step.flags:
        return []
    local = [s for s in step.sources if not _is_remote(s)]
    return [f for f in files if any(source_matches(s, f) for s in local)]


@dataclass
class RebuildPlan:
    """What `docker build` reruns after some files change (the rest comes from the cache)."""

    steps: list[Step]
    changed: list[str]  # the changed paths, relative to the context root
    outside: list[str]  # of those, the ones not in the build context (.dockerignore, or ../)
    triggers: dict[int, list[str]]  # step number -> changed paths it copies
    rebuilt: list[Step]

    @property
    def first(self) -> Step | None:
        """The first step whose cache the change invalidates, or None."""
        return self.rebuilt[0] if self.rebuilt else None

    @property
    def cached(self) -> list[Step]:
        numbers = {s.number for s in self.rebuilt}
        return [s for s in self.steps if s.number not in numbers]

    @property
    def rebuilt_layers(self) -> list[Step]:
        """The rebuilt steps that make filesystem layers (the costly ones)."""
        return [s for s in self.rebuilt if s.layer == FILESYSTEM]

    def summary(self) -> str:
        """One or two sentences that say what rebuilds and why."""
        if self.outside:
            note = (f" Not in the build context, so they change nothing: "
                    f"{', '.join(self.outside)}.")
        else:
            note = ""
        if not self.first:
            return f"Nothing rebuilds: every step comes from the cache.{note}"
        first = self.first
        files = ", ".join(self.triggers.get(first.number, []))
        why = f"it copies {files}" if files else "a build stage it uses rebuilt"
        after, layers = len(self.rebuilt) - 1, len(self.rebuilt_layers)
        made = ("1 of them makes a filesystem layer" if layers == 1
                else f"{layers} of them make filesystem layers")
        return (f"Step {first.number} (line {first.line}, {first.instruction}) is the first to "
                f"rebuild, because {why}; it and the {after} step{'s' * (after != 1)} after it "
                f"rerun, and {made}.{note}")


def _relative_to_context(path: str, context: Path) -> str | None:
    """A changed path as the builder sees it (relative to the context root), or None if the
    path lies outside the context."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(context.resolve())
        except ValueError:
            return None
    rel = posixpath.normpath(p.as_posix())
    return None if rel == ".." or rel.startswith("../") else rel


def _stage_names(steps: Sequence[Step]) -> dict[str, int]:
    names = {}
    for step in steps:
        if step.instruction == "FROM" and len(step.words) >= 3 and step.words[1].upper() == "AS":
            names[step.words[2].lower()] = step.stage
    return names


def _stage_ref(ref: str, names: dict[str, int]) -> int | None:
    if ref.lower() in names:
        return names[ref.lower()]
    return int(ref) if ref.isdigit() else None


def rebuild_plan(steps: Sequence[Step], changed: Iterable[str], context: str | os.PathLike = ".",
                 ignore: DockerIgnore | None = None) -> RebuildPlan:
    """Which steps `docker build` reruns after the files `changed` (paths relative to the
    context, or absolute) were edited, added or deleted. A COPY/ADD step rebuilds when it copies a
    changed file that .dockerignore lets into the context; every later step of the same stage
    follows, and so does any stage that builds FROM it or COPY --from it."""
    context = Path(context)
    ignore = ignore if ignore is not None else DockerIgnore.for_build(context)
    rels = [(str(path), _relative_to_context(str(path), context)) for path in changed]
    outside = [rel or p for p, rel in rels if rel is None or ignore.excludes(rel)]
    inside = [rel for _, rel in rels if rel is not None and not ignore.excludes(rel)]
    names, dirty_stages = _stage_names(steps), set()
    triggers: dict[int, list[str]] = {}
    rebuilt, dirty = [], False
    for step in steps:
        if step.instruction == "FROM":
            ref = _stage_ref(step.words[0], names) if step.words else None
            dirty = ref is not None and ref in dirty_stages
        elif step.instruction in ("COPY", "ADD"):
            if "from" in step.flags:
                ref = _stage_ref(step.flags["from"], names)
                dirty = dirty or (ref is not None and ref in dirty_stages)
            hits = copied_files(step, inside)
            if hits:
                triggers[step.number] = hits
                dirty = True
        if dirty:
            rebuilt.append(step)
            dirty_stages.add(step.stage)
    return RebuildPlan(list(steps), [r or p for p, r in rels], outside, triggers, rebuilt)

