"""No drift: every command, flag, make target, port, URL route and relative link that the README,
the notebooks, the solutions, the slides, the other docs, the Makefile or the Dockerfiles show is
checked against the code, so the course cannot teach something that no longer works.

What is read: code (fenced blocks, inline `code`, notebook code cells, Makefile recipes,
Dockerfiles) for commands; code and prose for ports and routes; prose for links. Commands
written as Python argv lists (`[sys.executable, "-m", "lab_code.serving", "app", "--port", ...]`,
or a Dockerfile's exec form) count too. Placeholders (PORT, URL, <...>, $VAR, {var}, ...) are not
checked as values. New lessons, decks and modules are picked up without editing this file.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import functools
import importlib
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "node_modules", "build", "runs", "__pycache__", ".pytest_cache"}


# --- the documents ------------------------------------------------------------------------------

def repo_files() -> list[Path]:
    """Tracked files plus untracked ones git does not ignore (works before the first commit)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT, capture_output=True, check=True).stdout.decode()
        files = {ROOT / p for p in out.split("\0") if p}
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        files = {p for p in ROOT.rglob("*") if not SKIP_DIRS & set(p.relative_to(ROOT).parts)}
    return sorted(p for p in files if p.is_file())


@dataclass(frozen=True)
class Snippet:
    path: Path  # the file it came from
    where: str  # "README.md:12" or "notebooks/03_gradio_ui.ipynb cell 7"
    text: str
    code: bool  # code (commands live here) or prose (links live here)


FENCE = re.compile(r"^([ \t]*)(```+|~~~+)[^\n]*\n(.*?)^\1\2[ \t]*$", re.S | re.M)
INLINE = re.compile(r"(`+)(.+?)\1", re.S)


def markdown_snippets(path: Path, text: str, where: str) -> list[Snippet]:
    out: list[Snippet] = []

    def line_of(pos: int) -> str:
        return f"{where}:{text.count(chr(10), 0, pos) + 1}"

    prose = text
    for m in FENCE.finditer(text):
        out.append(Snippet(path, line_of(m.start()), m.group(3), True))
        prose = prose.replace(m.group(0), "\n" * m.group(0).count("\n"), 1)
    for m in INLINE.finditer(prose):
        out.append(Snippet(path, line_of(m.start()), m.group(2), True))
    out.append(Snippet(path, where, INLINE.sub(" ", prose), False))
    return out


def notebook_snippets(path: Path) -> list[Snippet]:
    out: list[Snippet] = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        where = f"{rel(path)} cell {i}"
        if cell["cell_type"] == "code":
            out.append(Snippet(path, where, src, True))
        elif cell["cell_type"] == "markdown":
            out += markdown_snippets(path, src, where)
    return out


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@functools.cache
def snippets() -> tuple[Snippet, ...]:
    out: list[Snippet] = []
    for path in repo_files():
        name = rel(path)
        if path.suffix == ".md":
            out += markdown_snippets(path, path.read_text(), name)
        elif path.suffix == ".ipynb" and path.parent.name in ("notebooks", "solutions"):
            out += notebook_snippets(path)
        elif name in ("Makefile", ".ci/run") or path.name.endswith("Dockerfile"):
            out.append(Snippet(path, name, path.read_text(), True))
    return tuple(out)


def code_text(s: Snippet) -> str:
    return re.sub(r"\\\n\s*", " ", s.text)  # join shell line continuations


# --- python -m lab_code.<module> commands -------------------------------------------------------

@dataclass(frozen=True)
class Command:
    target: str  # "lab_code.serving.app" or "tools/slides.py"
    args: tuple[str, ...]
    where: str


SHELL_CMD = re.compile(r"(?:python3?|%run)\s+-m\s+(lab_code(?:\.\w+)+)([^\n]*)")
TOOL_CMD = re.compile(r"python3?\s+(tools/[\w-]+\.py)([^\n]*)")
ARGV_CMD = re.compile(r"""["']-m["']\s*,\s*["'](lab_code(?:\.\w+)+)["']\s*((?:,[^\]\n]*)?)""")
# `python -m lab_code.serving app --port 7860` runs lab_code.serving.app (lab_code.commands)
SIDE_PACKAGES = ("lab_code.training", "lab_code.serving", "lab_code.measuring")


