"""The Dockerfile as the builder reads it: each instruction parsed into a step (flags, words,
variables filled in), explained in plain words with the kind of layer it makes, and the command
line the container's first process gets."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Sequence
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
# The ENTRYPOINT of well-known base images: a Dockerfile inherits it unless it sets its own.
BASE_ENTRYPOINTS = {"public.ecr.aws/lambda/": ("/lambda-entrypoint.sh",)}


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

