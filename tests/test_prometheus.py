"""A real Prometheus against the real service: the repository's rules pass `promtool check rules`
and their unit tests, a broken rule fails them, and Prometheus, started on 127.0.0.1 with the
repository's scrape config, sees exactly the requests a test sent to a two-worker service, by
status. Skips without Prometheus, except in CI (CI set), where that fails."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from lab_code.measuring import prometheus
from lab_code.serving import ports, predictions, processes

ROOT = Path(__file__).resolve().parents[1]
LINE = (ROOT / "lab_code" / "assets" / "examples" / "line_sans.png").read_bytes()


@pytest.fixture(autouse=True)
def _need_prometheus():
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run Prometheus (apt-get install prometheus)")
        pytest.skip("Prometheus is not installed (apt-get install prometheus)")


def test_the_rules_and_the_config_pass_promtool():
    for args in (("check", "rules", "monitoring/rules.yml"),
                 ("check", "config", "monitoring/prometheus.yml"),
                 ("test", "rules", "monitoring/rules_test.yml")):
        done = subprocess.run(["promtool", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("old,new", [
    ("> 0.08", "> 0.3"),  # LowConfidence would never fire on the test's 15%
    ("max(ocr_input_drift_psi) > 0.25", "min(ocr_input_drift_psi) > 0.9"),
    ('ocr_requests_total{status="500"}', 'ocr_requests_total{status="502"}'),
])
def test_a_broken_rule_fails_its_unit_test(tmp_path, old, new):
    rules = (ROOT / "monitoring" / "rules.yml").read_text()
    assert old in rules
    (tmp_path / "rules.yml").write_text(rules.replace(old, new))
    shutil.copy(ROOT / "monitoring" / "rules_test.yml", tmp_path)
    done = subprocess.run(["promtool", "test", "rules", "rules_test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "FAILED" in done.stdout + done.stderr


def test_a_sped_up_copy_divides_every_duration():
    rules = (ROOT / "monitoring" / "rules.yml").read_text()
    fast = prometheus.scaled(rules, 120)
    assert "[5m]" in rules and "[5m]" not in fast and "[4s]" in fast  # 2.5 s, floored
    assert "for: 10m" in rules and "for: 5s" in fast and "[8s]" in fast  # 15m / 120 = 7.5 s
    assert fast.count("expr:") == rules.count("expr:")
    assert prometheus.scaled(rules, 1) == rules


def test_prometheus_sees_exactly_the_requests_sent_by_status(tmp_path):
    port, prom_port = ports.free_port(), ports.free_port()
    db = tmp_path / "watch.sqlite"
    service = processes.start_background(
        ["lab_code.serving", "serverless", "--port", str(port), "--workers", "2",
         "--watch-db", str(db)], f"http://127.0.0.1:{port}/health", tmp_path / "service.log")
    prom = None
    try:
        assert processes_ready(tmp_path / "service.log", 2)
        prom = prometheus.start(tmp_path / "prometheus", target=f"127.0.0.1:{port}",
                                port=prom_port, scrape_s=1)
        assert prom.wait_for_scrape(), "Prometheus never scraped the service"
        url = f"http://127.0.0.1:{port}/"
        image = base64.b64encode(LINE).decode()
        sent = {"200": 0, "422": 0, "400": 0}
        for i in range(24):  # new connections, so both workers answer some
            kind = "200" if i % 3 else ("422" if i % 2 else "400")
            body = {"image": image} if kind == "200" else (
                {"image": base64.b64encode(b"junk").decode()} if kind == "422" else {})
            assert requests.post(url, json=body, timeout=30).status_code == int(kind)
            sent[kind] += 1
        metrics_text = requests.get(url + "metrics", timeout=10).text
        checked = subprocess.run(["promtool", "check", "metrics"], input=metrics_text,
                                 capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and seen != sent:
            time.sleep(1)
            seen = {r["metric"]["status"]: float(r["value"][1]) for r in prom.query(
                'sum by (status) (ocr_requests_total{job="recognizer",route="/"})')}
            seen = {k: int(v) for k, v in seen.items()}
        assert seen == sent
        workers = prom.query("count(ocr_model_info)")
        assert workers and workers[0]["value"][1] == "1"  # one version, whatever the workers
    finally:
        if prom is not None:
            prom.stop()
        processes.stop_background(service)
    log = predictions.PredictionLog(predictions.Store(db))
    assert log.count() == sent["200"]  # both workers wrote to the one SQLite file
    log.close()


def processes_ready(log: Path, workers: int) -> bool:
    from lab_code.serving.runner import wait_for_workers

    return wait_for_workers(log, workers, timeout=120)
