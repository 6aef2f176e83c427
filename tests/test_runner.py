"""Workers come back: `python -m lab_code.serving serverless --workers 2` with one worker killed
(as the OOM killer would) keeps serving on the other, starts a new one at once, logs both events,
and gives up (exit 1) when workers keep dying."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import requests
from PIL import Image
from proc_tree import alive, children, cmdline
from stand_ins import wait_for

from lab_code.serving import runner
from lab_code.serving.logs import READY_EVENT
from lab_code.serving.ports import free_port
from lab_code.serving.processes import start_background, stop_background
from lab_code.training import data

TIMEOUT = 60


def png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def events(log) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines()
            if x.startswith('{"event": "worker_') or x.startswith('{"event": "spare_')]


def server_workers(pid: int, log) -> list[int]:
    """The serving worker processes of the runner `pid` (not its spare, not multiprocessing's
    helpers)."""
    spares = {e["pid"] for e in events(log) if e["event"] == "spare_started"}
    promoted = {e["pid"] for e in events(log) if e["event"] == "worker_started"}
    return [c for c in children(pid) if alive(c) and "resource_tracker" not in cmdline(c)
            and (c not in spares or c in promoted)]


def test_a_killed_worker_is_replaced_while_the_other_serves(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "service.log"
    proc = start_background(["lab_code.serving", "serverless", "--port", str(port), "--workers",
                             "2"], url + "health", log)
    line = png_b64(data.render("a steady client", data.Style.clean(data.fonts()[0], size=28)))
    answers: list[str] = []
    go, paused, stop = threading.Event(), threading.Event(), threading.Event()
    go.set()

    def steady() -> None:  # one request after another, each on a new connection
        while not stop.is_set():
            if not go.is_set():
                paused.set()
                go.wait(TIMEOUT)
                continue
            try:
                resp = requests.post(url, json={"image": line}, timeout=TIMEOUT,
                                     headers={"connection": "close"})
                answers.append(str(resp.status_code))
            except requests.RequestException as err:
                answers.append(type(err).__name__)

    client = threading.Thread(target=steady)
    try:
        assert runner.wait_for_workers(log, 2, TIMEOUT)
        [victim, survivor] = server_workers(proc.pid, log)
        client.start()
        wait_for(lambda: len(answers) >= 10, TIMEOUT, "ten answers")
        go.clear()  # between two requests: the kill loses none in flight
        assert paused.wait(TIMEOUT)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        # gone, not just a zombie: a killed process's threads take a moment longer to go, and
        # its listening socket with them (the runner reaps it as soon as they have)
        wait_for(lambda: not Path(f"/proc/{victim}").exists(), 10, "the killed worker to go")
        before = len(answers)
        go.set()
        # the spare (torch and the app already imported) takes its place at once and loads
        # the model while the survivor serves
        wait_for(lambda: "worker_started" in log.read_text(), 10, "a new worker in the log")
        started_s = time.monotonic() - killed
        wait_for(lambda: log.read_text().count(READY_EVENT) >= 3, 10, "the new worker ready")
        replaced_s = time.monotonic() - killed
        wait_for(lambda: len(answers) >= before + 20, TIMEOUT, "twenty more answers")
        stop.set()
        client.join(TIMEOUT)
        assert set(answers) == {"200"}, [a for a in answers if a != "200"][:5]
        workers = server_workers(proc.pid, log)
        assert len(workers) == 2 and survivor in workers and victim not in workers
        happened = events(log)
        assert [e["event"] for e in happened] == ["spare_started", "worker_exited",
                                                  "worker_started", "spare_started"]
        exited, started = happened[1:3]
        assert exited["pid"] == victim and exited["exit_code"] == -signal.SIGKILL
        assert started["replaces"] == victim and started["was_spare"]
        assert started["pid"] == happened[0]["pid"] and started["pid"] in workers
        print(f"\nnew worker started {started_s:.1f} s and ready {replaced_s:.1f} s after the "
              f"kill (load average {os.getloadavg()[0]:.1f}); {len(answers)} requests, all 200")
    finally:
        stop.set()
        go.set()
        if client.is_alive():
            client.join(TIMEOUT)
        stop_background(proc)


def crashing_app():
    """An app factory whose every worker dies at start."""
    raise SystemExit(3)


def test_workers_that_keep_dying_stop_the_service_with_one_sentence(capsys):
    port = free_port()
    start = time.monotonic()
    code = runner.serve_workers("127.0.0.1", port, 2, "test_runner:crashing_app",
                                {"log_level": "critical"})
    assert code == 1 and time.monotonic() - start < TIMEOUT
    out, err = capsys.readouterr()
    exited = [json.loads(x) for x in out.splitlines() if '"worker_exited"' in x]
    assert len(exited) == runner.MAX_RESTARTS + 1
    assert err.startswith("error: workers stopped 6 times within 60 s") and err.count("\n") == 1
