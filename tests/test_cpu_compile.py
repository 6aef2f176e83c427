"""Lesson 07: every CPU backend reads the same text as the shipped TorchScript model, a missing
dependency is a skip with its reason, the FLOP formula agrees with torch's FLOP counter, timing
interleaves the backends, and the CLI writes results.json and its figure.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from lab_code.artifacts import bundled_model_path, load_torchscript
from lab_code.measuring import cpu_compile, flops, profiling, runtimes

# every CPU backend compiles and reads the real-world set: up to 470 s a test at load average 14
pytestmark = pytest.mark.timeout(1200)

LINES = 4  # parity on a few real lines: enough to catch a wrong graph, cheap to run
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> runtimes.Context:
    module = load_torchscript(bundled_model_path())
    arrays, _ = profiling.load_lines()
    example = profiling.make_batch(arrays[:LINES], LINES)
    return runtimes.Context(module, runtimes.eager_from_torchscript(module), example,
                               tmp_path_factory.mktemp("cpu_compile"), threads=1)


@pytest.fixture(scope="module")
def batches() -> dict[int, list[torch.Tensor]]:
    arrays, _ = profiling.load_lines()
    return {bs: cpu_compile.line_batches(arrays[:LINES], bs) for bs in (1, LINES)}


@pytest.fixture(scope="module")
def reference(ctx) -> runtimes.Backend:
    return runtimes.build_torchscript(ctx)


@pytest.fixture(scope="module")
def built(ctx):
    """runtimes.build(name, ctx), each name built once for the module: AOTInductor takes half a
    minute, and two tests read its package (and ONNX Runtime's)."""
    done: dict[str, tuple[runtimes.Backend, dict]] = {}

    def build(name: str) -> tuple[runtimes.Backend, dict]:
        if name not in done:
            done[name] = runtimes.build(name, ctx)
        return done[name]

    return build


def test_help_shows_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        cpu_compile.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--out", "--quick", "--threads", "--backends", "--repeats", "--realworld-images",
                 "--held-out-lines"):
        assert flag in out


def test_the_eager_twin_has_the_shipped_weights(ctx, batches):
    batch = batches[LINES][0]
    with torch.inference_mode():
        assert torch.equal(ctx.eager.logits(batch), ctx.module.logits(batch))
    assert ctx.eager.charset == list(ctx.module.charset)


FAST = ["torchscript", "frozen", "onnxruntime", "int8"]
SLOW = [pytest.param(name, marks=pytest.mark.slow) for name in runtimes.SLOW_BUILDS]


@pytest.mark.parametrize("name", FAST + SLOW)
def test_each_backend_reads_what_torchscript_reads(name, batches, reference, built):
    if name == "onnxruntime":
        pytest.importorskip("onnxruntime")
    backend, record = built(name)
    assert record["status"] == "ok", record.get("reason")
    assert record["build_s"] >= 0 and record["portability"]
    found = cpu_compile.parity(backend, reference, batches, LINES)
    assert found["lines"] == LINES
    assert found["lines_differ_bs1"] == found[f"lines_differ_bs{LINES}"] == 0
    diff = found["max_abs_logits_diff"]
    if name == "frozen":
        assert diff is None  # freezing keeps forward() only
    else:  # int8 moves the logits a little, never the text of these lines
        assert diff < (1.0 if name == "int8" else 1e-3)


def test_parity_counts_lines_that_read_differently(batches, reference):
    def garbled(images: torch.Tensor) -> list[str]:
        texts = reference.texts(images)
        return [t[::-1] if i % 2 == 0 else t for i, t in enumerate(texts)]

    noisy = runtimes.Backend("noisy", garbled, lambda x: reference.logits(x) + 0.5, "")
    found = cpu_compile.parity(noisy, reference, batches, LINES)
    assert found["lines_differ_bs1"] == LINES  # every batch of 1 starts at an even index
    assert found[f"lines_differ_bs{LINES}"] == LINES // 2
    assert found["max_abs_logits_diff"] == pytest.approx(0.5)


@pytest.mark.slow
def test_the_aoti_package_takes_any_width_and_refuses_what_it_was_not_built_for(ctx, built):
    backend, record = built("aoti")
    assert record["status"] == "ok", record.get("reason")
    assert record["input_ranges"][1:3] == [[1, 1], [32, 32]]
    narrow = ctx.example[:3, ..., :300].contiguous()
    with torch.inference_mode():
        gap = (backend.logits(narrow) - ctx.eager.logits(narrow)).abs().max().item()
    assert gap < 1e-3
    with pytest.raises(ValueError, match="takes images of sizes"):
        backend.logits(torch.zeros(1, 1, 16, 64))  # 16 rows: called, it could crash the process
    if _has("onnxruntime"):  # an ONNX export after torch.export still gets a dynamic width
        onnx, record = built("onnxruntime")
        assert record["input_sizes"] == ["batch", 1, 32, "width"]
        assert onnx.texts(narrow) == ctx.eager(narrow)


def test_a_shape_fits_its_ranges():
    ranges = [[1, None], [1, 1], [32, 32], [4, 1000]]
    assert runtimes.fits((7, 1, 32, 528), ranges)
    assert not runtimes.fits((7, 1, 16, 528), ranges)
    assert not runtimes.fits((7, 1, 32, 1001), ranges)
    assert not runtimes.fits((0, 1, 32, 528), ranges)
    assert not runtimes.fits((1, 32, 528), ranges)


