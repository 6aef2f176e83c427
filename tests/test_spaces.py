"""The Hugging Face Space that `python -m lab_code.serving spaces` writes: its files and settings,
no secret in any of them, a start in a clean interpreter that can import only what the Space
installs (its requirements and Gradio), one request answered through the AWS_IAM stand-in
backend, and the upload up to Hugging Face's door: no token, 402 Payment Required, and a full
upload to a stand-in Hub whose commit carries the files and whose secrets API carries the keys."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from PIL import Image
from test_dockerfiles import closure, modules_not_in

from lab_code.recognizer import TextRecognizer
from lab_code.serving import spaces
from lab_code.serving.ports import free_port
from lab_code.serving.processes import start_background, stop_background

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "lab_code" / "assets" / "examples" / "line_serif.png"
KEY, SECRET = "AKIA" + "SPACESTANDIN0001", "space-stand-in-secret-key-forty-chars000"
SPACE_MARKERS = {"python_version": spaces.PYTHON_VERSION,
                 "python_full_version": f"{spaces.PYTHON_VERSION}.0"}


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    return spaces.write_space(tmp_path_factory.mktemp("space") / "space")


def header(folder: Path) -> dict:
    text = (folder / "README.md").read_text(encoding="utf-8")
    return yaml.safe_load(text.split("---\n")[1])


def space_requirements(folder: Path) -> list[Requirement]:
    """What the Space installs: requirements.txt, and Gradio at the README's sdk_version."""
    lines = (folder / "requirements.txt").read_text().split()
    gradio = Requirement(f"gradio=={header(folder)['sdk_version']}")
    return [Requirement(x) for x in lines] + [gradio]


def test_the_folder_holds_the_app_its_settings_and_pinned_requirements(space):
    meta = header(space)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["sdk_version"] == metadata.version("gradio")
    assert meta["python_version"] == spaces.PYTHON_VERSION  # HF's default would be 3.10
    assert meta["suggested_hardware"] in spaces.HARDWARE
    for req in space_requirements(space):
        assert str(req.specifier).startswith("=="), req
        assert str(req.specifier)[2:] == metadata.version(req.name), req
    copied = sorted(p.relative_to(space).as_posix() for p in (space / "lab_code").rglob("*.py"))
    assert "lab_code/serving/app.py" in copied and "lab_code/serving/signing.py" in copied
    assert not any(name in copied for name in ("lab_code/recognizer.py",
                                               "lab_code/serving/serverless.py"))
    assert not list(space.rglob("*.pt")), "the Space must not carry a model"


def test_nothing_secret_is_written(tmp_path, monkeypatch):
    secret_values = {"BACKEND_URL": "https://secretid123.lambda-url.us-east-1.on.aws/",
                     "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                     "HF_TOKEN": "hf_" + "x" * 34}
    for key, value in secret_values.items():
        monkeypatch.setenv(key, value)
    folder = spaces.write_space(tmp_path / "space")
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in secret_values.values():
                assert value.encode() not in data, f"{path.name} holds a secret"
    secrets, variables = spaces.settings_from_environment()
    assert set(secrets) == {"BACKEND_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert "HF_TOKEN" not in secrets and "HF_TOKEN" not in variables


def test_writing_over_a_folder_that_is_not_a_space_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(spaces.SpaceError, match="not a Space folder"):
        spaces.write_space(tmp_path)
    assert (tmp_path / "keep.txt").exists()


# --- the Space runs, on its own requirements only ---------------------------------------------
RUN_SPACE = r'''
import json, runpy, sys
cfg = json.load(open(sys.argv[1]))
blocked = set(cfg["blocked"])

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (the Space does not install it)",
                                      name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
sys.path.insert(0, cfg["folder"])  # what `python app.py` puts first; -I put nothing there
runpy.run_path("app.py", run_name="__main__")
'''


@pytest.fixture(scope="module")
def stand_in_backend(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("backend")
    (tmp / "keys.json").write_text(json.dumps({KEY: SECRET}))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = start_background(["lab_code.serving", "function_url", "--port", str(port), "--keys",
                             str(tmp / "keys.json")], url + "health", tmp / "log")
    yield url
    stop_background(proc)


def test_the_space_starts_on_its_requirements_and_answers_through_the_signed_backend(
        space, stand_in_backend, tmp_path):
    pytest.importorskip("gradio_client")
    from gradio_client import Client, handle_file

    allowed = closure(space_requirements(space), SPACE_MARKERS) | closure(
        space_requirements(space)) | {"pip"}
    blocked = modules_not_in(allowed)
    assert "torch" in blocked and "lab_code" not in blocked
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"blocked": blocked, "folder": str(space)}))
    run = tmp_path / "run_space.py"
    run.write_text(RUN_SPACE)
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1", "AWS_EC2_METADATA_DISABLED": "true",
           # what the owner sets as the Space's secrets and variables
           "BACKEND_URL": stand_in_backend, "AWS_ACCESS_KEY_ID": KEY,
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1",
           # a real Function URL is signed by default; this stand-in's 127.0.0.1 URL is not
           "BACKEND_AUTH": "aws_iam"}
    log = tmp_path / "space.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-I", str(run), str(cfg)], cwd=space, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = None
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail(f"the Space exited: {log.read_text()[-2000:]}")
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # not up yet
                import time

                time.sleep(0.2)
        assert client is not None, log.read_text()[-2000:]
        text = client.predict(handle_file(str(EXAMPLE)), api_name="/predict")
    finally:
        proc.terminate()
        proc.wait(30)
    assert text == TextRecognizer().predict(Image.open(EXAMPLE))


