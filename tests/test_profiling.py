"""Lesson 02: the profiling CLI writes traces that TensorBoard's profiler plugin lists and a summary
with the documented schema; the GPU-busy share is computed correctly; a page is read as one batch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lab_code import preprocess
from lab_code.artifacts import bundled_model_path, model_version
from lab_code.measuring import profiling, traces
from lab_code.recognizer import TextRecognizer
from lab_code.training import data

# the module's traces are recorded in the first test's setup: 125 s at load average 14
pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
RECORD_KEYS = {"batch_size", "device", "latency_ms_p50", "latency_ms_p95", "ms_per_example",
               "throughput_per_s", "gpu_busy_pct"}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """One small CPU run of the CLI (narrow lines, few repeats: this checks files, not speed)."""
    out = tmp_path_factory.mktemp("profiling")
    argv = ["--batch-sizes", "1", "2", "--device", "cpu", "--repeats", "2", "--page-repeats", "1",
            "--width", "128", "--out", str(out)]
    assert profiling.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def recognizer() -> TextRecognizer:
    return TextRecognizer()


def rendered_page(n: int, size: int, first_font: int) -> Image.Image:
    """n held-out English lines, each in the next font, stacked into one page."""
    fonts, texts = data.fonts(), data.english_lines()
    styles = [data.Style.clean(fonts[(first_font + i) % len(fonts)], size=size) for i in range(n)]
    lines = [data.render(texts[i], style) for i, style in enumerate(styles)]
    return profiling.stack_images(lines)


def test_summary_json_schema(study, capsys):
    records = json.loads((study / "summary.json").read_text())
    assert [r["batch_size"] for r in records] == [1, 2]
    for r in records:
        assert RECORD_KEYS <= r.keys()
        assert r["device"] == "cpu" and r["gpu_busy_pct"] is None
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p95"]
        assert r["ms_per_example"] == pytest.approx(r["latency_ms_p50"] / r["batch_size"], rel=1e-2)
        assert r["throughput_per_s"] == pytest.approx(1000 / r["ms_per_example"], rel=1e-2)
        assert r["line_width"] == 128 and r["repeats"] == 2
    assert (study / "profiling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bench = json.loads((study / "benchmark.json").read_text())
    assert bench["throughput_ratio_bs16_vs_bs1"] is None  # this run has no batch 16
    assert bench["page"]["lines"] == 16 and bench["page"]["speedup"] > 0
    assert bench["machine"]["torch"] == torch.__version__
    assert bench["command"].startswith("python -m lab_code.measuring profiling --batch-sizes 1 2")
    assert bench["model_version"] == model_version(bundled_model_path())


@pytest.mark.parametrize("run", ["batch_1_16", "sweep"])
def test_lesson_02s_committed_reference_results_are_of_the_bundled_model(run):
    # Retraining the model without re-measuring lesson 02's reference results fails here.
    bench = json.loads((ROOT / "profiling" / "results" / run / "benchmark.json").read_text())
    assert bench["model_version"] == model_version(bundled_model_path())
    assert bench["command"].endswith(f"--out profiling/results/{run}")


def test_each_batch_size_gets_one_trace_of_three_active_steps(study):
    traces = sorted((study / "traces").glob("bs*/*.pt.trace.json"))
    assert [t.parent.name for t in traces] == ["bs1", "bs2"]
    events = json.loads(traces[1].read_text())["traceEvents"]
    steps = {e["name"] for e in events if str(e.get("name", "")).startswith("ProfilerStep#")}
    assert len(steps) == 3  # wait=1, warmup=1, active=3
    shapes = [e["args"]["Input Dims"][0] for e in events
              if e.get("cat") == "cpu_op" and e["name"] == "aten::conv2d"]
    expected = list(profiling.make_batch(profiling.load_lines()[0], 2, 128).shape)
    assert shapes and shapes[0] == expected  # the first convolution sees the whole batch


def test_op_costs_are_per_example_and_timing_is_spread_over_rounds(recognizer, tmp_path):
    arrays, _ = profiling.load_lines()
    prof, trace = profiling.profile_batch(recognizer.model, profiling.make_batch(arrays, 2, 64),
                                          tmp_path / "bs2")
    costs = profiling.op_costs(prof, batch_size=2)
    assert list(costs.values()) == sorted(costs.values(), reverse=True)
    assert any(name.startswith("aten::mkldnn_rnn") for name in costs)  # the LSTM
    total_ms = sum(e.self_cpu_time_total for e in prof.key_averages()
                   if not e.key.startswith("ProfilerStep")) / 1000
    assert sum(costs.values()) == pytest.approx(total_ms / 3 / 2)
    records = profiling.run_study(recognizer.model, arrays, [1, 3], tmp_path, torch.device("cpu"),
                                  repeats=7, width=64, trace=False, rounds=3)
    assert [(r["batch_size"], r["repeats"]) for r in records] == [(1, 7), (3, 7)]
    assert not (tmp_path / "traces").exists()


def test_own_op_times_from_the_trace_file_match_the_profiler(tmp_path):
    """traces.cpu_op_self_ms reads the file alone and agrees with key_averages' Self CPU, on the
    module as its file holds it (lesson 02 profiles that one)."""
    arrays, _ = profiling.load_lines()
    prof, _ = profiling.profile_batch(profiling.load_model(), profiling.make_batch(arrays, 2, 64),
                                      tmp_path / "bs2")
    own = traces.cpu_op_self_ms(traces.read_trace(traces.find_trace(tmp_path / "bs2")), steps=3)
    assert list(own.values()) == sorted(own.values(), reverse=True)
    expected = {e.key: e.self_cpu_time_total / 1000 / 3 for e in prof.key_averages()}
    for name in list(own)[:4]:
        assert own[name] == pytest.approx(expected[name], rel=0.01, abs=0.01), name
    assert "aten::mkldnn_convolution" in own and any(n.startswith("aten::mkldnn_rnn") for n in own)
    with pytest.raises(FileNotFoundError, match="profile a batch first"):
        traces.find_trace(tmp_path)


def test_own_op_times_subtract_nested_calls_per_thread():
    def op(name, ts, dur, tid=1):
        return {"ph": "X", "cat": "cpu_op", "name": name, "ts": ts, "dur": dur, "pid": 1,
                "tid": tid}

    trace = {"traceEvents": [op("outer", 0, 100), op("mid", 10, 30), op("leaf", 20, 10),
                             op("mid", 50, 20), op("outer", 0, 40, tid=2),
                             {"ph": "X", "cat": "kernel", "name": "k", "ts": 0, "dur": 500}]}
    own = traces.cpu_op_self_ms(trace)
    assert own == pytest.approx({"outer": (100 - 30 - 20 + 40) / 1000, "mid": (20 + 20) / 1000,
                                 "leaf": 10 / 1000})


def test_gpu_busy_merges_overlapping_kernels():
    step = {"ph": "X", "cat": "user_annotation"}
    kernel = {"ph": "X", "cat": "kernel", "name": "k"}
    trace = {"traceEvents": [
        {**step, "name": "ProfilerStep#2", "ts": 0, "dur": 50},
        {**step, "name": "ProfilerStep#3", "ts": 50, "dur": 50},
        {"ph": "X", "cat": "gpu_user_annotation", "name": "ProfilerStep#2", "ts": 0, "dur": 500},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 100},
        {**kernel, "ts": 10, "dur": 20},
        {**kernel, "ts": 20, "dur": 20},   # overlaps the first: 10..40 counts once
        {**kernel, "ts": 60, "dur": 10},
    ]}
    assert traces.gpu_busy_pct(trace) == 40.0
    trace["traceEvents"].append({**kernel, "ts": 95, "dur": 25})  # runs past the last step
    assert traces.gpu_busy_pct(trace) == pytest.approx(100 * 65 / 120, abs=0.01)
    cpu_only = [e for e in trace["traceEvents"] if e["cat"] != "kernel"]
    assert traces.gpu_busy_pct({"traceEvents": cpu_only}) is None


def test_throughput_ratio_and_table():
    cpu = torch.device("cpu")
    records = [profiling.summarize(bs, cpu, [s]) for bs, s in ((1, 0.01), (16, 0.08))]
    assert profiling.throughput_ratio(records) == 2.0
    assert profiling.throughput_ratio(records[:1]) is None
    table = profiling.format_table(records).splitlines()
    assert len(table) == 3 and table[2].split()[:2] == ["16", "cpu"]


def test_tensorboard_plugin_lists_the_runs(study, free_port):
    pytest.importorskip("torch_tb_profiler")
    with traces.tensorboard(study / "traces", port=free_port) as tb:
        assert tb.url == f"http://127.0.0.1:{free_port}"
        runs = traces.tensorboard_runs(tb, expect=2, timeout=45)
        views = traces.tensorboard_views(tb, "bs1")
    assert sorted(runs) == ["bs1", "bs2"]
    assert "Overview" in views and "Trace" in views
    assert tb.process.poll() is not None  # stopped, port freed


@pytest.mark.parametrize(("n", "size", "first_font"), [(2, 22, 0), (5, 34, 6), (16, 26, 11)])
def test_rendered_pages_split_into_their_lines(n, size, first_font):
    assert len(preprocess.line_arrays(rendered_page(n, size, first_font))) == n


def test_shipped_lines_and_their_page():
    asset = ROOT / "lab_code" / "assets" / profiling.ASSET
    assert asset.stat().st_size < 300_000
    arrays, texts = profiling.load_lines()
    assert len(arrays) == len(texts) == 64 and all(texts)
    assert all(a.shape[0] == preprocess.HEIGHT and 0 <= a.min() and a.max() <= 1 for a in arrays)
    assert {a.shape[1] for a in profiling.fixed_width(arrays[:3], 200)} == {200}
    assert len(preprocess.line_arrays(profiling.page_from_lines(arrays))) == profiling.PAGE_LINES


def test_a_page_is_one_call_and_line_by_line_is_one_call_per_line(recognizer):
    page = rendered_page(6, 28, 3)  # 6 lines keep this fast; the CLI's page has 16
    calls: list[int] = []

    def counting(batch: torch.Tensor) -> list[str]:
        calls.append(batch.shape[0])
        return recognizer.model(batch)

    one_batch = profiling.read_as_one_batch(counting, page)
    assert calls == [6]
    assert "\n".join(one_batch) == recognizer.predict(page)  # what production does
    calls.clear()
    by_line = profiling.read_line_by_line(counting, page)
    assert calls == [1] * 6
    assert by_line == [recognizer.predict_lines([line])[0] for line in preprocess.line_arrays(page)]


def test_help_shows_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        profiling.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--batch-sizes", "--sweep", "--device", "--out", "--model", "--repeats"):
        assert flag in out


def test_bad_arguments_end_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        profiling.main(["--batch-sizes", "0"])
    assert exc.value.code == 2 and "not a positive whole number" in capsys.readouterr().err
    assert profiling.main(["--model", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: No model file at")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_on_a_cpu_machine_is_one_clear_line(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "lab_code.measuring", "profiling", "--device", "cuda", "--out",
         str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --device cuda needs a CUDA GPU and this machine has none: "
        "use --device cpu (or auto)."
    ]
    assert not out.exists()


def test_profiling_never_imports_the_training_code():
    code = ("import sys, lab_code.measuring.profiling; "
            "print([m for m in sys.modules if m.startswith('lab_code.training')])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_fixed_width_pads_and_crops():
    h = preprocess.HEIGHT
    short, long = np.ones((h, 10), np.float32), np.ones((h, 50), np.float32)
    a, b = profiling.fixed_width([short, long], 20)
    assert a.shape == b.shape == (preprocess.HEIGHT, 20)
    assert a[:, :10].all() and not a[:, 10:].any() and b.all()


def test_importing_profiling_leaves_the_environment_alone():
    """KINETO_LOG_LEVEL is set just before profiling, not as a side effect of the import."""
    code = "import os, lab_code.measuring.profiling; print(os.environ.get('KINETO_LOG_LEVEL'))"
    env = {k: v for k, v in __import__("os").environ.items() if k != "KINETO_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


def timed(bs: int, p50_ms: float, p95_ms: float, repeats: int = 20) -> dict:
    return {"batch_size": bs, "latency_ms_p50": p50_ms, "latency_ms_p95": p95_ms,
            "repeats": repeats}


def test_noise_note_says_when_the_machine_was_busy():
    quiet = [timed(1, 7.6, 10.1), timed(16, 78.2, 102.9)]  # the committed reference's spread
    assert profiling.noise_note(quiet).startswith("timings look steady")
    busy = [timed(1, 7.6, 10.1), timed(16, 78.2, 14 * 78.2)]  # seen under load: p95 = 14 x p50
    note = profiling.noise_note(busy)
    assert note.startswith("warning: the machine looks busy") and "batch 16" in note
    page = {"spread": 2.4}
    assert "the page" in profiling.noise_note(quiet, page)
    assert "fewer than 20 calls at batch 1" in profiling.noise_note([timed(1, 7.6, 8.0, 3)])


def test_the_report_and_the_benchmark_say_how_noisy_the_run_was(study):
    bench = json.loads((study / "benchmark.json").read_text())
    assert bench["page"]["spread"] >= 1.0 and len(bench["measured"]) == 10  # YYYY-MM-DD
    page = {**bench["page"], "spread": 3.0}
    records = json.loads((study / "summary.json").read_text())
    assert "warning: the machine looks busy" in profiling.report(records, page)
