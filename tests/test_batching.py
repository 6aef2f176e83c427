"""LitServe with server-side batching (lab_code.serving.batching): its hooks in process (one model
call per batch, each text back to its own request, a bad request answered alone), the command
line, and `python -m lab_code.serving batching` over real HTTP: the recognizer's text, concurrent
requests batched and unbatched in order, the service's errors, and a stop that leaves nothing
behind."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import requests

from lab_code.artifacts import model_version
from lab_code.recognizer import TextRecognizer, model_file
from lab_code.serving import batching, serverless
from lab_code.serving.errors import ApiError
from lab_code.serving.limits import MAX_BODY_BYTES, ServiceLimits
from lab_code.serving.ports import free_port, port_in_use
from lab_code.serving.processes import start_background, stop_background
from lab_code.serving.schemas import PredictRequest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "lab_code" / "assets" / "examples"
REALWORLD = ROOT / "tests" / "data" / "realworld"
PAGE, LINE = EXAMPLES / "page_3_lines.png", EXAMPLES / "line_sans.png"


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def screenshots(n: int) -> list[Path]:
    """The first n screenshots of the real-world set (one line of text each)."""
    records = json.loads((REALWORLD / "labels.json").read_text(encoding="utf-8"))
    return [REALWORLD / r["file"] for r in records if r["family"] == "screenshot"][:n]


def service_refusal(body: dict) -> tuple[int, str]:
    """The status and sentence lab_code.serving.serverless answers this request body with."""
    with pytest.raises(ApiError) as refused:
        source, name = serverless.request_source(PredictRequest(**body))
        serverless.request_lines(source, name, ServiceLimits())
    return refused.value.status, refused.value.message


def batch_size(resp: requests.Response) -> int:
    """N of the `batch;desc=N` Server-Timing entry: how many requests shared the model pass."""
    for part in resp.headers.get("server-timing", "").split(","):
        name, _, desc = part.strip().partition(";desc=")
        if name == "batch":
            return int(desc)
    raise AssertionError(f"no batch entry in Server-Timing: {resp.headers}")


def assert_one_sentence_error(resp: requests.Response, status: int, phrase: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert list(body) == ["error"], body
    message = body["error"]
    assert phrase in message, message
    assert message.endswith(".") and "\n" not in message and "Traceback" not in message


@pytest.fixture(scope="module")
def recognizer() -> TextRecognizer:
    """The production recognizer (bundled model): what every answer must match."""
    return TextRecognizer()


# --- the hooks, in process, with a stand-in model ---------------------------------------------
class CountingModel:
    """Stands in for TextRecognizer.predict_lines: each line's text is its ink sum, so a text
    that lands on the wrong request shows; every call is recorded."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_lines(self, lines: list[np.ndarray]) -> list[str]:
        self.calls.append(len(lines))
        return [f"{float(line.sum()):.3f}" for line in lines]


def stand_in_api(max_batch_size: int):
    api = batching.make_api(max_batch_size=max_batch_size, batch_timeout=0.01)
    api.recognizer, api.version, api.limits = CountingModel(), "v1", ServiceLimits()
    return api


def run_hooks(api, bodies: list[dict]) -> list:
    """What LitServe's batched loop does with one batch: decode each, batch, predict, unbatch,
    encode each."""
    jobs = [api.decode_request(PredictRequest(**body)) for body in bodies]
    return [api.encode_response(out) for out in api.unbatch(api.predict(api.batch(jobs)))]


def test_one_model_call_per_batch_and_each_text_back_to_its_request():
    bodies = [{"image": b64(PAGE)}, {"image": b64(LINE)}, {"image": "!"},
              {"image": b64(EXAMPLES / "line_mono.png")}]
    api = stand_in_api(max_batch_size=4)
    answers = run_hooks(api, bodies)
    assert api.recognizer.calls == [3 + 1 + 1], "all the batch's lines in one predict_lines call"
    alone = stand_in_api(max_batch_size=1)
    for body, got in zip(bodies, answers, strict=True):
        want = alone.encode_response(alone.predict(alone.decode_request(
            PredictRequest(**body))))
        assert json.loads(got.body) == json.loads(want.body) and got.status_code == want.status_code
    texts = [json.loads(a.body).get("text") for a in answers[:2] + answers[3:]]
    assert len(set(texts)) == 3 and texts[0].count("\n") == 2  # distinct: a swap would show
    assert alone.recognizer.calls == [3, 1, 1]  # one job per predict; no model call for "!"
    assert all("batch;desc=4" in a.headers["server-timing"] for a in answers)


