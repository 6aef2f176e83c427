"""The package's one-way flow, proved for every module: training -> files -> production.

A module's side is its folder: `lab_code/training/`, `lab_code/serving/`, `lab_code/measuring/`
and `lab_code/dockerfile/`, or the core (`lab_code/*.py`: the pixel contract, artifacts, images,
URL policy, the recognizer), which production needs and training shares. Each module is imported
in a fresh interpreter. A core or serving module must load no training or measuring module and no
matplotlib, and must leave every process-wide setting as it found it: environment variables,
torch's thread counts, logger levels and handlers, signal handlers, warnings filters. A training
module must load no serving or measuring module (only the core, which holds the contracts both
sides share). Measuring and the Dockerfile explainer look at both sides: no rule.

A new module gets its side from the folder it is put in; a new folder must be added to SIDES.

Importing proves only what runs at import: an import inside a function body shows when the
function runs. So each way of serving also answers one real request in a fresh interpreter (the
serverless app through its Lambda handler and over HTTP, the Lambda entry point, the Gradio UI
over HTTP, the batching server's API, the recognizer's command), and then the same rule is
checked on everything that process loaded.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lab_code

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "lab_code" / "assets" / "examples" / "line_sans.png"

CORE, SERVING, TRAINING = "core", "serving", "training"
MEASURING, DOCKER = "measuring", "dockerfile"
SIDES = (SERVING, TRAINING, MEASURING, DOCKER)  # lab_code's subpackages, one per side
# what each side must never load (its own folder's and the core's modules are always fine)
FORBIDDEN = {CORE: (SERVING, TRAINING, MEASURING), SERVING: (TRAINING, MEASURING),
             TRAINING: (SERVING, MEASURING)}
# What a module must do after its import, where importing alone would prove too little.
USE = {"recognizer": f"module.TextRecognizer().predict({str(EXAMPLE)!r})"}
# Modules that break the rule today, each with what it changes; fixing one makes its xfail an
# XPASS, which fails the suite (strict): then delete its line here.
KNOWN = {
    "serving.app": "sets GRADIO_ANALYTICS_ENABLED at import; and importing gradio sets the "
                   "huggingface_hub logger's level (import gradio where the UI is built)",
}
# Entry points whose import *is* the process set-up: Lambda's init phase imports this module to
# load the model and choose the threads once per cold start. They still load no training code.
ENTRY_POINTS = {"serving.lambda_function"}
# Variables that the suite sets (tests/conftest.py) and modules have been seen to setdefault at
# import: the probe starts without them, so that such a setdefault shows.
UNSET = ("GRADIO_ANALYTICS_ENABLED", "KINETO_LOG_LEVEL", "OMP_NUM_THREADS")


def present() -> dict[str, str]:
    """Every module of this checkout's lab_code (dotted below lab_code) -> its side; a
    subpackage's `__main__` (which runs a command when imported) is left out."""
    found = {}
    for info in pkgutil.walk_packages(lab_code.__path__, "lab_code."):
        name = info.name.removeprefix("lab_code.")
        parts = name.split(".")
        if info.ispkg or parts[-1] == "__main__":
            continue
        found[name] = parts[0] if len(parts) > 1 else CORE
    return dict(sorted(found.items()))


def folders() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(lab_code.__path__) if m.ispkg)


def of_side(*sides: str) -> list[str]:
    return [m for m, side in present().items() if side in sides]