def resolved(target: str, args: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """A side's command as the module it runs: ("lab_code.serving", ("app", "--port", "1"))
    -> ("lab_code.serving.app", ("--port", "1")); anything else as it is."""
    if target in SIDE_PACKAGES and args and not args[0].startswith("-") \
            and not PLACEHOLDER.search(args[0]):
        return f"{target}.{args[0]}", args[1:]
    return target, args
SHELL_END = re.compile(r"`|\s#|\s\||\|\||&&|;|\s\d?>|\s&|\)\s*$|\"\s*\)|'\s*\)")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$|[<>${}]|\.\.\.|…|^<expr>$")


def shell_args(rest: str) -> tuple[str, ...]:
    rest = SHELL_END.split(rest, 1)[0]
    try:
        tokens = shlex.split(rest)
    except ValueError:
        tokens = rest.split()
    return tuple(t.strip("[]") for t in tokens if t.strip("[]"))


def argv_args(rest: str) -> tuple[str, ...]:
    """The items of a Python/JSON argv list after the module; non-literals become "<expr>"."""
    items = re.finditer(r""",\s*(?:"([^"]*)"|'([^']*)'|([^,\]]+))""", rest)
    return tuple(next((g for g in m.groups()[:2] if g is not None), "<expr>") for m in items)


@functools.cache
def commands() -> tuple[Command, ...]:
    found: list[Command] = []
    for s in snippets():
        if not s.code:
            continue
        text = code_text(s)
        for m in SHELL_CMD.finditer(text):
            found.append(Command(*resolved(m.group(1), shell_args(m.group(2))), s.where))
        for m in TOOL_CMD.finditer(text):
            found.append(Command(m.group(1), shell_args(m.group(2)), s.where))
        for m in ARGV_CMD.finditer(text):
            found.append(Command(*resolved(m.group(1), argv_args(m.group(2))), s.where))
    return tuple(dict.fromkeys(found))


def by_target(prefix: str) -> dict[str, list[Command]]:
    out: dict[str, list[Command]] = defaultdict(list)
    for c in commands():
        if c.target.startswith(prefix):
            out[c.target].append(c)
    return dict(sorted(out.items()))


MODULES = by_target("lab_code.")
TOOLS = by_target("tools/")


def placeholder(value: str) -> bool:
    return bool(PLACEHOLDER.search(value))


def _parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: p for a in subs for name, p in a.choices.items()}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: a for a in parser._actions for flag in a.option_strings}


def _check_value(flag: str, action: argparse.Action, value: str) -> str | None:
    if placeholder(value):
        return None
    for alternative in value.split("|"):  # `--wandb auto|online|off` shows the choices
        if action.choices is not None and alternative not in action.choices:
            return f"{flag} {alternative!r} is not one of {sorted(action.choices)}"
        if action.type in (int, float):
            try:
                action.type(alternative)
            except ValueError:
                return f"{flag} {alternative!r} is not a valid {action.type.__name__}"
    return None


def check_args(parser: argparse.ArgumentParser, args: tuple[str, ...]) -> list[str]:
    """Problems with `args` for this parser: unknown flags, and concrete values outside choices."""
    problems, i = [], 0
    options, subparsers = _options(parser), _parsers(parser)
    while i < len(args):
        token = args[i]
        if token.startswith("-") and len(token) > 1 and token != "--" and not token[1].isdigit():
            flag, has_value, value = token.partition("=")
            action = options.get(flag)
            if action is None:
                problems.append(f"{flag} is not an option of {parser.prog}")
            elif action.nargs != 0:
                values = [value] if has_value else []
                many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
                while not has_value and i + 1 < len(args) and not args[i + 1].startswith("-"):
                    i += 1
                    values.append(args[i])
                    if not many:
                        break
                problems += filter(None, (_check_value(flag, action, v) for v in values))
        elif token in subparsers:  # `tool sub --flag`: the subcommand's flags from here on
            parser = subparsers[token]
            options, subparsers = {**options, **_options(parser)}, _parsers(parser)
        i += 1
    return problems


# One subprocess runs `python -m MODULE --help` for every module the course shows (the same
# runpy machinery as `python -m`, so torch and gradio load once, not once per module) and
# describes each module's build_parser(), so this process never imports the modules itself.
PROBE = """
import argparse, contextlib, importlib, io, json, runpy, sys

def describe(parser):
    out = {"prog": parser.prog, "options": [], "subparsers": {}}
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            out["subparsers"] = {name: describe(p) for name, p in a.choices.items()}
        elif a.option_strings:
            ok = isinstance(a.default, (bool, int, float, str, type(None)))
            out["options"].append({
                "flags": a.option_strings, "nargs": a.nargs,
                "choices": None if a.choices is None else [str(c) for c in a.choices],
                "type": a.type.__name__ if a.type in (int, float) else None,
                "default": a.default if ok else str(a.default)})
    return out

result = {}
for name in sys.argv[1:]:
    entry, out = {}, io.StringIO()
    sys.argv = [name, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        entry["help_code"] = 0
    except SystemExit as stop:
        entry["help_code"] = stop.code if isinstance(stop.code, int) else int(bool(stop.code))
    except BaseException as err:
        entry["help_code"] = 1
        out.write(f"{type(err).__name__}: {err}")
    entry["help_output"] = out.getvalue()[-1500:]
    try:
        module = importlib.import_module(name)
        if hasattr(module, "build_parser"):
            entry["parser"] = describe(module.build_parser())
    except BaseException as err:
        entry["error"] = f"{type(err).__name__}: {err}"
    result[name] = entry
print("PROBE-JSON " + json.dumps(result))
"""


