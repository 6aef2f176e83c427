"""The Gradio app: its API answers like TextRecognizer through gradio_client and raw HTTP, bad
inputs get one friendly sentence, the CLI behaves, and the remote-backend mode talks to a stand-in
of the serverless backend. Every server is closed and every port freed."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import struct
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import gradio as gr
import pytest
import requests
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from stand_ins import serve_http

from lab_code import images, preprocess
from lab_code.recognizer import TextRecognizer
from lab_code.serving import app, ports


def _port() -> int:
    return ports.free_port("127.0.0.1")


def _port_is_free(port: int) -> bool:
    return not app.port_in_use("127.0.0.1", port)


@pytest.fixture(scope="module")
def recognizer() -> TextRecognizer:
    return TextRecognizer()


@pytest.fixture(scope="module")
def served(recognizer) -> Iterator[str]:
    """The app with the local model, on a free port; closed at the end of the module."""
    demo = app.make_frontend(app.PredictorBackend())
    port = _port()
    try:
        url, _ = app.launch(demo, "127.0.0.1", port)
        yield url.rstrip("/")  # http://127.0.0.1:PORT
    finally:
        demo.close()
    assert _port_is_free(port)


@pytest.fixture(scope="module")
def client(served) -> Client:
    return Client(served, verbose=False)


def data_url(data: bytes) -> dict:
    return {"url": "data:image/png;base64," + base64.b64encode(data).decode()}


def call_http(url: str, payload: dict | None) -> tuple[str, object]:
    """The two-step HTTP API: POST the input, then read the event stream; (event, data)."""
    url = url.rstrip("/")
    resp = requests.post(f"{url}/gradio_api/call/predict", json={"data": [payload]}, timeout=30)
    resp.raise_for_status()
    event_id = resp.json()["event_id"]
    stream = requests.get(f"{url}/gradio_api/call/predict/{event_id}", timeout=60).text
    events = [block.splitlines() for block in stream.strip().split("\n\n")]
    name, data = events[-1][0], events[-1][1]
    return name.removeprefix("event: "), json.loads(data.removeprefix("data: "))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (what a decompression bomb looks
    like before its pixels are decoded)."""
    real = png_bytes(Image.new("L", (8, 8), 255))
    chunk = b"IHDR" + struct.pack(">II", width, height) + real[24:29]  # bit depth, colour...
    crc = struct.pack(">I", zlib.crc32(chunk))
    return real[:8] + struct.pack(">I", 13) + chunk + crc + real[33:]


# --- the page and its API -----------------------------------------------------------------------