PROBE = """
import importlib, json, logging, os, signal, sys, warnings
# the base both sides stand on: what these libraries do at their own import is the baseline
import numpy, PIL.Image, requests, torch

def state():
    loggers = {name: lg.level  # a library may give its own logger a NullHandler; not a level
               for name, lg in logging.Logger.manager.loggerDict.items()
               if isinstance(lg, logging.Logger)}
    root = logging.getLogger()
    return {
        "os.environ": dict(os.environ),
        "torch threads": [torch.get_num_threads(), torch.get_num_interop_threads()],
        "root logger": [root.level, len(root.handlers)],
        "logger levels": loggers,
        "signal handlers": {str(s): repr(signal.getsignal(s)) for s in signal.valid_signals()
                            if s not in (signal.SIGKILL, signal.SIGSTOP)},
        "warnings filters": [repr(f) for f in warnings.filters],
    }

before = state()
name = sys.argv[1]
module = importlib.import_module("lab_code." + name)
exec(sys.argv[2], {"module": module})
after = state()
changed = {}
for key in before:
    old, new = before[key], after[key]
    if isinstance(old, dict):
        # a logger created by the import, left at level NOTSET, is no change
        fresh = logging.NOTSET if key == "logger levels" else None
        diff = sorted(k for k in old.keys() | new.keys()
                      if old.get(k, fresh) != new.get(k, fresh))
        if diff:
            changed[key] = diff[:8]
    elif old != new:
        changed[key] = [str(old)[:200], str(new)[:200]]
print("PROBE-JSON " + json.dumps({"loaded": sorted(sys.modules), "changed": changed}))
"""


def probe(module: str) -> dict:
    """Import lab_code.<module> in a fresh interpreter: the modules it loaded, what it changed."""
    # the timeout only keeps a hang from blocking the suite (app imports gradio: several seconds)
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    done = subprocess.run([sys.executable, "-c", PROBE, module, USE.get(module, "")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=180)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("PROBE-JSON ")]
    assert done.returncode == 0 and lines, f"importing lab_code.{module} failed:\n" \
                                           f"{done.stderr[-2000:]}"
    return json.loads(lines[-1].removeprefix("PROBE-JSON "))


def marked(modules: list[str]) -> list:
    return [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=KNOWN[m]))
            if m in KNOWN else m for m in modules]


def forbidden_loaded(module: str, loaded: list[str]) -> list[str]:
    """The lab_code modules in `loaded` that `module`'s side must never load."""
    banned = FORBIDDEN[present()[module]]
    return sorted(m for m in loaded if m.startswith("lab_code.")
                  and m.split(".")[1] in banned)


@pytest.mark.parametrize("module", marked(of_side(CORE, SERVING)))
def test_a_production_module_loads_no_training_code_and_changes_nothing(module):
    found = probe(module)
    loaded = forbidden_loaded(module, found["loaded"])
    loaded += [m for m in found["loaded"] if m == "matplotlib" or m.startswith("matplotlib.")]
    assert not loaded, f"importing lab_code.{module} loads {loaded[:6]}"
    if module not in ENTRY_POINTS:
        assert not found["changed"], f"importing lab_code.{module} changes {found['changed']}"


@pytest.mark.parametrize("module", marked(of_side(TRAINING)))
def test_a_training_module_reaches_production_only_through_the_core(module):
    found = probe(module)
    loaded = forbidden_loaded(module, found["loaded"])
    assert not loaded, f"importing lab_code.{module} loads serving or measuring modules {loaded}"