def _probe() -> dict[str, dict]:
    try:
        done = subprocess.run([sys.executable, "-c", PROBE, *MODULES], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("`python -m MODULE --help` took over 300 s for the course's modules")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("PROBE-JSON ")]
    assert lines, f"the module probe crashed:\n{done.stderr[-2000:]}"
    return json.loads(lines[-1].removeprefix("PROBE-JSON "))


def _rebuild(spec: dict, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """An argparse parser with the same options, choices and types as the described one."""
    parser = parser or argparse.ArgumentParser(prog=spec["prog"], add_help=False)
    types = {"int": int, "float": float}
    for o in spec["options"]:
        if o["nargs"] == 0:
            parser.add_argument(*o["flags"], action="store_true", default=o["default"])
            continue
        kwargs = {"nargs": o["nargs"]} if o["nargs"] is not None else {}
        parser.add_argument(*o["flags"], choices=o["choices"], type=types.get(o["type"]),
                            default=o["default"], **kwargs)
    if spec["subparsers"]:
        subs = parser.add_subparsers()
        for name, sub in spec["subparsers"].items():
            _rebuild(sub, subs.add_parser(name, prog=sub["prog"], add_help=False))
    return parser


def module_info(module: str) -> dict:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is shown in the course but {module.replace('.', '/')}.py does "
                    "not exist (yet): write the module or change the command.")
    info = help_futures()["probe"].result()[module]
    if "error" in info:
        pytest.fail(f"importing {module} failed: {info['error']}")
    return info


def module_parser(module: str) -> argparse.ArgumentParser:
    info = module_info(module)
    if "parser" not in info:
        pytest.fail(f"{module} has no build_parser(): every CLI module needs one.")
    return _rebuild(info["parser"])


def tool_module(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_tool", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as `python tools/x.py` has it: dataclasses look themselves up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def _run_help(argv: list[str]) -> tuple[int, str]:
    try:
        done = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return -1, "timed out after 120 s"
    return done.returncode, (done.stderr or done.stdout)[-1500:]


_HELP_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=3)


@functools.cache
def help_futures() -> dict[str, concurrent.futures.Future]:
    """The module probe and `python tools/X.py --help`: started once, in the background."""
    tools = {t: _HELP_POOL.submit(_run_help, [t]) for t in TOOLS if (ROOT / t).is_file()}
    return {"probe": _HELP_POOL.submit(_probe), **tools}


@pytest.fixture(scope="module", autouse=True)
def _start_help_runs():
    """Start the subprocesses before the first test, so they overlap with the other checks."""
    help_futures()
    yield
    _HELP_POOL.shutdown(wait=True, cancel_futures=True)


def _listing(cmds: list[Command]) -> str:
    return "\n".join(f"  {c.where}: {' '.join(c.args)}" for c in cmds[:5])


@pytest.mark.parametrize("module", [m for m in MODULES if m not in SIDE_PACKAGES])
def test_module_commands_match_the_parser(module):
    parser = module_parser(module)
    problems = [f"{c.where}: {p}" for c in MODULES[module] for p in check_args(parser, c.args)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module", list(MODULES))
def test_module_help_runs(module):
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is shown in the course but does not exist (yet):\n"
                    + _listing(MODULES[module]))
    info = module_info(module)
    code, output = info["help_code"], info["help_output"]
    assert code == 0, f"python -m {module} --help exited {code}:\n{output}"


@pytest.mark.parametrize("tool", list(TOOLS))
def test_tool_scripts_exist_and_match(tool):
    path = ROOT / tool
    assert path.is_file(), f"{tool} is shown but does not exist:\n{_listing(TOOLS[tool])}"
    code, output = help_futures()[tool].result()
    assert code == 0, f"python {tool} --help exited {code}:\n{output}"
    module = tool_module(tool)
    if hasattr(module, "build_parser"):
        parser = module.build_parser()
        problems = [f"{c.where}: {p}" for c in TOOLS[tool] for p in check_args(parser, c.args)]
        assert not problems, "\n".join(problems)


