"""The Lambda backend: Function URL events through a handler built by `make_handler(create_app())`,
direct invocations, every bad request (through the handler and over real HTTP against
`python -m lab_code.serving serverless`), the Lambda entry module, a 64-request load test, and the
benchmark script. What a public endpoint meets (SSRF, work bombs, slow upstreams, floods):
test_public_serving.py and test_soak.py. The Gradio frontend in front of it:
test_serverless_frontend.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import http.server
import importlib.util
import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from PIL import Image
from stand_ins import serve_http

from lab_code import urlfetch
from lab_code.artifacts import bundled_onnx_path, model_version
from lab_code.recognizer import OnnxRecognizer, Recognizer, TextRecognizer
from lab_code.serving import serverless
from lab_code.serving.lambda_adapter import make_handler
from lab_code.serving.limits import MAX_BODY_BYTES
from lab_code.serving.ports import free_port
from lab_code.serving.processes import start_background, stop_background
from lab_code.training import data

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "lambda"
FIXTURE_NAMES = ("post_image", "post_base64_body", "get_browser", "post_bad_body")


@functools.cache
def backend() -> SimpleNamespace:
    """One recognizer (bundled model, warmed up), its app and a Lambda handler for the module,
    as lab_code.serving.lambda_function builds them at import."""
    recognizer = serverless.load_recognizer()
    serverless.warm_up(recognizer)
    app = serverless.create_app(recognizer)
    return SimpleNamespace(recognizer=recognizer, app=app, handler=make_handler(app))


def handler(event, context=None):
    return backend().handler(event, context)


# --- inputs ---------------------------------------------------------------------------------
def event(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def png_bytes(text: str = "send me a line", size: int = 28) -> bytes:
    buf = io.BytesIO()
    data.render(text, data.Style.clean(data.fonts()[0], size=size)).save(buf, "PNG")
    return buf.getvalue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's calling card):
    a few dozen bytes on disk, gigabytes if anything decoded it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def url_event(body: str | bytes, method: str = "POST", path: str = "/",
              content_type: str | None = "application/json") -> dict:
    """The post_image fixture with another method, path, body or Content-Type."""
    ev = copy.deepcopy(event("post_image"))
    ev["requestContext"]["http"]["method"] = method
    ev["rawPath"] = ev["requestContext"]["http"]["path"] = path
    ev["headers"].pop("content-type")
    if content_type:
        ev["headers"]["content-type"] = content_type
    if isinstance(body, bytes):
        ev["body"], ev["isBase64Encoded"] = b64(body), True
    else:
        ev["body"] = body
    ev["headers"]["content-length"] = str(len(body))
    return ev


LINE = png_bytes()
OVER_6_MB = json.dumps({"image": "A" * (MAX_BODY_BYTES + 10)})

# (id, method, path, body, content type, status, a phrase of the error sentence)
BAD_REQUESTS = [
    ("get", "GET", "/", "", None, 405, "GET is not allowed on /: use POST"),
    ("unknown-path", "POST", "/predict", json.dumps({"image": b64(LINE)}), "application/json",
     404, "Nothing at /predict"),
    ("empty-body", "POST", "/", "", "application/json", 400, "body is empty"),
    ("not-json", "POST", "/", "image=line.png", "application/json", 400, "not valid JSON"),
    ("json-array", "POST", "/", "[1, 2]", "application/json", 400, "must be a JSON object"),
    ("form-encoded", "POST", "/", json.dumps({"image": b64(LINE)}),
     "application/x-www-form-urlencoded", 400, "Content-Type: application/json"),
    ("no-field", "POST", "/", "{}", "application/json", 400, 'Send "image"'),
    ("misspelled-field", "POST", "/", json.dumps({"imgae": b64(LINE)}), "application/json", 400,
     'Unknown field "imgae"'),
    ("number-image", "POST", "/", '{"image": 5}', "application/json", 400, "must be a string"),
    ("both-fields", "POST", "/", json.dumps({"image": b64(LINE), "image_url": "https://a.b/c.png"}),
     "application/json", 400, "not both"),
    ("bad-base64", "POST", "/", '{"image": "this is not base64!"}', "application/json", 400,
     "not valid base64"),
    ("data-url-not-base64", "POST", "/", '{"image": "data:image/png,abc"}', "application/json", 400,
     "must be base64"),
    ("not-an-image", "POST", "/", json.dumps({"image": b64(b"plain text, no picture")}),
     "application/json", 422, "not an image"),
    ("bomb-20000x20000", "POST", "/", json.dumps({"image": b64(png_header_only(20000, 20000))}),
     "application/json", 422, "too many pixels"),
    ("too-many-pixels-8000x8000", "POST", "/",
     json.dumps({"image": b64(png_header_only(8000, 8000))}), "application/json", 422,
     "8000x8000 pixels"),
    ("over-6-mb", "POST", "/", OVER_6_MB, "application/json", 413, "over Lambda's 6 MB"),
    ("ftp-url", "POST", "/", '{"image_url": "ftp://example.com/line.png"}', "application/json", 400,
     "Only http:// and https://"),
    ("post-health", "POST", "/health", "", None, 405, "use GET"),
]


def assert_one_sentence_error(status: int, body: dict, want_status: int, phrase: str) -> None:
    assert status == want_status, body
    assert list(body) == ["error"], body
    message = body["error"]
    assert phrase in message
    assert message.endswith(".") and "\n" not in message and "Traceback" not in message


def closed_port() -> int:
    """A port nothing listens on: connecting to it is refused at once."""
    return free_port()


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    """The backend's own recognizer (the bundled ONNX file on onnxruntime, already warm): its
    `predict` is what every answer must match."""
    loaded = backend().recognizer
    assert isinstance(loaded, OnnxRecognizer) and loaded.model_path == bundled_onnx_path()
    return loaded


# --- the fixtures are real Function URL events -------------------------------------------------
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixtures_follow_the_function_url_payload_v2(name):
    ev = event(name)
    assert ev["version"] == "2.0" and ev["routeKey"] == "$default" and ev["rawPath"] == "/"
    assert ev["rawQueryString"] == "" and isinstance(ev["isBase64Encoded"], bool)
    assert all(key == key.lower() for key in ev["headers"])
    ctx = ev["requestContext"]
    assert ctx["accountId"] == "anonymous" and ctx["stage"] == "$default"
    assert ctx["routeKey"] == "$default" and ctx["apiId"] == ctx["domainPrefix"]
    assert re.fullmatch(r"[a-z0-9]{32}\.lambda-url\.[a-z]{2}-[a-z]+-\d\.on\.aws", ctx["domainName"])
    assert ev["headers"]["host"] == ctx["domainName"]
    assert set(ctx["http"]) == {"method", "path", "protocol", "sourceIp", "userAgent"}
    assert ctx["http"]["userAgent"] == ev["headers"]["user-agent"]
    when = time.gmtime(ctx["timeEpoch"] / 1000)
    assert time.strftime("%d/%b/%Y:%H:%M:%S +0000", when) == ctx["time"]
    if "body" in ev:
        body = base64.b64decode(ev["body"]) if ev["isBase64Encoded"] else ev["body"].encode()
        assert ev["headers"]["content-length"] == str(len(body))


def test_fixture_image_is_a_small_real_png():
    raw = base64.b64decode(json.loads(event("post_image")["body"])["image"])
    assert raw.startswith(b"\x89PNG") and len(raw) < 30_000
    assert Image.open(io.BytesIO(raw)).size[0] > 100


# --- handler with Function URL events --------------------------------------------------------
def fixture_image(name: str) -> Image.Image:
    ev = event(name)
    body = base64.b64decode(ev["body"]) if ev["isBase64Encoded"] else ev["body"].encode()
    return Image.open(io.BytesIO(base64.b64decode(json.loads(body)["image"])))


@pytest.mark.parametrize("name", ["post_image", "post_base64_body"])
def test_handler_reads_the_fixture_image_like_the_recognizer(name, recognizer):
    ev = event(name)
    resp = handler(ev, None)
    assert resp["statusCode"] == 200 and resp["headers"]["content-type"] == "application/json"
    assert resp["headers"]["x-request-id"] == ev["requestContext"]["requestId"]
    body = json.loads(resp["body"])
    assert set(body) == {"text", "model_version", "latency_ms", "lines"}
    assert body["text"] == recognizer.predict(fixture_image(name))
    assert body["model_version"] == model_version(recognizer.model_path)
    assert body["lines"] == 1 and body["latency_ms"] > 0


def test_handler_answers_the_get_and_bad_body_fixtures_with_json_errors():
    get = handler(event("get_browser"), None)
    assert_one_sentence_error(get["statusCode"], json.loads(get["body"]), 405, "use POST")
    bad = handler(event("post_bad_body"), None)
    assert_one_sentence_error(bad["statusCode"], json.loads(bad["body"]), 400, "not valid JSON")


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_handler_refuses_bad_requests_with_one_sentence(case):
    _, method, path, body, content_type, status, phrase = case
    resp = handler(url_event(body, method, path, content_type), None)
    assert_one_sentence_error(resp["statusCode"], json.loads(resp["body"]), status, phrase)


def test_a_decompression_bomb_is_refused_before_any_pixel_is_decoded(monkeypatch):
    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    bomb = png_header_only(20000, 20000)
    assert len(bomb) < 100
    resp = handler({"image": b64(bomb)}, None)
    assert resp["statusCode"] == 422 and "pixels" in json.loads(resp["body"])["error"]


def test_handler_refuses_a_body_marked_base64_that_is_not():
    ev = url_event("{not base64}")
    ev["isBase64Encoded"] = True
    resp = handler(ev, None)
    assert_one_sentence_error(resp["statusCode"], json.loads(resp["body"]), 400, "not base64")


@pytest.mark.parametrize("bad_event", [
    "a string", [1, 2], None,
    {"requestContext": {}},
    {"version": "2.0", "requestContext": {"http": {}}},
    {"version": "1.0", "requestContext": {}, "body": "{}"},
])
def test_handler_never_raises_on_malformed_events(bad_event):
    resp = handler(bad_event, None)
    assert resp["statusCode"] == 400
    assert list(json.loads(resp["body"])) == ["error"]


@contextlib.contextmanager
def serve_file(raw: bytes):
    """A throwaway HTTP server on 127.0.0.1 that serves `raw` at /line.png (no internet)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the name http.server calls
            self.send_response(200 if self.path == "/line.png" else 404)
            self.send_header("content-type", "image/png")
            self.end_headers()
            if self.path == "/line.png":
                self.wfile.write(raw)

        def log_message(self, *args):
            pass

    with serve_http(Handler) as base:
        yield base