# One real request through each way of serving, one after another in one fresh interpreter
# (`module` is the entry point): the modules each step adds are that step's. The core's step comes
# first, before any serving module is loaded.
REQUESTS = {
    "recognizer": f"""
assert module.main([{str(EXAMPLE)!r}]) == 0
""",
    "serving.serverless": """
import threading, time, requests, uvicorn
from lab_code.serving.lambda_adapter import make_handler
from lab_code.serving.ports import free_port
handler = make_handler(module.create_app(module.load_recognizer()))
ok = handler({"image": PNG}, None)
assert ok["statusCode"] == 200 and json.loads(ok["body"])["text"], ok
assert handler({"image": "not an image"}, None)["statusCode"] == 422
port = free_port("127.0.0.1")  # over HTTP: the lifespan loads the model, uvicorn serves
server = uvicorn.Server(uvicorn.Config(module.create_app(), host="127.0.0.1", port=port,
                                       log_level="error"))
thread = threading.Thread(target=server.run, daemon=True)
thread.start()
while not server.started and thread.is_alive():
    time.sleep(0.05)
url = f"http://127.0.0.1:{port}/"
try:
    assert requests.post(url, json={"image": PNG}, timeout=120).json()["text"]
    assert requests.get(url + "health", timeout=120).json()["status"] == "ok"
finally:
    server.should_exit = True
    thread.join(120)
""",
    "serving.lambda_function": f"""
event = json.load(open({str(ROOT / "tests" / "fixtures" / "lambda" / "post_image.json")!r}))
answer = module.handler(event, None)
assert answer["statusCode"] == 200 and json.loads(answer["body"])["text"], answer
""",
    "serving.batching": """
from lab_code.serving.schemas import PredictRequest
api = module.make_api(max_batch_size=2)
api.setup("cpu")
jobs = [api.decode_request(PredictRequest(image=PNG)) for _ in range(2)]
answers = [api.encode_response(job) for job in api.unbatch(api.predict(api.batch(jobs)))]
assert [a.status_code for a in answers] == [200, 200], answers
""",
    "serving.predictions": """
import os, tempfile
from lab_code.serving.predictions import Store
with tempfile.TemporaryDirectory() as folder:
    db = os.path.join(folder, "watch.sqlite")
    Store(db).close()
    assert module.main(["--db", db]) == 0
""",
    "serving.corrections": """
import os, tempfile
from lab_code.serving.predictions import Store
with tempfile.TemporaryDirectory() as folder:
    db = os.path.join(folder, "watch.sqlite")
    Store(db).close()
    assert module.main(["list", "--db", db]) == 0
""",
    "serving.app": """
import requests
from lab_code.serving.ports import free_port
demo = module.make_frontend(module.PredictorBackend())
port = free_port("127.0.0.1")
demo.launch(server_name="127.0.0.1", server_port=port, quiet=True, prevent_thread_lock=True,
            **module.LAUNCH_LIMITS)
try:
    url = f"http://127.0.0.1:{port}/gradio_api/call/predict"
    payload = {"data": [{"url": "data:image/png;base64," + PNG}]}
    event = requests.post(url, json=payload, timeout=120).json()["event_id"]
    stream = requests.get(f"{url}/{event}", timeout=120).text
    assert "event: complete" in stream, stream
finally:
    demo.close()
""",
    "serving.function_url": """
import os
from starlette.testclient import TestClient
from lab_code.serving import serverless, signing
key, secret = module.new_key_pair()
app = module.create_gated_app({key: secret}, "us-east-1",
                              recognizer=serverless.load_recognizer())
url, body = "http://127.0.0.1/", json.dumps({"image": PNG}).encode()
os.environ.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_REGION="us-east-1")
headers = signing.Signer(url).headers("POST", url, body, {"Content-Type": "application/json"})
with TestClient(app, base_url="http://127.0.0.1") as client:
    assert client.post("/", content=body, headers={"Content-Type": "application/json"}
                       ).status_code == 403
    signed = client.post("/", content=body, headers=headers)
    assert signed.status_code == 200 and signed.json()["text"], signed.text
""",
    "serving.release": """
import os, shutil, tempfile
from lab_code.artifacts import bundled_model_path
with tempfile.TemporaryDirectory() as folder:  # a registry of one version, written by hand
    version = os.path.join(folder, "text-recognizer", "v1")
    os.makedirs(version)
    for name in ("text_recognizer.pt", "text_recognizer.onnx", "manifest.json"):
        shutil.copy(bundled_model_path().with_name(name), version)
    with open(os.path.join(folder, "text-recognizer", "aliases.json"), "w") as fh:
        json.dump({"production": "v1"}, fh)
    assert module.main(["--registry", folder, "promote", "--version", "v1"]) == 0
    assert module.main(["--registry", folder, "status"]) == 0
""",
    "serving.spaces": """
import os, tempfile
with tempfile.TemporaryDirectory() as folder:
    assert module.main(["--out", os.path.join(folder, "space")]) == 0
    assert os.path.isfile(os.path.join(folder, "space", "app.py"))
""",
}
REQUEST_PROBE = f"""
import base64, importlib, json, sys
PNG = base64.b64encode(open({str(EXAMPLE)!r}, "rb").read()).decode()
TRIED = []  # the modules that tried to import matplotlib

class NoMatplotlib:
    \"""As in the images, which do not install it (Gradio tries it on every request and carries
    on without it).\"""
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] != "matplotlib":
            return None
        frame = sys._getframe(1)
        while frame and frame.f_globals.get("__name__", "").startswith("importlib"):
            frame = frame.f_back
        TRIED.append(frame.f_globals.get("__name__", "?") if frame else "?")
        raise ModuleNotFoundError(f"No module named {{name!r}} (not in the images)", name=name)

sys.meta_path.insert(0, NoMatplotlib())
steps = json.loads(sys.argv[1])
for entry, code in steps.items():
    before = set(sys.modules)
    TRIED.clear()
    try:
        exec(code, {{"module": importlib.import_module("lab_code." + entry), "PNG": PNG,
                    "json": json}})
    except BaseException as err:
        print("PROBE-JSON " + json.dumps({{"entry": entry, "error": repr(err)[:2000],
                                          "matplotlib": TRIED}}), flush=True)
        raise
    print("PROBE-JSON " + json.dumps({{"entry": entry, "matplotlib": TRIED,
                                      "loaded": sorted(set(sys.modules) - before)}}), flush=True)
"""