def test_the_flag_checker_can_fail():
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--mode", choices=["a", "b"])
    parser.add_argument("--n", type=int)
    parser.add_argument("--sizes", type=int, nargs="+")
    sub = parser.add_subparsers().add_parser("run")
    sub.add_argument("--fast", action="store_true")
    assert check_args(parser, ("--mode", "a", "--n", "3", "--sizes", "1", "16")) == []
    assert check_args(parser, ("--mode", "MODE", "--n", "N", "run", "--fast")) == []
    assert check_args(parser, ("--mode=a|b", "--sizes", "1", "x")) == [
        "--sizes 'x' is not a valid int"]
    assert len(check_args(parser, ("--mode", "c", "--nope", "--fast"))) == 3
    assert shell_args(" --port 7860 | tee log.txt  # comment") == ("--port", "7860")
    assert shell_args(" [--pdf auto|yes|no]`, then") == ("--pdf", "auto|yes|no")
    assert argv_args(', "--port", str(port), "--no-auth"') == ("--port", "<expr>", "--no-auth")


# --- make targets -------------------------------------------------------------------------------

MAKE_CMD = re.compile(
    r"(?:^|(?<=[\s`(;&|]))make\s+((?:-\S+\s+)*)((?:[A-Za-z_][\w.-]*(?:=\S*)?[ \t]*)+)", re.M)


def makefile() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))
    variables = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*[?:+]?=", text, re.M))
    return targets, variables


def make_invocations() -> list[tuple[str, list[str]]]:
    found = []
    for s in snippets():
        if not s.code:
            continue
        text = re.sub(r"(^|\s)#[^\n]*", r"\1", code_text(s))  # "# make sure..." is English
        for m in MAKE_CMD.finditer(text):
            found.append((s.where, m.group(2).split()))
    return found


def test_make_targets_exist():
    targets, variables = makefile()
    problems = []
    for where, words in make_invocations():
        for word in words:
            name, is_var, _ = word.partition("=")
            if is_var and name not in variables:
                problems.append(f"{where}: make variable {name} is not defined in the Makefile")
            elif not is_var and name not in targets:
                problems.append(f"{where}: `make {name}`: no such target in the Makefile")
    assert not problems, "\n".join(problems)


# --- ports ---------------------------------------------------------------------------------------

def _parser_default(module: str, flag: str):
    return _options(module_parser(module))[flag].default


def _docker_readme_maps(mapping: str) -> bool:
    readme = ROOT / "docker" / "README.md"
    return readme.is_file() and mapping in readme.read_text()


def _lambda_base_image() -> bool:
    dockerfile = ROOT / "docker" / "lambda.Dockerfile"
    return dockerfile.is_file() and "FROM public.ecr.aws/lambda/python" in dockerfile.read_text()


def _tensorboard_default() -> int:
    with warnings.catch_warnings():  # TensorBoard's vendored html5lib warns on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from tensorboard.plugins.core import core_plugin

    return core_plugin.DEFAULT_PORT


# port -> (where it is defined, a check that the definition still says so)
KNOWN_PORTS = {
    7860: ("lab_code.serving.app: default of --port (Gradio's own default too)",
           lambda: _parser_default("lab_code.serving.app", "--port") == 7860),
    8000: ("lab_code.serving.serverless: default of --port (the backend as a local HTTP service)",
           lambda: _parser_default("lab_code.serving.serverless", "--port") == 8000),
    8001: ("lab_code.serving.function_url: default of --port (the signed Function URL stand-in)",
           lambda: _parser_default("lab_code.serving.function_url", "--port") == 8001),
    6006: ("TensorBoard's default --port", lambda: _tensorboard_default() == 6006),
    9000: ("the Lambda emulator: `docker run -p 9000:8080` in docker/README.md",
           lambda: _docker_readme_maps("-p 9000:8080")),
    8080: ("the Lambda base image's runtime interface emulator (docker/lambda.Dockerfile)",
           _lambda_base_image),
}
LOCAL_PORT = re.compile(r"(?:127\.0\.0\.1|localhost|0\.0\.0\.0|\[::1\]):(\d{2,5})\b")
DOCKER_PUBLISH = re.compile(r"(?:-p|--publish)[ =](\d{2,5}):(\d{2,5})\b")
EXPOSE = re.compile(r"^\s*EXPOSE\s+(\d{2,5})", re.M)


