"""Threads for the model: the count a server asks for holds on the thread that runs the model.

The trap (lab_code.threads): torch.set_num_threads on the main thread does not bind a worker
thread, which then starts an OpenMP team of one thread per core in the frozen model's kernels.
Each probe runs in a fresh interpreter, without the OMP_NUM_THREADS a shell may set, and counts
the process's OS threads around one model call made on a worker thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lab_code import threads

PROBE = """
import json, os, sys
from concurrent.futures import ThreadPoolExecutor
import numpy as np, torch
from lab_code.recognizer import TextRecognizer
torch.set_num_threads(1)  # on the main thread only, as a server's entry point used to do
recognizer = TextRecognizer(threads={threads})
pool = ThreadPoolExecutor(max_workers=1)
pool.submit(lambda: None).result()  # the pool's thread exists before counting
before = len(os.listdir("/proc/self/task"))
line = [np.random.default_rng(0).random((32, 256), dtype=np.float32)]
pool.submit(recognizer.predict_lines, line).result()
print(json.dumps({{"before": before, "after": len(os.listdir("/proc/self/task"))}}))
"""

needs_cores = pytest.mark.skipif(
    not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
    reason="an OpenMP team needs two cores to show, and /proc to count it (Linux)")


def threads_started(count: int | None) -> int:
    # Every OpenMP setting goes: a test that loaded libtesseract in this process set
    # OMP_THREAD_LIMIT=1, which the probe would inherit and which forbids the team it looks for.
    env = {k: v for k, v in os.environ.items()
           if k not in threads.THREAD_VARIABLES and not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    done = subprocess.run([sys.executable, "-c", PROBE.format(threads=count)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    return counts["after"] - counts["before"]


@needs_cores
def test_a_model_call_on_a_worker_thread_starts_no_openmp_team_when_given_one_thread():
    assert threads_started(1) == 0


@needs_cores
def test_without_a_thread_count_the_worker_thread_starts_a_team_the_trap_the_fix_avoids():
    # the property the fix depends on: if torch ever stops doing this, the fix may be dropped.
    assert threads_started(None) >= 1


def test_serving_threads_reads_omp_num_threads_and_defaults_to_one(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.serving_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.serving_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert threads.serving_threads() == 1


def test_limit_children_sets_only_what_is_unset():
    env = threads.limit_children(1, {"OMP_NUM_THREADS": "4"})
    assert env == {"OMP_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_per_thread_refuses_zero():
    with pytest.raises(ValueError, match="at least 1"):
        threads.PerThread(0)


@needs_cores
@pytest.mark.slow
def test_the_lessons_demonstration_shows_the_trap_and_the_fix(tmp_path):
    """lab_code.measuring.thread_trap, as lesson 07 runs it: the same text every way; the model
    called on a worker thread without a count starts threads, with one (or on onnxruntime) none.
    Timing is the lesson's to show, not this test's to assert (a shared machine)."""
    # Every OpenMP setting goes: a test that loaded libtesseract in this process set
    # OMP_THREAD_LIMIT=1, which the demonstration would inherit and which forbids the trap's team.
    env = {k: v for k, v in os.environ.items()
           if k not in threads.THREAD_VARIABLES and not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    out = tmp_path / "trap.json"
    done = subprocess.run([sys.executable, "-m", "lab_code.measuring", "thread_trap",
                           "--calls", "3", "--rounds", "1", "--json", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    settings = {s["label"].split(" (")[0]: s for s in result["settings"]}
    assert result["date"] and len(result["load_before"]) == len(result["load_after"]) == 3
    assert settings["TorchScript, threads=None"]["new_threads"] >= 1
    assert settings["TorchScript, threads=1"]["new_threads"] == 0
    assert settings["ONNX Runtime, threads=1"]["new_threads"] == 0
    assert len({s["text"] for s in settings.values()}) == 1
    assert all(s["quiet_ms"] > 0 and s["busy_ms"] > 0 for s in settings.values())
    assert "busy/quiet" in done.stdout.splitlines()[0]
