# %% [context]
import base64
import contextlib
import json
import time

import gradio as gr
import requests
from gradio_client import Client, handle_file

from lab_code.serving import app
from lab_code.recognizer import TextRecognizer

recognizer = TextRecognizer()
backend = app.PredictorBackend()
page = next(p for p in app.example_paths() if p.name == "page_3_lines.png")


@contextlib.contextmanager
def serving(demo):
    """Serve a Gradio app on 127.0.0.1, with the course's limits, for a `with` block; then close it."""
    url, _ = app.launch(demo)
    try:
        yield url.rstrip("/")
    finally:
        demo.close()

# %% [exercise 1]
def make_blocks_frontend(predict_fn):
    """The page of make_frontend, laid out with gr.Blocks; API endpoint /predict."""
    with gr.Blocks(title=app.TITLE) as demo:
        gr.Markdown(f"# {app.TITLE}\n\n{app.DESCRIPTION}")
        with gr.Row():
            image = app.image_input()
            text = gr.Textbox(label="Recognized text", lines=3)
        button = gr.Button("Submit", variant="primary")
        gr.Examples([[str(p)] for p in app.example_paths()], inputs=image)
        gr.Markdown(app.ARTICLE)
        button.click(app.make_predict(predict_fn), inputs=image, outputs=text, api_name="predict")
    return demo


with serving(make_blocks_frontend(backend)) as url:
    result = Client(url, verbose=False).predict(handle_file(str(page)), api_name="/predict")
print(result)
print("same as TextRecognizer:", result == recognizer.predict(page))
# Blocks gives full control of the layout (rows, columns, tabs, several buttons and outputs);
# Interface is the quick path when the page is "inputs -> function -> outputs".

# %% [exercise 2]
def mean_ms(fn, repeats=5):
    """Mean wall time of fn() in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return sum(times) / len(times)


with serving(app.make_frontend(backend)) as url:
    client = Client(url, verbose=False)
    client.predict(handle_file(str(page)), api_name="/predict")  # warm-up
    through_api = mean_ms(lambda: client.predict(handle_file(str(page)), api_name="/predict"))
model_only = mean_ms(lambda: recognizer.predict(page))
print(f"gradio_client: {through_api:6.0f} ms   model alone: {model_only:6.0f} ms   "
      f"web layer: {through_api - model_only:6.0f} ms")
# The extra time is the upload of the file, the queue, JSON and the event stream, plus decoding
# the PNG again on the server. On this machine it is of the same order as the tiny model itself;
# for a model that takes 2 s it would be noise. Measure before optimizing either.

# %% [exercise 3]
def call_raw(base, payload):
    """(event name, decoded data) of the last event for {"data": [payload]}."""
    queued = requests.post(f"{base}/gradio_api/call/predict", json={"data": [payload]},
                           timeout=30)
    queued.raise_for_status()
    stream = requests.get(f"{base}/gradio_api/call/predict/{queued.json()['event_id']}",
                          timeout=60).text
    event, data = stream.strip().split("\n\n")[-1].splitlines()[:2]
    return event.removeprefix("event: "), json.loads(data.removeprefix("data: "))


not_an_image = "data:image/png;base64," + base64.b64encode(b"hello").decode()
with serving(app.make_frontend(backend)) as url:
    for name, payload in [("no image", None), ("not an image", {"url": not_an_image}),
                          ("a real image", {"url": "data:image/png;base64,"
                                            + base64.b64encode(page.read_bytes()).decode()})]:
        print(f"{name:13}", call_raw(url, payload))
# Step 1 only puts the job in the queue: the server has not looked at the input yet, so it answers
# 200 with an event_id. Whether the job worked is known later, and arrives on the event stream as
# `event: error` (with the gr.Error sentence) or `event: complete`.