@functools.cache
def ports_shown() -> dict[int, list[str]]:
    shown: dict[int, list[str]] = defaultdict(list)
    for s in snippets():
        text = code_text(s)
        numbers = LOCAL_PORT.findall(text) + [p for pair in DOCKER_PUBLISH.findall(text)
                                              for p in pair]
        if s.path.name.endswith("Dockerfile"):
            numbers += EXPOSE.findall(text)
        for n in numbers:
            shown[int(n)].append(s.where)
    return dict(shown)


def test_every_port_shown_is_known():
    unknown = {p: w[:3] for p, w in ports_shown().items() if p not in KNOWN_PORTS}
    assert not unknown, (f"ports shown but not in KNOWN_PORTS: {unknown}; add each with the "
                         "place that defines it, or use a port the course already defines")


@pytest.mark.parametrize("port", sorted(KNOWN_PORTS))
def test_known_port_still_matches_its_definition(port):
    where, check = KNOWN_PORTS[port]
    assert port in ports_shown(), f"KNOWN_PORTS lists {port} but nothing shows it: remove it"
    assert check(), f"port {port} is shown as {where}, but that is no longer what the code says"


# --- URL routes ----------------------------------------------------------------------------------

# route -> the test file that exercises it, and the lab_code function it goes through when the
# route is spelled there rather than in the test ("" when the test spells it out itself)
KNOWN_ROUTES = {
    "/gradio_api/call/predict": ("tests/test_app.py", ""),
    "/gradio_api/info": ("tests/test_app.py", ""),
    "/gradio_api/openapi.json": ("tests/test_app.py", ""),
    "/health": ("tests/test_serverless.py", ""),
    "/metrics": ("tests/test_watch.py", ""),
    "/2015-03-31/functions/function/invocations": ("tests/test_serverless.py", ""),
    "/data/plugin/pytorch_profiler/runs": ("tests/test_profiling.py",
                                           "lab_code.measuring.traces.tensorboard_runs"),
}
LOCAL_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost|0\.0\.0\.0)(?::\d+)?(/[^\s\"'`<>)\]},]*)")
BARE_ROUTE = re.compile(r"(?<![\w.])(/(?:gradio_api|2015-03-31|data/plugin)/[^\s\"'`<>)\]},]*)")


def normalize_route(route: str) -> str:
    route = re.split(r"[?#]", route, maxsplit=1)[0]
    parts = []
    for part in route.split("/"):
        if placeholder(part) or "%" in part:  # /gradio_api/call/predict/<event_id>
            break
        parts.append(part)
    return "/".join(parts).rstrip("/.")


@functools.cache
def routes_shown() -> dict[str, list[str]]:
    shown: dict[str, list[str]] = defaultdict(list)
    for s in snippets():
        for m in [*LOCAL_URL.finditer(s.text), *BARE_ROUTE.finditer(s.text)]:
            route = normalize_route(m.group(1))
            if route:
                shown[route].append(s.where)
    return dict(shown)


def test_every_route_shown_is_known():
    unknown = {r: w[:3] for r, w in routes_shown().items() if r not in KNOWN_ROUTES}
    assert not unknown, (f"URL routes shown but not in KNOWN_ROUTES: {unknown}; add each with "
                         "the test that exercises it")


@pytest.mark.parametrize("route", sorted(KNOWN_ROUTES))
def test_known_route_is_exercised_by_its_test(route):
    test_name, via = KNOWN_ROUTES[route]
    test_file = ROOT / test_name
    assert route in routes_shown(), f"KNOWN_ROUTES lists {route} but nothing shows it: remove it"
    assert test_file.is_file(), f"{test_name} (which should exercise {route}) is missing"
    if not via:
        assert route in test_file.read_text(), f"{test_name} never uses {route}"
        return
    module_name, function = via.rsplit(".", 1)
    assert re.search(rf"\b{function}\(", test_file.read_text()), f"{test_name} never calls {via}"
    assert route in function_source(module_name, function), f"{via} no longer requests {route}"


def function_source(module: str, function: str) -> str:
    """The source of a top-level function, read without importing its module."""
    path = ROOT / (module.replace(".", "/") + ".py")
    text = path.read_text()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return ast.get_source_segment(text, node) or ""
    pytest.fail(f"{module} has no function {function}()")


# --- relative links ------------------------------------------------------------------------------

MD_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)[\"']", re.I)


def test_relative_links_resolve():
    broken = []
    for s in snippets():
        if s.code:
            continue
        for target in MD_LINK.findall(s.text) + HTML_LINK.findall(s.text):
            if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^//", target, re.I):
                continue  # a URL, an anchor or a protocol-relative link
            path = unquote(re.split(r"[?#]", target, maxsplit=1)[0])
            if path and not (s.path.parent / path).exists():
                broken.append(f"{s.where}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(sorted(set(broken)))
