"""The replayed day (lab_code.measuring.day) against the real service and a real Prometheus: the
shifted day fires the drift, low-confidence and refusal alerts, and the drift report agrees with
the rule; a quiet day fires nothing. About a minute each. Skips without Prometheus, except in CI."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from lab_code.measuring import day, drift_report, prometheus
from lab_code.serving import corrections, drift, ports, predictions, processes

pytestmark = pytest.mark.slow


def replay(tmp_path, phases):
    if shutil.which("prometheus") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must replay the day against Prometheus (apt-get install prometheus)")
        pytest.skip("Prometheus is not installed (apt-get install prometheus)")
    port, prom_port = ports.free_port(), ports.free_port()
    db = tmp_path / "watch.sqlite"
    service = processes.start_background(day.service_args(port, db),
                                         f"http://127.0.0.1:{port}/health",
                                         tmp_path / "service.log")
    prom = None
    try:
        prom = prometheus.start(tmp_path / "prometheus", target=f"127.0.0.1:{port}",
                                port=prom_port, speedup=day.SPEEDUP, scrape_s=1)
        assert prom.wait_for_scrape()
        result = day.replay(f"http://127.0.0.1:{port}/", phases)
        time.sleep(2)  # a last scrape and rule evaluation
        fired = prom.fired(result.started, time.time())
        last_psi = prom.value("max(ocr_input_drift_psi)")
    finally:
        if prom is not None:
            prom.stop()
        processes.stop_background(service)
    return result, fired, last_psi, db


def test_the_shifted_day_fires_drift_low_confidence_and_refusals(tmp_path):
    result, fired, last_psi, db = replay(tmp_path, day.DAY)
    statuses = result.statuses()
    assert statuses["burst"].get("503", 0) > 0, statuses  # back-pressure tripped
    assert set(statuses["morning"]) == {"200"} and set(statuses["afternoon"]) == {"200"}
    assert {"InputDrift", "LowConfidence", "ManyRefusals"} <= set(fired), fired
    assert not {"HighErrorRate", "ServiceDown"} & set(fired), fired
    noon = result.started + next(p["start"] for p in result.phases if p["name"] == "afternoon")
    assert fired["InputDrift"] > noon and fired["LowConfidence"] > noon  # after the shift
    # the report, from the same log rows, agrees with the gauge Prometheus read last
    log = predictions.PredictionLog(predictions.Store(db))
    rows = log.recent(day.DRIFT_WINDOW)
    report = drift_report.report(rows, drift.load_profile())
    assert report["drifted"], report
    assert max(t["psi"] for t in report["statistics"].values() if t["psi"] is not None) == \
        pytest.approx(last_psi, abs=0.05)
    assert all(c["status"] == 200 for c in result.corrections) and result.corrections
    assert corrections.count(log.store) == len(result.corrections)
    log.close()


def test_a_quiet_day_fires_no_alert(tmp_path):
    result, fired, last_psi, _ = replay(tmp_path, day.QUIET_DAY)
    assert all(set(s) == {"200"} for s in result.statuses().values()), result.statuses()
    assert fired == {}, fired
    assert last_psi is not None and last_psi < drift.PSI_ALERT
