"""The Gradio frontend in front of the serverless backend, as lesson 04 runs them: two processes,
`python -m lab_code.serving serverless --port P1` and `python -m lab_code.serving app --backend-url
http://127.0.0.1:P1/ --port P2`, called with gradio_client."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from lab_code.recognizer import TextRecognizer
from lab_code.serving.ports import free_port
from lab_code.serving.processes import start_background, stop_background
from lab_code.training import data

ROOT = Path(__file__).resolve().parents[1]


def test_gradio_frontend_with_backend_url_reads_like_the_recognizer(tmp_path):
    if importlib.util.find_spec("lab_code.serving.app") is None:
        pytest.skip("lab_code.serving.app cannot be imported: there is no frontend to put in front")
    pytest.importorskip("gradio_client")
    from gradio_client import Client, handle_file

    png = tmp_path / "line.png"
    data.render("frontend meets backend", data.Style.clean(data.fonts()[0], size=28)).save(png)
    backend_port, ui_port = free_port(), free_port()
    while ui_port == backend_port:
        ui_port = free_port()
    backend_url = f"http://127.0.0.1:{backend_port}/"
    backend = start_background(["lab_code.serving", "serverless", "--port", str(backend_port)],
                               backend_url + "health", tmp_path / "backend.log")
    try:
        ui_args = ["lab_code.serving", "app", "--backend-url", backend_url, "--port", str(ui_port)]
        ui = start_background(ui_args, f"http://127.0.0.1:{ui_port}/", tmp_path / "app.log")
        try:
            client = Client(f"http://127.0.0.1:{ui_port}/", verbose=False)
            text = client.predict(handle_file(str(png)), api_name="/predict")
        finally:
            stop_background(ui)
    finally:
        stop_background(backend)
    assert text == TextRecognizer().predict(Image.open(png))
    # the text really came from the backend: it logged one successful request of that length
    logged = [json.loads(x) for x in (tmp_path / "backend.log").read_text().splitlines()
              if x.startswith("{")]
    answered = [x["text_chars"] for x in logged if x.get("path") == "/" and x["status"] == 200]
    assert answered == [len(text)]
