"""Lesson 08's serving side, in process: /metrics (checked by promtool), the prediction log in
SQLite and in a real PostgreSQL (N requests, N rows; no image, no text), corrections with consent
and their export, EMF lines in Lambda, confidence and drift. The multi-process service and a real
Prometheus are in test_prometheus.py; the replayed day in test_day.py."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import postgres
import pytest
from PIL import Image
from stand_ins import local_client

from lab_code import images
from lab_code.serving import corrections, drift, emf, metrics, ports, predictions, serverless
from lab_code.serving.watch import Watch, WatchConfig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "lab_code" / "assets" / "examples"
LINE = (EXAMPLES / "line_sans.png").read_bytes()
PAGE = (EXAMPLES / "page_3_lines.png").read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def recognizer():
    return serverless.load_recognizer()


def watched(recognizer, db: str | None, **config):
    watch = Watch(WatchConfig(db=db, **config))
    return local_client(serverless.create_app(recognizer, watch=watch)), watch


def promtool_check(text: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must check /metrics with promtool (apt-get install prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)


def samples(text: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


# --- /metrics ------------------------------------------------------------------------------------
def test_metrics_count_every_request_by_route_and_status_and_pass_promtool(recognizer, tmp_path):
    client, watch = watched(recognizer, str(tmp_path / "w.sqlite"))
    with client:
        for _ in range(3):
            assert client.post("/", json={"image": b64(LINE)}).status_code == 200
        assert client.post("/", json={"image": b64(PAGE)}).status_code == 200
        assert client.post("/", json={"image": b64(b"not an image")}).status_code == 422
        assert client.post("/", json={}).status_code == 400
        assert client.get("/health").status_code == 200
        for path in ("/nope", "/wp-admin/x", "/../etc"):  # arbitrary paths share one label
            assert client.get(path).status_code == 404
        text = client.get("/metrics").text
    got = samples(text)

    def value(name, **labels):
        return got.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("ocr_requests_total", route="/", status="200") == 4
    assert value("ocr_requests_total", route="/", status="422") == 1
    assert value("ocr_requests_total", route="/", status="400") == 1
    assert value("ocr_requests_total", route="/health", status="200") == 1
    assert value("ocr_requests_total", route="other", status="404") == 3
    assert value("ocr_refusals_total", status="422", reason=metrics.REFUSALS[422]) == 1
    assert value("ocr_model_info", version=watch.version) == 1
    assert value("ocr_line_confidence_count") == 3 + 3  # three lines, and a page of three
    assert value("ocr_request_seconds_count", route="/") == 6
    for stage in ("decode", "lines", "queue", "model", "handler"):
        assert value("ocr_stage_seconds_count", stage=stage) == 4, stage
    assert value("ocr_requests_waiting") == 0
    names = {name for name, _ in got}
    assert {m for m in metrics.METRICS if metrics.METRICS[m].kind != "histogram"} - {
        "ocr_input_drift_psi"} <= names  # drift figures need MIN_WINDOW rows
    checked = promtool_check(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert promtool_check("ocr_x_seconds 1\n").returncode != 0  # the check can fail


def test_without_a_watch_the_service_serves_no_metrics_and_no_prediction_id(recognizer):
    with local_client(serverless.create_app(recognizer)) as client:
        assert client.get("/metrics").status_code == 404
        assert "prediction_id" not in client.post("/", json={"image": b64(LINE)}).json()


# --- the prediction log ---------------------------------------------------------------------
def check_rows(log: predictions.PredictionLog, answers: list[dict]) -> None:
    assert log.flush(10)
    assert log.count() == len(answers)
    for answer in answers:
        row = log.find(answer["prediction_id"])
        assert row is not None and row["lines"] == answer["lines"] and row["source"] == "api"
        assert row["chars"] == len(answer["text"]) and 0 < row["confidence"] <= 1
        assert row["width"] > 0 and 0 <= row["brightness"] <= 1 and row["ms_model"] > 0
        assert row["model_version"] == answer["model_version"]
        stored = " ".join(str(v) for v in row.values())
        assert answer["text"] not in stored  # no text is kept


def send(client, n: int) -> list[dict]:
    out = []
    for i in range(n):
        resp = client.post("/", json={"image": b64(PAGE if i % 3 == 0 else LINE)})
        assert resp.status_code == 200
        out.append(resp.json())
    return out


def test_n_predictions_make_n_rows_in_sqlite_with_no_image_and_no_text(recognizer, tmp_path):
    client, watch = watched(recognizer, str(tmp_path / "w.sqlite"))
    with client:
        answers = send(client, 7)
        client.post("/", json={"image": b64(b"junk")})  # refused: not a prediction
        check_rows(watch.log, answers)
    columns = set(predictions.COLUMNS)
    assert not columns & {"text", "image", "url"}, "a prediction row must not hold content"


def test_n_predictions_make_n_rows_in_postgresql(recognizer):
    if postgres.binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must test the PostgreSQL log (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    with postgres.server() as url:
        client, watch = watched(recognizer, url)
        with client:
            answers = send(client, 5)
            check_rows(watch.log, answers)
            first = answers[-1]
            resp = client.post("/corrections", json={
                "prediction_id": first["prediction_id"], "text": "Deploying a model",
                "image": b64(LINE), "consent": True})
            assert resp.status_code == 200, resp.text
            assert corrections.count(watch.log.store) == 1
        # a second instance (a second connection) sees the same log
        other = predictions.PredictionLog(predictions.Store(url))
        assert other.count() == 5
        other.close()


def test_the_log_keeps_its_bounds(tmp_path):
    log = predictions.PredictionLog(predictions.Store(tmp_path / "w.sqlite"),
                                    predictions.LogLimits(max_rows=10, retention_days=1))
    now = 1_800_000_000.0
    for i in range(15):
        log.write({"id": f"r{i}", "time": now - 100 + i})
    log.write({"id": "old", "time": now - 3 * 86400})
    assert log.flush()
    log.prune(now=now)
    kept = [r["id"] for r in log.recent(100)]
    assert kept == [f"r{i}" for i in range(5, 15)]  # the 10 newest, nothing past retention
    log.close()


def test_a_reader_waits_for_a_row_another_process_writes_late(tmp_path):
    writer = predictions.PredictionLog(predictions.Store(tmp_path / "w.sqlite"))
    reader = predictions.PredictionLog(predictions.Store(tmp_path / "w.sqlite"))
    writer.store._lock.acquire()  # the service's writer is busy: its row comes late
    writer.write({"id": "late", "time": 1.0, "chars": 7})
    threading.Timer(0.5, writer.store._lock.release).start()
    assert reader.find("late") is None
    assert reader.wait_for("late", timeout=10)["chars"] == 7
    with pytest.raises(LookupError, match="No row for prediction never .* after 0.2 s"):
        reader.wait_for("never", timeout=0.2)
    writer.close()
    reader.close()


def test_waiting_in_vain_on_a_postgresql_log_does_not_show_its_password(tmp_path):
    log = predictions.PredictionLog(predictions.Store(tmp_path / "w.sqlite"))
    log.store.url, log.store.postgres = "postgresql://course:s3cret@db.internal/log", True
    log.find = lambda prediction_id: None  # the store stays SQLite underneath
    with pytest.raises(LookupError) as err:
        log.wait_for("never", timeout=0.05)
    assert "s3cret" not in str(err.value) and "PostgreSQL log" in str(err.value)
    log.close()


def test_a_full_queue_drops_rows_and_counts_them(tmp_path):
    dropped = []
    log = predictions.PredictionLog(predictions.Store(tmp_path / "w.sqlite"),
                                    predictions.LogLimits(queue_rows=1), on_drop=dropped.append)
    log.store._lock.acquire()  # the writer is stuck on the database
    try:
        for i in range(50):
            log.write({"id": str(i), "time": 1.0})
    finally:
        log.store._lock.release()
    log.flush()
    assert sum(dropped) == log.dropped >= 45
    log.close()


# --- corrections -----------------------------------------------------------------------------
def test_corrections_need_consent_a_logged_prediction_and_its_image(recognizer, tmp_path):
    client, watch = watched(recognizer, str(tmp_path / "w.sqlite"))
    with client:
        pid = client.post("/", json={"image": b64(LINE)}).json()["prediction_id"]

        def correct(**change):
            body = {"prediction_id": pid, "text": "Deploying a model is half the work.",
                    "image": b64(LINE), "consent": True} | change
            return client.post("/corrections", json=body)

        refused = {
            "no consent": (correct(consent=False), 400),
            "unknown id": (correct(prediction_id="f" * 16), 404),
            "bad id": (correct(prediction_id="../../x"), 400),
            "another image": (correct(image=b64(PAGE)), 422),
            "not an image": (correct(image=b64(b"junk")), 422),
            "empty text": (correct(text="   \n "), 422),
            "a novel": (correct(text="x" * 5000), 422),
            "control chars": (correct(text="a\x00b"), 422),
            "extra field": (correct(url="http://x"), 400),
        }
        assert "consent" in refused["extra field"][0].json()["error"]
        for name, (resp, status) in refused.items():
            assert resp.status_code == status, (name, resp.text)
            assert set(resp.json()) == {"error"} and resp.json()["error"].endswith("."), name
        assert corrections.count(watch.log.store) == 0, "a refused correction stored something"
        ok = correct(text="  Deploying a model\tis half the work. ")
        assert ok.status_code == 200 and ok.json()["corrections"] == 1
        again = correct(text="Deploying a model is half the work!")  # the user fixes a typo
        assert again.json()["corrections"] == 1
        out = tmp_path / "set"
        labels = json.loads(corrections.export(watch.log.store, out).read_text())
    assert len(labels) == 1 and labels[0]["text"] == "Deploying a model is half the work!"
    realworld = json.loads((ROOT / "tests/data/realworld/labels.json").read_text())[0]
    assert {"file", "family", "text"} <= set(labels[0]) and set(realworld) >= {"file", "family"}
    stored = Image.open(out / labels[0]["file"])
    assert stored.format == "PNG" and stored.size == Image.open(io.BytesIO(LINE)).size
    assert "exif" not in stored.info


def test_a_correction_right_after_another_workers_answer_finds_its_prediction(tmp_path):
    other = predictions.PredictionLog(predictions.Store(tmp_path / "w.sqlite"))  # worker A
    this = predictions.PredictionLog(predictions.Store(tmp_path / "w.sqlite"))  # worker B
    img = Image.open(io.BytesIO(LINE))
    other.store._lock.acquire()  # A answered; its writer has not written the row yet
    other.write({"id": "p1", "time": 1.0, "width": img.width, "height": img.height})
    threading.Timer(0.2, other.store._lock.release).start()
    assert corrections.save(this, "p1", "Deploying a model is half the work.", LINE, True) == 1
    with pytest.raises(corrections.ApiError, match="No prediction p2 in the log"):
        corrections.save(this, "p2", "Deploying a model is half the work.", LINE, True)
    other.close()
    this.close()


def test_exported_corrections_are_scored_by_evaluate(recognizer, tmp_path):
    log = predictions.PredictionLog(predictions.Store(tmp_path / "w.sqlite"))
    img = Image.open(io.BytesIO(LINE))
    log.write({"id": "p1", "time": 1.0, "width": img.width, "height": img.height})
    log.flush()
    corrections.save(log, "p1", "Deploying a model is half the work.", LINE, True)
    log.close()
    out = tmp_path / "set"
    done = subprocess.run([sys.executable, "-m", "lab_code.serving", "corrections", "--db",
                           str(tmp_path / "w.sqlite"), "export", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "lab_code.training", "evaluate",
                           "--realworld-only", "--realworld", str(out), "--json",
                           str(tmp_path / "r.json")], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    table = json.loads((tmp_path / "r.json").read_text())["realworld"]["recognizer"]
    assert table["correction"]["images"] == 1 and table["correction"]["cer"] == 0.0


# --- EMF in Lambda ----------------------------------------------------------------------------
def test_lambda_writes_valid_emf_lines_under_the_metrics_names(recognizer):
    lines: list[str] = []
    watch = Watch(WatchConfig(prometheus=False, emf=True))
    watch.emf.out = lines.append
    with local_client(serverless.create_app(recognizer, watch=watch)) as client:
        assert client.post("/", json={"image": b64(PAGE)}).status_code == 200
        assert client.post("/", json={"image": b64(b"junk")}).status_code == 422
        assert client.get("/metrics").status_code == 404  # Lambda: EMF only, no /metrics
    docs = [json.loads(line) for line in lines]
    assert docs and all(emf.problems(d) == [] for d in docs), [emf.problems(d) for d in docs]
    names = {m["Name"] for d in docs for c in d["_aws"]["CloudWatchMetrics"]
             for m in c["Metrics"]}
    assert names == {"ocr_requests_total", "ocr_request_seconds", "ocr_line_confidence",
                     "ocr_stage_seconds", "ocr_refusals_total"}
    assert names <= set(metrics.METRICS)
    main = [d for d in docs if "ocr_line_confidence" in d][0]
    assert len(main["ocr_line_confidence"]) == 3 and main["lines"] == 3
    assert all(d.get("id") is None or d["id"] not in json.dumps(d["_aws"]) for d in docs)
    refused = [d for d in docs if d.get("status") == "422"][0]
    assert refused["ocr_refusals_total"] == 1 and refused["reason"] == metrics.REFUSALS[422]


def test_the_emf_check_can_fail():
    good = emf.request_lines("/", 200, 0.1, "abc", {"confidences": [0.9]}, now_ms=1_700_000_000_000)
    assert all(emf.problems(d) == [] for d in good)
    bad = json.loads(json.dumps(good[0]))
    bad["route"] = 7  # a dimension must be a string
    bad["_aws"]["Timestamp"] = 1_700_000_000  # seconds, not milliseconds
    bad["ocr_line_confidence"] = list(range(101))
    assert len(emf.problems(bad)) == 4  # route is a dimension of two directives


# --- confidence and drift ----------------------------------------------------------------------
def test_scored_readings_match_the_model_and_confidence_drops_on_a_bad_picture(recognizer):
    lines = images.lines_from(PAGE)
    scored = recognizer.predict_lines_scored(lines)
    assert [t for t, _ in scored] == recognizer.predict_lines(lines)
    noise = np.random.default_rng(0).integers(0, 255, (40, 300)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    blurred = recognizer.predict_lines_scored(images.lines_from(buf.getvalue()) or lines[:0])
    assert min(c for _, c in scored) > 0.9
    assert not blurred or min(c for _, c in blurred) < min(c for _, c in scored)


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    ref = rng.normal(0.8, 0.05, 2000)
    edges, shares = drift.quantile_bins(ref, 5)
    assert drift.psi(shares, rng.normal(0.8, 0.05, 500), edges) < 0.05
    assert drift.psi(shares, rng.normal(0.5, 0.1, 500), edges) > drift.PSI_ALERT


def test_the_bundled_profile_belongs_to_the_bundled_model():
    from lab_code.artifacts import bundled_model_path, sha256_file

    profile = drift.load_profile()
    assert profile["model_sha256"] == sha256_file(bundled_model_path()), (
        "the model changed: run `python -m lab_code.measuring reference` to profile it again")
    assert set(profile["baseline"]["edges"]) == set(profile["stats"])
    proxy = profile["confidence"]["proxy_on_realworld"]
    assert proxy["images"] == 420 and proxy["spearman_confidence_vs_cer"] < 0
    deck = " ".join((ROOT / "slides" / "08_watch.md").read_text().split())
    assert (f"with CER about {proxy['spearman_confidence_vs_cer']:.2f}, AUC about "
            f"{proxy['auc_wrong_vs_right']:.2f})") in deck, "deck 08 quotes another profile"
    lesson = json.loads((ROOT / "notebooks" / "08_watch.ipynb").read_text())
    text = " ".join(" ".join("".join(c["source"]) for c in lesson["cells"]).split())
    share = profile["confidence"]["baseline_low_share"]
    assert f"reference profile's share (about {share:.0%} for the bundled model)" in text


def test_a_dead_workers_live_gauges_leave_the_sum(tmp_path):
    """In multiprocess mode a worker's in-flight gauge is summed until it is marked dead."""
    code = """
import os, sys
from lab_code.serving import metrics
m = metrics.PrometheusMetrics()
m.request_started(); m.request_started()
m.request_finished("/", 200, 0.1)
before = m.exposition()[0].decode()
metrics.mark_dead(os.getpid())
after = m.exposition()[0].decode()
print([l for l in before.splitlines() if l.startswith("ocr_requests_in_flight ")],
      [l for l in after.splitlines() if l.startswith("ocr_requests_in_flight ")],
      [l for l in after.splitlines() if l.startswith("ocr_requests_total{")])
"""
    env = {**os.environ, metrics.MULTIPROC_ENV: str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("['ocr_requests_in_flight 1.0'] [] "
                                   "['ocr_requests_total{route=\"/\",status=\"200\"} 1.0']")


# --- the web UI ----------------------------------------------------------------------------------
def test_the_ui_logs_its_readings_and_stores_a_consented_correction(tmp_path):
    from gradio_client import Client, handle_file

    from lab_code.serving import app
    from lab_code.serving.feedback import Feedback

    watch = Watch(WatchConfig(prometheus=False, db=str(tmp_path / "w.sqlite"), profile="off"))
    backend = app.PredictorBackend(watch=watch)
    demo = app.make_frontend(backend, Feedback(log=watch.log))
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=ports.free_port(),
                            prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        line, page = handle_file(str(EXAMPLES / "line_sans.png")), handle_file(
            str(EXAMPLES / "page_3_lines.png"))
        info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert set(info) == {"/predict", "/correct"}
        with pytest.raises(Exception, match="Read an image first"):
            client.predict(line, "text", True, api_name="/correct")
        assert client.predict(line, api_name="/predict") == "Deploying a model is half the work."
        with pytest.raises(Exception, match="Nothing was stored"):
            client.predict(line, "Deploying a model", False, api_name="/correct")
        with pytest.raises(Exception, match="not the image that was read"):
            client.predict(page, "Deploying a model", True, api_name="/correct")
        said = client.predict(line, "Deploying a model is half the work", True,
                              api_name="/correct")
        assert said.startswith("Thank you") and "(1 so far)" in said
    finally:
        demo.close()
    assert watch.log.flush()
    (row,) = watch.log.recent(5)
    assert row["source"] == "ui" and row["lines"] == 1 and row["confidence"] > 0.5
    stored = watch.log.store.execute("SELECT prediction_id, text FROM corrections", fetch=True)
    assert stored == [(row["id"], "Deploying a model is half the work")]
    watch.close()


def test_the_drift_report_cli_writes_html_and_png_from_the_log(tmp_path, capsys):
    from lab_code.measuring import drift_report

    profile = drift.load_profile()
    base = profile["baseline"]["values"]
    log = predictions.PredictionLog(predictions.Store(tmp_path / "w.sqlite"))
    for i in range(len(base["brightness"])):  # the reference itself, dimmed to half
        log.write({"id": f"r{i}", "time": float(i), "confidence": base["confidence"][i],
                   "min_confidence": base["confidence"][i], "ink_share": base["ink_share"][i],
                   "brightness": base["brightness"][i] / 2, "contrast": base["contrast"][i],
                   "height": base["height"][i], "lines": base["lines"][i]})
    log.flush()
    log.close()
    for name in ("report.html", "report.png"):
        code = drift_report.main(["--db", str(tmp_path / "w.sqlite"), "--out",
                                  str(tmp_path / name)])
        assert code == 0
    printed = capsys.readouterr().out
    assert "brightness  PSI" in printed and "DRIFT" in printed.split("contrast")[0]
    assert "DRIFT" not in printed.split("contrast")[1].split("confidence")[0]  # the rest stayed
    page = (tmp_path / "report.html").read_text()
    assert "<table>" in page and "data:image/png;base64," in page and "crimson" in page
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drift_report.main(["--db", str(tmp_path / "none.sqlite")]) == 1
    assert "No prediction log" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["predictions"], ["corrections", "list"]])
def test_the_log_commands_say_in_one_line_when_there_is_no_log(tmp_path, command):
    done = subprocess.run([sys.executable, "-m", "lab_code.serving", *command, "--db",
                           str(tmp_path / "none.sqlite")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"error: No prediction log at {tmp_path / 'none.sqlite'}: "
                                   "start the service first, or pass --db.")