def test_a_bad_request_is_refused_alone_with_the_services_sentence():
    answers = run_hooks(stand_in_api(max_batch_size=3), [{"image": b64(LINE)}, {"image": "!"},
                                                         {"image_url": "https://example.com/a"}])
    assert answers[0].status_code == 200 and json.loads(answers[0].body)["lines"] == 1
    status, message = service_refusal({"image": "!"})
    assert (answers[1].status_code, json.loads(answers[1].body)) == (status, {"error": message})
    assert answers[2].status_code == 400
    assert json.loads(answers[2].body) == {"error": batching.NO_URLS}


# --- the command line -------------------------------------------------------------------------
def test_help_shows_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        batching.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "python -m lab_code.serving batching" in out and "/predict" in out
    for flag in ("--host", "--port", "--max-batch-size", "--batch-timeout", "--workers"):
        assert flag in out
    assert serverless.MODEL_ENV in out and "pip install litserve" in out


def test_the_help_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "lab_code.serving", "batching", "--help"],
                          cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--max-batch-size" in done.stdout


def one_error_line(err: str) -> bool:
    return err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_a_port_in_use_is_one_sentence_and_exit_1(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert batching.main(["--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert one_error_line(err) and "already in use" in err


def test_without_litserve_one_sentence_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "litserve", None)  # `import litserve` raises ImportError
    assert batching.main(["--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {batching.INSTALL}\n"
    assert "pip install litserve" in err and 'pip install -e ".[fast]"' in err


def test_a_missing_model_file_is_one_sentence_and_exit_1(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(serverless.MODEL_ENV, str(tmp_path / "missing.pt"))
    assert batching.main(["--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert one_error_line(err) and "No model file at" in err


@pytest.mark.parametrize("argv", [["--port", "80"], ["--max-batch-size", "0"], ["--workers", "0"],
                                  ["--batch-timeout", "-1"], ["--batch-timeout", "60"]])
def test_settings_litserve_refuses_are_one_sentence_and_exit_2(argv, capsys):
    assert batching.main(argv) == 2
    assert one_error_line(capsys.readouterr().err)


# --- over real HTTP: python -m lab_code.serving batching
# ----------------------------------------------
def family(pid: int) -> list[int]:
    """Every process below `pid` (Linux: /proc/PID/task/TID/children)."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:  # the thread or process has just ended
                continue
            found += kids
            todo += kids
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def left_behind(pids: list[int], timeout: float = 15.0) -> list[int]:
    """The processes still running after `timeout` seconds (none, if all end sooner); they are
    killed, so that a failing test leaves nothing behind either."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(running(p) for p in pids):
        time.sleep(0.1)
    left = [p for p in pids if running(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


needs_proc = pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task").is_dir(),
                                reason="reads the process tree from Linux's /proc")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The batching server on a free port. Its batch timeout is 0.2 s (not the default 5 ms) so
    that a test's concurrent requests, sent from a busy 2-core machine, surely share a batch."""
    port = free_port()
    log = tmp_path_factory.mktemp("batching") / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = start_background(["lab_code.serving", "batching", "--port", str(port),
                             "--max-batch-size", "8",
                             "--batch-timeout", "0.2"], url + "/health", log)
    try:
        yield SimpleNamespace(url=url, predict=url + batching.API_PATH, log=log)
    finally:
        assert stop_background(proc) == 0


def post_together(url: str, bodies: list[dict]) -> list[requests.Response]:
    """POST every body at the same moment, one thread (and connection) each."""
    start, answers = threading.Barrier(len(bodies)), [None] * len(bodies)

    def send(i: int) -> None:
        with requests.Session() as session:
            start.wait()
            answers[i] = session.post(url, json=bodies[i], timeout=120)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


@pytest.mark.slow
def test_a_request_gets_the_recognizers_text(server, recognizer):
    resp = requests.post(server.predict, json={"image": b64(PAGE)}, timeout=60)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.json() == {"text": recognizer.predict(PAGE), "lines": 3,
                           "model_version": model_version(model_file())}  # the file it serves
    stages = resp.headers["server-timing"]
    assert all(f"{s};dur=" in stages for s in ("decode", "lines", "model")) and batch_size(resp)
    assert requests.get(server.url + "/health", timeout=10).text == "ok"


@pytest.mark.slow
def test_concurrent_requests_share_a_batch_and_each_gets_its_own_text(server, recognizer):
    paths = screenshots(8)
    expected = [recognizer.predict(p) for p in paths]
    assert len(set(expected)) == len(paths)  # all different, so a swapped answer shows
    sizes: list[int] = []
    for _ in range(3):  # until some requests have really shared a model pass
        answers = post_together(server.predict, [{"image": b64(p)} for p in paths])
        assert [a.status_code for a in answers] == [200] * len(paths)
        assert [a.json()["text"] for a in answers] == expected
        sizes = [batch_size(a) for a in answers]
        if max(sizes) > 1:
            break
    assert max(sizes) > 1, f"the requests never shared a batch: {sizes}"


@pytest.mark.slow
def test_a_broken_image_in_a_batch_fails_only_itself(server, recognizer):
    paths = screenshots(3)
    expected = [recognizer.predict(p) for p in paths]
    bodies = [{"image": b64(paths[0])}, {"image": "!"}, {"image": b64(paths[1])},
              {"image": b64(paths[2])}]
    status, message = service_refusal({"image": "!"})
    for _ in range(3):  # until the broken one has shared its batch with good ones
        answers = post_together(server.predict, bodies)
        assert_one_sentence_error(answers[1], status, message)
        assert [a.json()["text"] for a in answers[:1] + answers[2:]] == expected
        if batch_size(answers[1]) > 1:
            break
    assert batch_size(answers[1]) > 1, "the broken image never shared a batch"


# (id, method, path, body or JSON, content type, status, a phrase of the sentence)
NOT_AN_IMAGE = base64.b64encode(b"plain text, not a PNG").decode()
BAD_REQUESTS = [
    ("not-base64", "POST", "/predict", {"image": "!"}, None, *service_refusal({"image": "!"})),
    ("not-an-image", "POST", "/predict", {"image": NOT_AN_IMAGE}, None,
     *service_refusal({"image": NOT_AN_IMAGE})),
    ("image-url", "POST", "/predict", {"image_url": "https://example.com/a.png"}, None, 400,
     batching.NO_URLS),
    ("no-field", "POST", "/predict", {}, None, 400, batching.NO_IMAGE),
    ("unknown-field", "POST", "/predict", {"imgae": "x"}, None, 400, 'Unknown field "imgae"'),
    ("not-json", "POST", "/predict", "image=line.png", "application/json", 400,
     "not valid JSON"),
    ("no-content-type", "POST", "/predict", json.dumps({"image": "x"}), "", 415,
     "Content-Type: application/json"),
    ("get", "GET", "/predict", "", None, 405, "GET is not allowed on /predict: use POST"),
    ("post-to-root", "POST", "/", {"image": "x"}, None, 405, "POST your JSON to /predict"),
    ("other-path", "POST", "/other", {"image": "x"}, None, 404, "Nothing at /other"),
    ("over-6-mb", "POST", "/predict", "x" * (MAX_BODY_BYTES + 10), "application/json",
     413, "6 MB"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_the_services_one_sentence_errors(server, case):
    _, method, path, body, content_type, status, phrase = case
    if isinstance(body, dict):
        resp = requests.request(method, server.url + path, json=body, timeout=60)
    else:
        headers = {"content-type": content_type} if content_type else {}
        resp = requests.request(method, server.url + path, data=body.encode(), headers=headers,
                                timeout=60)
    assert_one_sentence_error(resp, status, phrase)


@pytest.mark.slow
@needs_proc
def test_the_documented_command_serves_then_stops_leaving_nothing_behind(tmp_path, monkeypatch,
                                                                         recognizer):
    monkeypatch.chdir(tmp_path)  # LitServe would write a client.py here unless told not to
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_background(["lab_code.serving", "batching", "--host", "127.0.0.1", "--port",
                             str(port),
                             "--max-batch-size", "16", "--batch-timeout", "0.005", "--workers",
                             "1"], url + "/health", tmp_path / "server.log")
    try:
        children = family(proc.pid)
        # a Manager, multiprocessing's resource tracker, one inference and one uvicorn process
        assert len(children) == 4, children
        resp = requests.post(url + "/predict", json={"image": b64(LINE)}, timeout=60)
        assert resp.status_code == 200 and resp.json()["text"] == recognizer.predict(LINE)
    finally:
        code = stop_background(proc)
        left = left_behind(children)
    assert left == [], "processes left running after the server stopped"
    assert code == 0 and not port_in_use("127.0.0.1", port)
    assert "Traceback" not in (tmp_path / "server.log").read_text()  # each process stopped cleanly
    assert list(tmp_path.iterdir()) == [tmp_path / "server.log"]


@pytest.mark.slow
@needs_proc
def test_a_stop_while_the_model_loads_leaves_nothing_behind(tmp_path):
    port = free_port()
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lab_code.serving", "batching", "--port",
                                 str(port)],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(  # the inference worker has started
                b"spawn_main" in cmdline(p) for p in family(proc.pid)):
            time.sleep(0.05)
        children = family(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        left = left_behind(children)
    assert left == [] and code == 0 and not port_in_use("127.0.0.1", port)
    # the worker is stopped, not left to finish loading and die on the closed queues
    assert "Traceback" not in (tmp_path / "server.log").read_text()


@pytest.mark.slow
def test_with_batching_off_every_request_still_gets_its_own_text(tmp_path, recognizer):
    """--max-batch-size 1, the lesson's other setting: LitServe's unbatched loop calls predict
    with one request and never calls batch or unbatch."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_background(["lab_code.serving", "batching", "--port", str(port),
                             "--max-batch-size", "1"],
                            url + "/health", tmp_path / "server.log")
    try:
        paths = screenshots(4)
        answers = post_together(url + "/predict", [{"image": b64(p)} for p in paths] +
                                [{"image": "!"}])
        assert [a.json().get("text") for a in answers[:4]] == [recognizer.predict(p)
                                                               for p in paths]
        assert_one_sentence_error(answers[4], *service_refusal({"image": "!"}))
        assert [batch_size(a) for a in answers] == [1] * 5
    finally:
        assert stop_background(proc) == 0


# --- what LitServe meets in public (issue 22's probes) -----------------------------------------
@pytest.mark.slow
def test_a_scan_bomb_does_not_hold_up_the_inference_loop(server, recognizer):
    """Before: LitServe decoded in its one inference process, so a 189 KB JPEG of 1000 scans
    held every request for its half minute. Now it is refused from its bytes in a decoding
    worker, and the request behind it is answered at once."""
    import hostile

    bomb = {"image": base64.b64encode(hostile.scan_bomb(5000, 1000)).decode()}
    paths = screenshots(1)
    start = time.perf_counter()
    answers = post_together(server.predict, [bomb, {"image": b64(paths[0])}])
    assert time.perf_counter() - start < 10
    assert answers[0].status_code == 422 and "scans" in answers[0].json()["error"]
    assert answers[1].status_code == 200 and answers[1].json()["text"] == \
        recognizer.predict(paths[0])


@pytest.mark.slow
def test_litserve_has_the_services_header_and_host_limits(server):
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])),
                                  timeout=60) as sock:
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                         + b"a" * 32 * 2**20 + b"\r\n\r\n")
        except OSError:
            pass
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400") and b"over 16 KB" in reply
    resp = requests.post(server.predict, json={"image": "x"}, headers={"host": "evil.example"},
                         timeout=60)
    assert_one_sentence_error(resp, 400, "--allowed-hosts evil.example")
    resp = requests.post(server.predict, data=hostile_keys(), timeout=60,
                         headers={"content-type": "application/json"})
    assert_one_sentence_error(resp, 400, 'Unknown field "k0"')


def hostile_keys() -> bytes:
    import hostile

    return hostile.many_keys(400_000)