def test_examples_are_bundled_pngs():
    paths = app.example_paths()
    assert 3 <= len(paths) <= 4
    assert all(p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert any(len(preprocess.line_arrays(Image.open(p))) == 3 for p in paths)  # one is a page


def test_interface_settings():
    demo = app.make_frontend(lambda img: "x")
    assert demo.title == app.TITLE and demo.description and demo.article
    assert demo.flagging_mode == "never"
    assert demo.api_name == "predict"
    assert len(demo.examples) == len(app.example_paths())
    assert not Path(app.__file__).with_suffix(".pyi").exists()  # what subclassing gr.Image did


def test_launch_gives_every_page_its_limits():
    """app.launch, the one way the course starts a page: an upload cap and a bounded queue in
    front of the model (CONCURRENCY at once, QUEUE_SIZE waiting), whatever page it serves."""
    demo = gr.Interface(lambda text: text, "text", "text")  # not even the course's own page
    port = _port()
    try:
        url, share_url = app.launch(demo, "127.0.0.1", port)
        assert url.rstrip("/") == f"http://127.0.0.1:{port}" and share_url is None
        assert demo._queue.default_concurrency_limit == app.CONCURRENCY == 2
        assert demo._queue.max_size == app.QUEUE_SIZE == 16
        assert demo.max_file_size == app.MAX_UPLOAD_MB * 2**20  # Gradio reads "10mb" as MiB
        assert app.LAUNCH_LIMITS == {"max_file_size": f"{app.MAX_UPLOAD_MB}mb"}
    finally:
        demo.close()
    assert _port_is_free(port)


def test_api_is_named_predict_and_described(served):
    info = requests.get(f"{served}/gradio_api/info", timeout=10).json()
    assert list(info["named_endpoints"]) == ["/predict"]
    openapi = requests.get(f"{served}/gradio_api/openapi.json", timeout=10).json()
    assert "/gradio_api/call/predict/{event_id}" in openapi["paths"]


@pytest.mark.parametrize("name", ["line_sans.png", "page_3_lines.png"])
def test_gradio_client_matches_recognizer(client, recognizer, name):
    path = next(p for p in app.example_paths() if p.name == name)
    text = client.predict(handle_file(str(path)), api_name="/predict")
    assert text == recognizer.predict(path)
    assert text.count("\n") == (2 if name.startswith("page") else 0)


def test_raw_http_two_steps_matches_recognizer(served, recognizer, caplog):
    caplog.set_level(logging.INFO, logger="lab_code.serving.app")
    path = app.example_paths()[0]
    event, data = call_http(served, data_url(path.read_bytes()))
    assert event == "complete"
    assert data == [recognizer.predict(path)]
    width, height = Image.open(path).size
    assert any(f"{width}x{height} image" in r.getMessage() and "ms" in r.getMessage()
               for r in caplog.records), "one log line per prediction"


def test_huge_image_is_downscaled(client, recognizer, tmp_path):
    wide = Image.open(app.example_paths()[0]).resize((9000, 970))  # > MAX_SIDE wide
    path = tmp_path / "wide.png"
    wide.save(path)
    text = client.predict(handle_file(str(path)), api_name="/predict")
    assert text == recognizer.predict(preprocess.shrink(wide))


def _stripes(side: int) -> bytes:
    """A 2 KB PNG of alternating rows: hundreds of one-pixel "lines" (once 23 s and 2.2 GB)."""
    img = Image.new("L", (side, side), 255)
    img.putdata([0 if (i // side) % 2 == 0 else 255 for i in range(side * side)])
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


BAD_INPUTS = {
    "none": (None, app.NO_IMAGE),
    "bad base64 data URL": ({"url": "data:image/png;base64,@@not base64@@"}, "not valid base64"),
    "data URL without base64": ({"url": "data:image/png,abc"}, "must be base64"),
    "stripes bomb 1000x1000": (data_url(_stripes(1000)), "send a picture of at most"),
    "unreadable": (data_url(b"this is not an image"), "PNG or JPEG"),
    "too many pixels": (data_url(png_header_claiming(9000, 9000)), "crop or shrink"),
    "decompression bomb": (data_url(png_header_claiming(60000, 60000)), "crop or shrink"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_one_friendly_sentence(served, case):
    payload, expected = BAD_INPUTS[case]
    event, data = call_http(served, payload)
    assert event == "error"
    message = data["error"]
    assert expected in message
    assert "Traceback" not in message and "\n" not in message and message.endswith(".")


def test_an_upload_over_the_size_limit_is_refused(served, tmp_path):
    """Once 300 MB were accepted in 1.5 s and kept in the temp dir."""
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (app.MAX_UPLOAD_MB * 2**20 + 1024))
    with big.open("rb") as f:
        resp = requests.post(f"{served}/gradio_api/upload", files={"files": f}, timeout=60)
    assert resp.status_code == 413, resp.text[:200]


def test_a_phone_photo_reads_the_same_in_the_ui_and_the_api(client, recognizer, tmp_path):
    """EXIF orientation is applied in lab_code.images, which every entry point uses."""
    upright = Image.open(next(p for p in app.example_paths() if p.name == "line_sans.png"))
    stored = upright.convert("RGB").rotate(90, expand=True)  # how the camera stored it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to display
    photo = tmp_path / "photo.jpg"
    stored.save(photo, "JPEG", quality=95, exif=exif)
    ui = client.predict(handle_file(str(photo)), api_name="/predict")
    assert ui == recognizer.predict(photo) == recognizer.predict(upright)


def test_unreadable_upload_through_gradio_client(client, tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"plain text, not a picture")
    with pytest.raises(AppError, match="PNG or JPEG"):
        client.predict(handle_file(str(path)), api_name="/predict")


# --- the command line ---------------------------------------------------------------------------


def test_cli_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        # the tunnel tests run `python -m lab_code.serving app` as a real process
        app.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m lab_code.serving app")
    for flag in ("--host", "--port", "--backend-url", "--share", "--tunnel", "--auth", "--no-auth"):
        assert flag in out


def test_port_in_use_is_one_sentence(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert app.main(["--port", str(port)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"port {port}" in err and "already in use" in err


def test_auth_flag_needs_user_and_password(capsys):
    with pytest.raises(SystemExit) as exit_info:
        app.build_parser().parse_args(["--auth", "nopassword"])
    assert exit_info.value.code == 2
    assert "USER:PASSWORD" in capsys.readouterr().err


# --- remote backend mode, against a stand-in of the serverless backend --------------------------


class StandInBackend(BaseHTTPRequestHandler):
    """Answers like the serverless backend: POST {"image": base64 PNG} -> {"text": ...}."""

    recognizer: TextRecognizer

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/broken":
            return self._reply(502, b"Bad gateway", "text/plain")
        if self.path == "/refuse":
            return self._reply(400, b'{"error": "Send a PNG, please."}', "application/json")
        try:
            img = images.open_image_bytes(base64.b64decode(json.loads(body)["image"]), "image")
            answer, status = {"text": self.recognizer.predict(img)}, 200
        except (ValueError, KeyError) as err:
            answer, status = {"error": str(err) or "Send JSON with an image."}, 400
        self._reply(status, json.dumps(answer).encode(), "application/json")

    def _reply(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass


@pytest.fixture(scope="module")
def backend_url(recognizer) -> Iterator[str]:
    StandInBackend.recognizer = recognizer
    with serve_http(StandInBackend) as base:
        yield f"{base}/"


def test_remote_backend_matches_local(backend_url, recognizer):
    path = next(p for p in app.example_paths() if p.name == "page_3_lines.png")
    img = Image.open(path)
    assert app.PredictorBackend(backend_url).run(img) == recognizer.predict(img)


def test_remote_backend_errors_are_one_sentence(backend_url):
    img = Image.new("RGB", (40, 20), "white")
    with pytest.raises(app.BackendError, match="^Send a PNG, please.$"):
        app.PredictorBackend(backend_url + "refuse").run(img)
    with pytest.raises(app.BackendError, match="HTTP 502 without JSON"):
        app.PredictorBackend(backend_url + "broken").run(img)
    with pytest.raises(app.BackendError, match="Cannot reach the backend"):
        app.PredictorBackend(f"http://127.0.0.1:{_port()}/", timeout=5).run(img)


def test_ui_in_front_of_remote_backend(backend_url, recognizer):
    demo = app.make_frontend(app.PredictorBackend(backend_url))
    port = _port()
    try:
        url, _ = app.launch(demo, "127.0.0.1", port)
        path = app.example_paths()[1]
        text = Client(url, verbose=False).predict(handle_file(str(path)), api_name="/predict")
        assert text == recognizer.predict(path)
    finally:
        demo.close()
    assert _port_is_free(port)


def test_ui_says_when_backend_is_unreachable(recognizer):
    demo = app.make_frontend(app.PredictorBackend(f"http://127.0.0.1:{_port()}/", timeout=5))
    port = _port()
    try:
        url, _ = app.launch(demo, "127.0.0.1", port)
        event, data = call_http(url, data_url(app.example_paths()[0].read_bytes()))
        assert event == "error" and data["error"].startswith("Cannot reach the backend")
    finally:
        demo.close()