def test_a_space_without_a_backend_says_so(space, monkeypatch):
    import runpy

    from lab_code.serving.app import BackendError

    monkeypatch.delenv("BACKEND_URL", raising=False)
    module = runpy.run_path(str(space / "app.py"), run_name="space_app")
    with pytest.raises(BackendError, match="add the BACKEND_URL secret"):
        module["backend"]()(Image.open(EXAMPLE))


# --- the upload, up to Hugging Face's door -----------------------------------------------------
class StandInHub(BaseHTTPRequestHandler):
    """The few endpoints huggingface_hub calls to create a Space, set its secrets and variables
    and commit a folder; `answers` can make repo creation fail as the real Hub does."""

    calls: list[tuple[str, str, bytes]]
    create_status = 200

    def _reply(self, status: int, obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self.calls.append(("GET", self.path, b""))
        if self.path.startswith("/api/spaces/"):  # the Space does not exist yet
            return self._reply(404, {"error": "Repository not found"})
        self._reply(200, {})

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.calls.append(("POST", self.path, body))
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        if self.path == "/api/repos/create":
            if self.create_status == 402:
                return self._reply(402, {"error": "Static Spaces are free for everyone, but "
                                         "hosting Gradio and Docker Spaces on free cpu-basic "
                                         "requires a PRO subscription."})
            return self._reply(200, {"url": f"{base}/spaces/me/recognizer"})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                "shouldIgnore": False} for f in files]})
        if "/commit/" in self.path:
            return self._reply(200, {"commitUrl": f"{base}/spaces/me/recognizer/commit/{'a' * 40}",
                                     "commitOid": "a" * 40})
        return self._reply(200, {})

    def log_message(self, *args):
        pass


def run_upload(tmp_path: Path, create_status: int, token: str | None) -> tuple:
    handler = type("Hub", (StandInHub,), {"calls": [], "create_status": create_status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
               BACKEND_URL="https://secretid123.lambda-url.us-east-1.on.aws/",
               AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="us-east-1")
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    try:
        proc = subprocess.run([sys.executable, "-m", "lab_code.serving", "spaces", "--out",
                               str(tmp_path / "space"), "--upload", "me/recognizer"],
                              capture_output=True, text=True, env=env, timeout=180)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    return proc, handler.calls


def test_upload_without_a_token_says_where_to_get_one(tmp_path):
    proc, calls = run_upload(tmp_path, 200, token=None)
    assert proc.returncode == 1 and not calls
    assert proc.stderr.strip().startswith("error: No Hugging Face token: create one")


def test_a_free_account_meets_402_and_one_sentence_with_the_options(tmp_path):
    proc, calls = run_upload(tmp_path, 402, token="hf_" + "f" * 34)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {spaces.PAYMENT_REQUIRED}"
    assert [c[1] for c in calls if c[0] == "POST"] == ["/api/repos/create"]


def test_upload_sends_files_by_commit_and_keys_as_secrets(tmp_path):
    proc, calls = run_upload(tmp_path, 200, token="hf_" + "g" * 34)
    assert proc.returncode == 0, proc.stderr
    posts = {path: body for method, path, body in calls if method == "POST"}
    create = json.loads(posts["/api/repos/create"])
    assert create["type"] == "space" and create["sdk"] == "gradio"
    secrets = [json.loads(b)["key"] for m, p, b in calls if p.endswith("/secrets")]
    assert sorted(secrets) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "BACKEND_URL"]
    variables = [json.loads(b)["key"] for m, p, b in calls if p.endswith("/variables")]
    assert variables == ["AWS_REGION"]
    commit = [json.loads(line) for line in
              posts["/api/spaces/me/recognizer/commit/main"].decode().splitlines()]
    files = {c["value"]["path"]: base64.b64decode(c["value"]["content"])
             for c in commit if c["key"] == "file"}
    written = {p.relative_to(tmp_path / "space").as_posix()
               for p in (tmp_path / "space").rglob("*") if p.is_file()}
    assert set(files) == written and "app.py" in files
    for content in files.values():
        assert SECRET.encode() not in content and b"secretid123" not in content
    assert "uploaded to" in proc.stdout
