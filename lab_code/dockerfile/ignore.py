""".dockerignore, applied the way `docker build` applies it: which files of a folder the build
context holds, and Docker's path patterns (Go's filepath.Match, plus `**`)."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def glob_regex(pattern: str, double_star: bool) -> str:
    """Docker's pattern syntax (Go's filepath.Match, plus `**` in .dockerignore) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*" and double_star and pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1  # `**/` is `**`
            out += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out += re.escape(ch)
            else:
                body = pattern[i + 1:end].replace("\\", "\\\\")
                out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
                i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(ch)
        i += 1
    return "^" + out + "$"


def clean_path(path: str) -> str:
    """Go's filepath.Clean, relative to the context root: `./a//b/` -> `a/b`, `/a` -> `a`."""
    cleaned = posixpath.normpath(path.replace(os.sep, "/")) if path else "."
    cleaned = cleaned.lstrip("/") or "."
    return cleaned


@dataclass(frozen=True)
class IgnoreRule:
    """One line of a .dockerignore file."""

    pattern: str  # cleaned, without the leading "!"
    negated: bool  # a "!" line: re-include what earlier lines excluded
    line: int
    regex: re.Pattern = field(compare=False, repr=False)

    def matches(self, path: str) -> bool:
        """Whether the pattern matches `path` or one of its parent folders."""
        parts = path.split("/")
        return any(self.regex.match("/".join(parts[:n])) for n in range(len(parts), 0, -1))

    def __str__(self) -> str:
        return ("!" if self.negated else "") + self.pattern


class DockerIgnore:
    """The rules of a .dockerignore file, applied the way `docker build` applies them: each
    pattern is matched against the path from the context root and against its parent folders,
    `*` and `?` stop at `/`, `**` spans folders, and the last matching line wins (so a `!` line
    re-includes what an earlier line excluded)."""

    def __init__(self, rules: Sequence[IgnoreRule] = (), source: str = "") -> None:
        self.rules, self.source = list(rules), source

    @classmethod
    def from_text(cls, text: str, source: str = "") -> DockerIgnore:
        rules = []
        for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
            if raw.startswith("#"):
                continue
            pattern = raw.strip()
            if not pattern:
                continue
            negated = pattern.startswith("!")
            if negated:
                pattern = pattern[1:].strip()
            pattern = clean_path(pattern)
            rules.append(IgnoreRule(pattern, negated, number,
                                    re.compile(glob_regex(pattern, double_star=True))))
        return cls(rules, source)

    @classmethod
    def for_build(cls, context: str | os.PathLike,
                  dockerfile: str | os.PathLike | None = None) -> DockerIgnore:
        """The ignore file BuildKit uses: `<Dockerfile>.dockerignore` beside the Dockerfile if
        there is one, else `.dockerignore` at the root of the context, else no rules."""
        candidates = [Path(str(dockerfile) + ".dockerignore")] if dockerfile else []
        candidates.append(Path(context) / ".dockerignore")
        for candidate in candidates:
            if candidate.is_file():
                return cls.from_text(candidate.read_text(encoding="utf-8"), str(candidate))
        return cls()

    def deciding_rule(self, path: str) -> IgnoreRule | None:
        """The last rule that matches `path` (the one that decides), or None."""
        path = clean_path(path)
        decided = None
        for rule in self.rules:
            if rule.matches(path):
                decided = rule
        return decided

    def excludes(self, path: str) -> bool:
        """Whether `path` (relative to the context root) stays out of the build context."""
        rule = self.deciding_rule(path)
        return rule is not None and not rule.negated

    def _may_reinclude_under(self, folder: str) -> bool:
        """Whether some `!` rule could re-include a file inside an excluded `folder`."""
        for rule in self.rules:
            if not rule.negated:
                continue
            literal = re.split(r"[*?\[\\]", rule.pattern, maxsplit=1)[0]
            if literal.startswith(folder + "/") or (folder + "/").startswith(literal):
                return True
        return False

    def context_files(self, context: str | os.PathLike) -> list[str]:
        """Every file `docker build` would send from `context`, as sorted slash paths."""
        root = Path(context)
        found = []
        for here, dirs, files in os.walk(root):
            rel = Path(here).relative_to(root).as_posix()
            prefix = "" if rel == "." else rel + "/"
            dirs[:] = sorted(d for d in dirs if not self.excludes(prefix + d)
                             or self._may_reinclude_under(prefix + d))
            found += [prefix + f for f in files if not self.excludes(prefix + f)]
        return sorted(found)