def test_image_url_is_fetched_and_read(recognizer, monkeypatch):
    monkeypatch.setenv(urlfetch.ALLOW_PRIVATE_ENV, "1")  # the file server is on this machine
    with serve_file(LINE) as base:
        ok = handler({"image_url": f"{base}/line.png"}, None)
        missing = handler({"image_url": f"{base}/nothing.png"}, None)
    assert ok["statusCode"] == 200
    assert json.loads(ok["body"])["text"] == recognizer.predict(Image.open(io.BytesIO(LINE)))
    assert_one_sentence_error(missing["statusCode"], json.loads(missing["body"]), 502,
                              "HTTP 404")


def test_an_unreachable_image_url_is_a_502(monkeypatch):
    monkeypatch.setenv(urlfetch.ALLOW_PRIVATE_ENV, "1")
    resp = handler({"image_url": f"http://127.0.0.1:{closed_port()}/x.png"}, None)
    assert_one_sentence_error(resp["statusCode"], json.loads(resp["body"]), 502,
                              "Could not fetch")


INVOKE = "/2015-03-31/functions/function/invocations"  # the Lambda emulator's invocation route


@contextlib.contextmanager
def lambda_emulator():
    """A stand-in for the Runtime Interface Emulator of the Lambda base image (`docker run -p
    9000:8080 IMAGE`; no Docker here): POST INVOKE with an event calls `handler(event, context)`
    and answers with its return value as JSON, as the emulator and `aws lambda invoke` do."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the name http.server calls
            length = int(self.headers.get("content-length", 0))
            ev = json.loads(self.rfile.read(length))
            ctx = SimpleNamespace(aws_request_id="emulated-request-1")
            out = json.dumps(handler(ev, ctx)).encode() if self.path == INVOKE else b""
            self.send_response(200 if out else 404)
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    with serve_http(Handler) as base:
        yield base


def test_invoking_through_the_emulator_route_as_docker_readme_shows(tmp_path, recognizer):
    png = tmp_path / "line.png"
    png.write_bytes(LINE)
    make_event = ("import base64, json, sys; print(json.dumps({'image': base64.b64encode("
                  "open(sys.argv[1], 'rb').read()).decode()}))")  # docker/README.md's one-liner
    made = subprocess.run([sys.executable, "-c", make_event, str(png)], capture_output=True,
                          text=True, timeout=60, check=True)
    (tmp_path / "event.json").write_text(made.stdout)
    with lambda_emulator() as base:
        direct = requests.post(base + INVOKE, data=(tmp_path / "event.json").read_bytes(),
                               timeout=60).json()
        url_get = requests.post(base + INVOKE, data=(FIXTURES / "get_browser.json").read_bytes(),
                                timeout=60).json()
    assert direct["statusCode"] == 200
    assert direct["headers"]["x-request-id"] == "emulated-request-1"
    assert json.loads(direct["body"])["text"] == recognizer.predict(Image.open(png))
    assert url_get["statusCode"] == 405 and "error" in json.loads(url_get["body"])


# --- direct invocation, context, logs, model loaded once --------------------------------------
def test_direct_invocation_gets_a_function_url_style_response(recognizer):
    ctx = SimpleNamespace(aws_request_id="req-direct-123")
    resp = handler({"image": b64(LINE)}, ctx)
    assert resp["statusCode"] == 200 and resp["isBase64Encoded"] is False
    assert resp["headers"]["x-request-id"] == "req-direct-123"
    assert json.loads(resp["body"])["text"] == recognizer.predict(Image.open(io.BytesIO(LINE)))
    empty = handler({}, ctx)
    assert_one_sentence_error(empty["statusCode"], json.loads(empty["body"]), 400, 'Send "image"')


def test_data_urls_and_wrapped_base64_are_accepted(recognizer):
    expected = recognizer.predict(Image.open(io.BytesIO(LINE)))
    wrapped = "\n".join(b64(LINE)[i:i + 76] for i in range(0, len(b64(LINE)), 76))
    for image in (f"data:image/png;base64,{b64(LINE)}", wrapped, b64(LINE).rstrip("=")):
        resp = handler({"image": image}, None)
        assert json.loads(resp["body"])["text"] == expected


def test_one_json_log_line_per_request_with_the_lambda_request_id(capsys):
    ctx = SimpleNamespace(aws_request_id="req-log-42")
    handler(event("post_image"), ctx)
    handler({"image": "???"}, None)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    ok, bad = lines
    assert ok["request_id"] == "req-log-42" and ok["status"] == 200 and ok["text_chars"] >= 0
    assert ok["bytes"] == len(event("post_image")["body"]) and ok["latency_ms"] > 0
    assert bad["status"] == 400 and "base64" in bad["error"] and bad["text_chars"] is None


def test_the_model_is_loaded_once_not_per_request(monkeypatch):
    loaded = backend().app.state.worker().recognizer

    def no_loading(*args, **kwargs):
        raise AssertionError("a request loaded the model")

    for runtime in (TextRecognizer, OnnxRecognizer):
        monkeypatch.setattr(runtime, "__init__", no_loading)
    monkeypatch.setattr("lab_code.recognizer.load_torchscript", no_loading)
    monkeypatch.setattr("lab_code.recognizer.load_onnx", no_loading)
    for _ in range(2):
        assert handler({"image": b64(LINE)}, None)["statusCode"] == 200
    assert backend().app.state.worker().recognizer is loaded


def test_handler_works_inside_a_running_event_loop_like_a_notebook_cell():
    async def cell():
        return handler(event("post_image"), None)

    assert asyncio.run(cell())["statusCode"] == 200


def test_a_model_failure_is_a_json_500_not_a_crash(monkeypatch):
    def broken(lines):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(backend().recognizer, "predict_lines", broken)
    resp = handler({"image": b64(LINE)}, None)
    assert_one_sentence_error(resp["statusCode"], json.loads(resp["body"]), 500, "RuntimeError")
    assert resp["headers"]["x-request-id"] in json.loads(resp["body"])["error"]


def test_importing_the_backend_library_changes_nothing_in_the_process():
    """No model loaded, no thread started, torch's thread count untouched, no exit."""
    code = (
        "import threading, torch\n"
        "torch.set_num_threads(2); before = threading.active_count()\n"
        "from lab_code.serving import serverless\n"
        "assert torch.get_num_threads() == 2, torch.get_num_threads()\n"
        "assert threading.active_count() == before\n"
        "assert not hasattr(serverless, 'RECOGNIZER') and not hasattr(serverless, 'handler')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_the_lambda_entry_module_loads_the_model_at_import_and_not_the_ui():
    code = (
        "import json, os, sys\n"
        "from lab_code.serving import lambda_function\n"
        "assert lambda_function.RECOGNIZER.runtime == 'onnx'  # the bundled ONNX file\n"
        "assert 'torch' not in sys.modules  # so no torch at all in the init phase\n"
        "assert os.environ['OMP_NUM_THREADS'] == os.environ['OPENBLAS_NUM_THREADS'] == '1'\n"
        "assert lambda_function.app.state.worker() is not None  # loaded in the init phase\n"
        f"ev = json.load(open({str(FIXTURES / 'post_image.json')!r}))\n"
        "assert lambda_function.handler(ev, None)['statusCode'] == 200\n"
        "bad = [m for m in sys.modules if m.startswith('lab_code.training')\n"
        "       or m in ('gradio', 'matplotlib', 'uvicorn')]\n"
        "assert not bad, bad\n"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MODEL_PATH")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr


# --- the command line -------------------------------------------------------------------------
def test_help_shows_host_and_port(capsys):
    with pytest.raises(SystemExit) as exit_info:
        serverless.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "python -m lab_code.serving serverless" in out and "--host" in out and "--port" in out
    assert serverless.MODEL_ENV in out and urlfetch.ALLOW_PRIVATE_ENV in out
    assert "--allow-private-urls" in out and "--deadline" in out and "--max-waiting" in out


def test_a_port_in_use_is_one_sentence_and_a_nonzero_exit(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert serverless.main(["--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already in use" in err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_model_file_is_one_sentence_and_a_nonzero_exit(tmp_path):
    env = {**os.environ, serverless.MODEL_ENV: str(tmp_path / "missing.pt")}
    done = subprocess.run([sys.executable, "-m", "lab_code.serving", "serverless", "--port", "1"],
                          cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: No model file at") and len(done.stderr.splitlines()) == 1


# --- over real HTTP: python -m lab_code.serving serverless
# ---------------------------------------------
@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The local service on a free port, as the notebook starts it; stopped after the module."""
    port = free_port()
    log = tmp_path_factory.mktemp("service") / "serverless.log"
    url = f"http://127.0.0.1:{port}/"
    proc = start_background(["lab_code.serving", "serverless", "--port", str(port)],
                            url + "health", log)
    try:
        yield SimpleNamespace(url=url, port=port, log=log)
    finally:
        assert stop_background(proc) is not None


def test_service_answers_like_the_handler(service, recognizer):
    ev = event("post_image")
    resp = requests.post(service.url, data=ev["body"],
                         headers={"content-type": "application/json"}, timeout=60)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["text"] == recognizer.predict(fixture_image("post_image"))
    in_process = json.loads(handler(ev, None)["body"])
    # the local service logs its predictions (lesson 08) and says under which id; Lambda does
    # only where $WATCH_DB names a shared log
    assert body.pop("prediction_id") and "prediction_id" not in in_process
    assert body == {**in_process, "latency_ms": body["latency_ms"]}
    health = requests.get(service.url + "health", timeout=10).json()
    model = health.pop("model")  # which model answers, as its manifest names it
    assert health == {"status": "ok", "model_loaded": True,
                      "model_version": body["model_version"], "waiting": 0,
                      "decoding": {"workers": 2, "busy": 0, "longest_s": 0.0, "replaced": 0}}
    # the file it serves (the bundled ONNX export here), as the manifest beside it names it
    assert model["version"] == body["model_version"] == model["sha256"][:12]
    assert model["name"] == "text-recognizer" and model["release"].startswith("v")
    assert resp.headers["x-model-version"] == body["model_version"]
    # a body without Content-Type: read as JSON behind a Function URL (which base64-encodes it:
    # the post_base64_body fixture), refused over plain HTTP, where a web page's no-cors fetch
    # sends exactly that
    bare = requests.post(service.url, data=ev["body"].encode(), timeout=60)
    assert bare.status_code == 415 and "Content-Type: application/json" in bare.json()["error"]


# Over plain HTTP a body that is not application/json is refused before anything reads it (a web
# page's no-cors fetch can send a form); behind a Function URL it is read as JSON, and validated.
HTTP_STATUS = {"form-encoded": 415}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_service_refuses_bad_requests_with_one_sentence(service, case):
    name, method, path, body, content_type, status, phrase = case
    status = HTTP_STATUS.get(name, status)
    headers = {"content-type": content_type} if content_type else {}
    resp = requests.request(method, service.url.rstrip("/") + path, data=body.encode(),
                            headers=headers, timeout=60)
    assert resp.headers["content-type"] == "application/json"
    assert_one_sentence_error(resp.status_code, resp.json(), status, phrase)


def test_service_refuses_a_streamed_body_over_6_mb(service):
    def chunks():  # no Content-Length: the limit must hold while reading
        for _ in range(7):
            yield b"x" * 2**20

    resp = requests.post(service.url, data=chunks(), headers={"content-type": "application/json"},
                         timeout=60)
    assert_one_sentence_error(resp.status_code, resp.json(), 413, "6 MB")


def test_service_refuses_an_image_url_on_this_machine_without_the_opt_in(service):
    resp = requests.post(service.url, json={"image_url": f"http://127.0.0.1:{closed_port()}/a.png"},
                         timeout=60)
    assert_one_sentence_error(resp.status_code, resp.json(), 400, "internal address")


def test_service_logs_one_json_line_per_request(service):
    marker = requests.post(service.url, json={"image": "!"}, timeout=30).headers["x-request-id"]
    for _ in range(50):
        lines = [json.loads(x) for x in service.log.read_text().splitlines() if x.startswith("{")]
        mine = [x for x in lines if x.get("request_id") == marker]
        if mine:
            break
        time.sleep(0.1)
    assert len(mine) == 1 and mine[0]["status"] == 400 and mine[0]["path"] == "/"


def test_service_survives_64_concurrent_requests(service, recognizer):
    """Load test: 64 requests from 16 threads at once, each answered correctly, in bounded time."""
    images = [png_bytes(f"request number {i}") for i in range(4)]
    expected = [recognizer.predict(Image.open(io.BytesIO(raw))) for raw in images]

    def call(i: int) -> tuple[int, str]:
        resp = requests.post(service.url, json={"image": b64(images[i % 4])}, timeout=60)
        return resp.status_code, resp.json().get("text")

    start_time = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(64)))
    elapsed = time.perf_counter() - start_time
    assert [status for status, _ in results] == [200] * 64
    assert [text for _, text in results] == [expected[i % 4] for i in range(64)]
    assert elapsed < 45, f"64 requests took {elapsed:.1f} s"


# --- the benchmark script ---------------------------------------------------------------------
def test_benchmark_script_writes_its_table_and_json(service, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "serverless_benchmark", ROOT / "profiling" / "serverless_benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "overhead.json"
    argv = ["--requests", "3", "--warmup", "1", "--url", service.url, "--out", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["requests"] == 3 and set(result["results"]) >= {
        "predict (in process)", "HTTP round trip (requests -> uvicorn)"}
    for row in result["results"].values():
        assert row["n"] == 3 and 0 < row["p50_ms"] <= row["p95_ms"]
    assert "HTTP overhead" in capsys.readouterr().out
    assert bench.main(["--requests", "1", "--out", str(out)]) == 2


def test_the_committed_serverless_overhead_result_is_well_formed():
    path = ROOT / "profiling" / "results" / "serverless_overhead.json"
    assert path.is_file(), "profiling/results/serverless_overhead.json is missing: record it"
    result = json.loads(path.read_text())
    assert result["requests"] >= 50 and result["machine"]["cpus"] >= 1
    rows = set(result["results"])
    assert {"predict (in process)", "HTTP round trip (requests -> uvicorn)"} <= rows

