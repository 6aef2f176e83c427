# %% [context]
import atexit
import base64
import copy
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import requests
from PIL import Image

import lab_code
from lab_code.serving import lambda_function  # the Lambda entry module: loads the model once
from lab_code.serving.ports import free_port
from lab_code.serving.processes import start_background, stop_background

ROOT = Path(lab_code.__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "lambda"
template = json.loads((FIXTURES / "post_image.json").read_text())
image_b64 = json.loads(template["body"])["image"]

# The local service, as in the lesson (exercise 3 stops it when it is done).
PORT = free_port()
URL = f"http://127.0.0.1:{PORT}/"
logs = Path(tempfile.mkdtemp(prefix="lesson04-solutions-"))
service = start_background(["lab_code.serving", "serverless", "--port", str(PORT)], URL + "health",
                           logs / "service.log")
atexit.register(stop_background, service)
print("service at", URL)

# %% [exercise 1]
def binary_event(payload: dict, content_type: str | None = None) -> dict:
    """The Function URL event for a POST whose body AWS took as binary (base64-encoded)."""
    ev = copy.deepcopy(template)
    raw = json.dumps(payload).encode()
    ev["body"] = base64.b64encode(raw).decode()
    ev["isBase64Encoded"] = True
    ev["headers"]["content-length"] = str(len(raw))  # the length of what the client sent
    ev["headers"].pop("content-type", None)
    if content_type:
        ev["headers"]["content-type"] = content_type
    return ev


answer = lambda_function.handler(binary_event({"image": image_b64}), None)
text = json.loads(answer["body"])["text"]
print(answer["statusCode"], repr(text))
assert text == lambda_function.RECOGNIZER.predict(Image.open(io.BytesIO(base64.b64decode(image_b64))))

form = lambda_function.handler(binary_event({"image": image_b64},
                                            "application/x-www-form-urlencoded"), None)
print(form["statusCode"], json.loads(form["body"])["error"])
# Without a Content-Type the service still reads the body as JSON (FastAPI's
# strict_content_type=False); with a form Content-Type it refuses, and says which header to send.

# %% [exercise 2]
def read_text(url: str, path: str | Path) -> str:
    """Text of the image file at `path`, read by the backend at `url`."""
    payload = {"image": base64.b64encode(Path(path).read_bytes()).decode()}
    try:
        resp = requests.post(url, json=payload, timeout=30)
    except requests.ConnectionError as err:
        raise RuntimeError(f"Cannot reach the backend at {url}: is it running?") from err
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code == 200:
        return body["text"]
    if 400 <= resp.status_code < 500 and "error" in body:
        raise RuntimeError(body["error"])  # the server's own sentence: it knows what was wrong
    raise RuntimeError(f"The backend at {url} failed with HTTP {resp.status_code}.")


examples = ROOT / "lab_code" / "assets" / "examples"
print(repr(read_text(URL, examples / "line_serif.png")))
for url, path in [(URL, ROOT / "lab_code" / "assets" / "words.txt"),
                  (f"http://127.0.0.1:{free_port()}/", examples / "line_serif.png")]:
    try:
        read_text(url, path)
    except RuntimeError as err:
        print("RuntimeError:", err)
# A client passes on the server's sentence for a 4xx (the caller can fix the request) and says
# plainly when the server cannot be reached. PredictorBackend._post in lab_code/serving/app.py does the
# same, plus a timeout message.

# %% [exercise 3]
def median_ms(fn, n: int = 20) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


rows = {}
for name in ("line_sans.png", "page_3_lines.png"):
    path = ROOT / "lab_code" / "assets" / "examples" / name
    payload = {"image": base64.b64encode(path.read_bytes()).decode()}
    server_ms = []
    session = requests.Session()

    def call():
        resp = session.post(URL, json=payload, timeout=30)
        server_ms.append(resp.json()["latency_ms"])

    call()  # warm-up
    round_trip = median_ms(call)
    img = Image.open(path)
    lambda_function.RECOGNIZER.predict(img)  # warm-up
    rows[name] = (round_trip, statistics.median(server_ms[1:]),
                  median_ms(lambda img=img: lambda_function.RECOGNIZER.predict(img)))

print(f"{'image':<18} {'round trip':>11} {'latency_ms':>11} {'in process':>11} {'HTTP overhead':>14}")
for name, (trip, server, local) in rows.items():
    print(f"{name:<18} {trip:11.1f} {server:11.1f} {local:11.1f} {trip - server:14.1f}")
# The overhead (round trip minus the server's own time) is a few milliseconds and barely grows
# with the image: the TCP connection, HTTP parsing, JSON, base64 and the framework's routing.
# Recognizing more lines costs far more than shipping a few more kilobytes.

stop_background(service)  # done with the service
print("service stopped")