@pytest.fixture(scope="module")
def requests_served() -> dict[str, dict]:
    """REQUESTS run in one fresh interpreter: entry -> the modules its step loaded (or its
    error)."""
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    done = subprocess.run([sys.executable, "-c", REQUEST_PROBE, json.dumps(REQUESTS)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    found = {}
    for line in done.stdout.splitlines():
        if line.startswith("PROBE-JSON "):
            step = json.loads(line.removeprefix("PROBE-JSON "))
            found[step.pop("entry")] = step
    found["stderr"] = {"error": done.stderr[-3000:]} if done.returncode else {}
    return found


@pytest.mark.timeout(960)
@pytest.mark.parametrize("entry", list(REQUESTS))
def test_a_request_through_each_way_of_serving_loads_no_training_code(entry, requests_served):
    """A training or measuring import inside a function body (a lazy `from lab_code.training
    import metrics` in a request handler) passes the import test; it shows here."""
    step = requests_served.get(entry)
    tried = [m for m in (step or {}).get("matplotlib", []) if m.startswith("lab_code")]
    assert not tried, f"a request through lab_code.{entry} imports matplotlib in {tried}"
    assert step and "loaded" in step, (
        f"the request through lab_code.{entry} did not complete: "
        f"{(step or {}).get('error', 'an earlier step failed')}\n"
        f"{requests_served['stderr'].get('error', '')}")
    loaded = forbidden_loaded(entry, step["loaded"])
    assert not loaded, f"a request through lab_code.{entry} loads {loaded[:6]}"


def test_every_serving_command_answers_a_request_in_the_boundary_test():
    from lab_code import commands

    serving = commands.commands(ROOT / "lab_code" / "serving")
    missing = {f"serving.{name}" for name in serving} - set(REQUESTS)
    assert not missing, (f"{sorted(missing)} serve requests but the boundary test sends them "
                         "none: add each to REQUESTS")
    assert next(iter(REQUESTS)) == "recognizer", "the core's step must come first"


def test_every_module_has_a_side():
    unknown = [f for f in folders() if f not in SIDES]
    assert not unknown, (f"lab_code/{unknown[0]}/ is a folder of no known side: move its modules "
                         f"into one of {', '.join(SIDES)} (or the core), or add it to SIDES")
    assert not set(KNOWN) - set(present()), "KNOWN names a module that does not exist"
    assert set(ENTRY_POINTS) <= set(present()), "ENTRY_POINTS names a module that does not exist"


def test_the_side_rule_can_fail():
    # the check itself: a serving module that loaded training code would be caught
    serving = of_side(SERVING)[0]
    assert forbidden_loaded(serving, ["lab_code.training.data", "lab_code.images"]) == [
        "lab_code.training.data"]
    assert forbidden_loaded(serving, ["lab_code.serving.ports", "lab_code.recognizer"]) == []
