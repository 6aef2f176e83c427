"""The shipped service on a busy machine: beside one busy process per core it keeps a fair share
of the throughput it has without them, answers every request (no 504, no error) and /health stays
fast. The trap it guards (lab_code.threads): model threads that ignore the thread count, whose
spinning OpenMP teams collapsed the service 10-100x beside any other load. (The trap itself is
pinned where it starts, in test_threads: a model call on a worker thread starts no OpenMP team.)

Throughput is compared as a ratio measured in the same run, quiet and busy in turns, so the
machine's own noise hits both. Where the hog gets its fair share the service keeps about half;
measured: 0.67-0.77 on a quiet 2-core VM with the kernel's autogroup on and off (2026-12-06),
0.32 once on a slower, shared CI machine of 2 cores. The bar, a fifth, sits below that noise and
still twice above the collapse (a tenth or less).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time

import pytest
import requests

from lab_code.measuring import hog, loadgen
from lab_code.serving.ports import free_port
from lab_code.serving.processes import start_background, stop_background
from lab_code.serving.runner import default_workers, wait_for_workers

FAIR_SHARE = 0.2  # busy throughput at least this share of the quiet one
CLIENTS, SECONDS, WARMUP = 16, 3.0, 0.5
ROUNDS = 2  # quiet, busy, quiet, busy: both see the same drift

pytestmark = pytest.mark.slow


def alive(procs: list[subprocess.Popen]) -> list[int]:
    return [p.pid for p in procs if p.poll() is None]


def test_the_hog_is_bounded_and_leaves_nothing_behind():
    with hog.cpu_hog(30, processes=2) as procs:
        time.sleep(0.3)
        assert len(alive(procs)) == 2
    assert not alive(procs), "the hog outlived its block"
    started = time.monotonic()
    procs = hog.start(0.5, processes=1)  # ends by itself, even if nobody stops it
    procs[0].wait(timeout=30)
    assert time.monotonic() - started < 30
    with pytest.raises(ValueError, match="at most 600"):
        hog.start(3600)


def health_times(url: str, stop: threading.Event, out: list[float]) -> None:
    """Milliseconds of GET /health, ten times a second, until `stop`."""
    while not stop.is_set():
        start = time.perf_counter()
        resp = requests.get(url + "health", timeout=30)
        out.append((time.perf_counter() - start) * 1000 if resp.status_code == 200 else 1e9)
        stop.wait(0.1)


@pytest.fixture(scope="module", params=["auto", "torchscript"])
def shipped(request, tmp_path_factory):
    """The service as shipped (one worker per core; runtime auto: the ONNX file), and the same
    on the TorchScript file, which the trap hit."""
    port = free_port()
    log = tmp_path_factory.mktemp("contention") / "serverless.log"
    url = f"http://127.0.0.1:{port}/"
    proc = start_background(["lab_code.serving", "serverless", "--port", str(port),
                             "--runtime", request.param], url + "health", log)
    try:
        wait_for_workers(log, default_workers())
        yield url
    finally:
        stop_background(proc)


@pytest.mark.parametrize("images", ["mix", "one"])
def test_a_busy_machine_leaves_the_service_a_fair_share(shipped, images):
    """A mix of the real-world set's screenshot lines, and one line sent by every client (one
    input shape: where the collapse showed most)."""
    bodies = loadgen.realworld_bodies(family="screenshot")
    bodies = bodies if images == "mix" else bodies[:1]
    loadgen.run_load(shipped, bodies, CLIENTS, 1.0, 0.3)  # warm both workers
    quiet, busy, health = [], [], []
    for _ in range(ROUNDS):
        quiet.append(loadgen.run_load(shipped, bodies, CLIENTS, SECONDS, WARMUP))
        stop = threading.Event()
        with hog.cpu_hog(SECONDS + WARMUP + 10):
            probe = threading.Thread(target=health_times, args=(shipped, stop, health))
            probe.start()
            try:
                busy.append(loadgen.run_load(shipped, bodies, CLIENTS, SECONDS, WARMUP))
            finally:
                stop.set()
                probe.join()
    for run in quiet + busy:
        assert run.statuses == {"200": run.requests}, run.summary()  # no 504, 503 or error
    ratio = (statistics.fmean(r.throughput_per_s for r in busy)
             / statistics.fmean(r.throughput_per_s for r in quiet))
    summary = " | ".join(r.summary() for r in quiet + busy)
    print(f"busy/quiet throughput {ratio:.2f} ({images}): {summary}")
    assert ratio >= FAIR_SHARE, f"busy/quiet throughput {ratio:.2f}: {summary}"
    assert statistics.median(health) < 500 and max(health) < 3000, \
        f"/health took {statistics.median(health):.0f} ms (median), {max(health):.0f} ms (max)"


def test_the_hog_command_runs_and_stops(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lab_code.measuring", "hog", "--seconds", "0.5",
                           "--processes", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("1 busy processes for 0.5 s")
    bad = subprocess.run([sys.executable, "-m", "lab_code.measuring", "hog", "--seconds", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: seconds must be above 0")


def test_the_lesson_and_the_deck_state_the_bar_this_test_holds():
    """Notebook 07 and deck 07 say how much of its quiet throughput the busy service must keep:
    the share they name is FAIR_SHARE, so a change to one fails until the others follow."""
    from pathlib import Path

    words = {0.5: "a half", 1 / 3: "a third", 0.25: "a quarter", 0.2: "a fifth", 0.1: "a tenth"}
    named = words[FAIR_SHARE]
    root = Path(__file__).resolve().parents[1]
    notebook = " ".join((root / "notebooks" / "07_fast_and_cheap.ipynb").read_text().split())
    deck = " ".join((root / "slides" / "07_fast_and_cheap.md").read_text().split())
    assert f'drops below {named} of its quiet throughput' in notebook.replace('\\n", "', " ")
    assert f"busy throughput at least {named} of quiet" in deck