def test_a_missing_onnxruntime_is_a_skip_with_its_reason(ctx, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    backend, record = runtimes.build("onnxruntime", ctx)
    assert backend is None and record["status"] == "skipped"
    assert record["reason"].startswith("onnxruntime is not installed: pip install onnxruntime")


@pytest.mark.parametrize("name", runtimes.SLOW_BUILDS)
def test_no_compiler_is_a_skip_with_its_reason(name, ctx, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    backend, record = runtimes.build(name, ctx)
    assert backend is None and record["status"] == "skipped"
    assert "needs a C++ compiler" in record["reason"]


@pytest.mark.parametrize("width", [528, 128])
def test_the_flop_formula_agrees_with_torchs_flop_counter(ctx, width):
    formula = flops.flops_per_line(ctx.eager, width)
    counted = flops.flop_counter_check(ctx.eager, width)
    # FlopCounterMode counts the convolutions and the Linear layer; the LSTM runs as one fused
    # CPU kernel that it does not count, so its step is counted on an nn.LSTMCell instead.
    assert counted["counted_total"] == formula["total"] - formula["lstm"]
    assert counted["counted_by_op"]["aten.addmm"] == formula["linear"]
    assert counted["lstm_step_counted_on_lstm_cell"] == counted["lstm_step_by_formula"]
    steps = width // 4
    assert formula["lstm"] == 2 * steps * counted["lstm_step_by_formula"]
    assert formula["conv1"] == 2 * 16 * 1 * 9 * 32 * width  # by hand: the first layer
    assert formula["total"] == sum(v for k, v in formula.items() if k != "total")


def test_timing_interleaves_the_backends():
    calls: list[str] = []

    def backend(name: str) -> runtimes.Backend:
        return runtimes.Backend(name, lambda x: calls.append(name) or [], None, "")

    batches = {1: [torch.zeros(1)], 16: [torch.zeros(16)]}
    ms = cpu_compile.time_backends({"a": backend("a"), "b": backend("b")}, batches, repeats=6,
                                   rounds=3)
    assert set(ms) == {"a", "b"} and set(ms["a"]) == {1, 16}
    switches = sum(x != y for x, y in zip(calls, calls[1:], strict=False))
    assert switches >= 2 * 3 * 2 - 1  # a, b, a, b... round after round: never all of one first
    assert calls.count("a") == calls.count("b") == 2 * (6 + 2 + 1 + 1)  # timed + warm-ups


def test_the_peak_is_the_best_measured_convolution():
    peak = flops.conv_peak(1, shapes=[(1, 8, 16, 32)], repeats=1)
    assert peak["threads"] == 1 and len(peak["measured"]) == 2
    assert peak["gflops"] == max(m["gflops"] for m in peak["measured"]) > 0
    assert torch.get_num_threads() >= 1


def test_quick_cli_run_writes_results_and_figure(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--quick", "--backends", "frozen", "int8", "--realworld-images", "2",
            "--held-out-lines", "0", "--out", str(out)]
    threads = torch.get_num_threads()
    assert cpu_compile.main(argv) == 0
    assert torch.get_num_threads() == threads  # left as it was found
    results = json.loads((out / "results.json").read_text())
    assert (out / "cpu_compile.png").read_bytes()[:8] == PNG
    assert results["command"] == "python -m lab_code.measuring cpu_compile " + " ".join(argv)
    assert {"date", "versions", "machine", "setup", "flops", "peak", "threads", "int8"} <= \
        results.keys()
    assert results["versions"]["torch"] == torch.__version__
    assert len(results["machine"]["load_average_before"]) == 3
    assert results["setup"]["tensor_width"] == profiling.LINE_WIDTH + 16
    records = results["threads"]["1"]
    assert list(records) == ["torchscript", "frozen", "int8"]
    for name, r in records.items():
        assert r["status"] == "ok" and r["parity"]["lines"] == 8
        for key in ("build_s", "ms_bs1", "ms_bs16", "ms_per_line_bs16", "vs_torchscript_bs1",
                    "vs_torchscript_bs16", "pct_of_peak", "warnings", "portability"):
            assert key in r, (name, key)
    assert records["torchscript"]["vs_torchscript_bs16"] == 1.0
    assert any("torch.ao.quantization is deprecated" in w for w in records["int8"]["warnings"])
    assert results["int8"]["realworld"]["images"] == 2 and "held_out" not in results["int8"]
    assert results["int8"]["source"].startswith("https://docs.pytorch.org/")
    assert "frozen" in capsys.readouterr().out
    figure = cpu_compile.plot(results)
    assert len(figure.axes) == 2


@pytest.mark.slow
def test_the_documented_quick_run(tmp_path):
    """`--quick` as the README shows it: TorchScript, frozen, ONNX Runtime and int8 (compile and
    AOTInductor are left out), with tiny CER sets."""
    assert cpu_compile.main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    records = results["threads"]["1"]
    assert list(records) == ["torchscript", "frozen", "onnxruntime", "int8"]
    expected = "ok" if "onnxruntime" in sys.modules or _has("onnxruntime") else "skipped"
    assert records["onnxruntime"]["status"] == expected
    assert {"realworld", "held_out"} <= results["int8"].keys()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cpu_compile.main(["--quick", "--out", str(blocker)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot write to {blocker}")
