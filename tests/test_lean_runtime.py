"""The lean runtime: the ONNX export of the bundled model, run by onnxruntime with lab_code.ctc's
numpy decoding, reads exactly what the TorchScript model reads, and production on it never
imports torch (the Lambda image installs none)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from lab_code import artifacts, ctc, preprocess
from lab_code.recognizer import (
    OnnxRecognizer,
    TextRecognizer,
    load,
    model_file,
)
from lab_code.serving.ports import free_port
from lab_code.serving.processes import start_background, stop_background
from lab_code.training import data, evaluate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "lab_code" / "assets" / "examples" / "line_sans.png"
CHARSET = list("ab ")  # classes: 0 blank, 1 'a', 2 'b', 3 ' '


def logits_for(path: list[int], confidence: float = 0.9, classes: int = 4) -> np.ndarray:
    """(1, T, classes) logits whose best class at step t is path[t], with softmax probability
    `confidence` for it and the rest shared evenly."""
    rest = (1 - confidence) / (classes - 1)
    probs = np.full((len(path), classes), rest)
    probs[np.arange(len(path)), path] = confidence
    return np.log(probs)[None].astype(np.float32)


# --- lab_code.ctc -----------------------------------------------------------------------------
def test_greedy_merges_repeats_drops_blanks_and_strips_edge_spaces():
    (text, conf), = ctc.greedy(logits_for([3, 1, 1, 0, 1, 2, 2, 3, 0, 3]), CHARSET)
    assert text == "aab"  # ' a a b ' -> repeats merged, the blank keeps a double, ends stripped
    assert conf == pytest.approx(0.9, abs=1e-5)


def test_confidence_is_the_mean_over_the_character_steps_only():
    logits = np.concatenate([logits_for([1], 0.5), logits_for([0], 0.99),
                             logits_for([2], 0.8)], axis=1)
    (text, conf), = ctc.greedy(logits, CHARSET)
    assert text == "ab" and conf == pytest.approx((0.5 + 0.8) / 2, abs=1e-5)


def test_a_line_of_blanks_reads_as_nothing_with_the_blanks_mean_probability():
    logits = np.concatenate([logits_for([0], 0.6), logits_for([0], 0.8)], axis=1)
    assert ctc.greedy(logits, CHARSET) == [("", pytest.approx(0.7, abs=1e-5))]
    assert ctc.greedy(np.zeros((2, 0, 4), np.float32), CHARSET) == [("", 1.0), ("", 1.0)]


def test_greedy_checks_its_input_in_one_sentence():
    with pytest.raises(ValueError, match="3 dimensions"):
        ctc.greedy(np.zeros((4, 4)), CHARSET)
    with pytest.raises(ValueError, match="5 classes but the charset has 3"):
        ctc.greedy(np.zeros((1, 2, 5)), CHARSET)
    with pytest.raises(ValueError, match="3 dimensions"):
        ctc.texts(np.zeros(4), CHARSET)


def test_greedy_decodes_as_the_torchscript_model_does_on_its_own_logits():
    import torch

    recognizer = TextRecognizer(optimize=False)
    rng = np.random.default_rng(3)
    # random scores: many near-ties, repeats and blanks between equal characters
    batch = torch.from_numpy(rng.normal(size=(64, 40, len(recognizer.charset) + 1))
                             .astype(np.float32))
    scripted = recognizer.loaded.decode(batch)
    assert [t for t, _ in ctc.greedy(batch.numpy(), recognizer.charset)] == scripted
    assert ctc.texts(batch.numpy(), recognizer.charset) == scripted


# --- the bundled ONNX file --------------------------------------------------------------------
def test_the_onnx_file_is_bundled_with_its_lineage():
    manifest = json.loads((artifacts.bundled_model_path().parent / "manifest.json").read_text())
    entry = manifest["onnx"]
    path = artifacts.bundled_onnx_path()
    assert entry["file"] == path.name == artifacts.ONNX_FILE
    assert artifacts.sha256_file(path) == entry["sha256"], \
        "the bundled ONNX file is not the one its manifest records: re-export it (stage_model " \
        "--onnx-only)"
    assert entry["size_bytes"] == path.stat().st_size
    assert "dynamo=True" in entry["exporter"]


@pytest.fixture(scope="module")
def both() -> tuple[TextRecognizer, OnnxRecognizer]:
    return TextRecognizer(), OnnxRecognizer(threads=1)


def test_onnx_takes_any_batch_and_width_and_knows_its_charset(both):
    scripted, onnx = both
    assert onnx.charset == scripted.charset and onnx.runtime == "onnx"
    rng = np.random.default_rng(0)
    for batch, width in ((1, 20), (3, 333), (5, 1500)):
        lines = [rng.random((preprocess.HEIGHT, width), dtype=np.float32) for _ in range(batch)]
        steps = (width + preprocess.TAIL_PAD) // 4  # one step per 4 columns
        assert onnx.logits(preprocess.batch_array(lines)).shape[:2] == (batch, steps)


@pytest.mark.slow
def test_both_runtimes_read_every_real_world_image_alike(both):
    scripted, onnx = both
    samples = evaluate.realworld_set()
    assert len(samples) >= 400
    for sample in samples:
        image = Image.open(sample.path).convert("RGB")
        lines = scripted.image_lines(image)
        assert onnx.predict_lines(lines) == scripted.predict_lines(lines), sample.path.name


@pytest.mark.slow
@pytest.mark.parametrize("which", sorted(data.HELD_OUT_SETS))
def test_both_runtimes_read_every_held_out_line_alike_with_the_same_confidence(both, which):
    scripted, onnx = both
    lines = [line for line, _ in data.HELD_OUT_SETS[which]()]
    texts = scripted.predict_lines(lines)
    assert onnx.predict_lines(lines) == texts
    scored_ts, scored_onnx = scripted.predict_lines_scored(lines), onnx.predict_lines_scored(lines)
    assert [t for t, _ in scored_ts] == texts == [t for t, _ in scored_onnx]
    assert all(0.0 < c <= 1.0 for _, c in scored_onnx)
    assert max(abs(a[1] - b[1]) for a, b in zip(scored_ts, scored_onnx, strict=True)) < 1e-4


def test_a_clean_line_reads_with_high_confidence_a_misread_with_low_and_noise_as_nothing(both):
    scripted, onnx = both
    line = preprocess.line_array(data.render("Confidence is measured",
                                             data.Style.clean(data.fonts()[0])))
    rng = np.random.default_rng(0)
    drowned = np.clip(line + rng.normal(0, 0.5, line.shape), 0, 1).astype(np.float32)
    noise = [rng.random((preprocess.HEIGHT, 300), dtype=np.float32) for _ in range(8)]
    (text, sure), (misread, unsure), *on_noise = onnx.predict_lines_scored([line, drowned, *noise])
    assert text == "Confidence is measured" and sure > 0.9
    # the same line under heavy noise is misread, and the model says so: below the LowConfidence
    # alert's 0.9 (monitoring/rules.yml)
    assert misread != text and unsure < 0.9
    # noise holds no text: the model reads nothing there (an empty reading's confidence is how
    # sure it is of that, lab_code.ctc.greedy), or what it does read, it doubts
    assert all(t == "" or c < 0.9 for t, c in on_noise), on_noise


# --- which runtime a service loads ------------------------------------------------------------
def test_load_picks_the_runtime_by_file_and_prefers_the_bundled_onnx_file(tmp_path):
    assert model_file() == artifacts.bundled_onnx_path()
    assert model_file(runtime="torchscript") == artifacts.bundled_model_path()
    assert isinstance(load(artifacts.bundled_model_path()), TextRecognizer)
    assert isinstance(load(runtime="onnx", threads=1), OnnxRecognizer)
    with pytest.raises(ValueError, match="runtime must be one of"):
        model_file(runtime="tensorrt")
    with pytest.raises(FileNotFoundError, match="No ONNX model at"):
        OnnxRecognizer(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not an ONNX model onnxruntime can load"):
        OnnxRecognizer(tmp_path / "bad.onnx")


def test_without_onnxruntime_auto_falls_back_to_torchscript(monkeypatch):
    monkeypatch.setattr("lab_code.recognizer.onnx_available", lambda: False)
    assert model_file() == artifacts.bundled_model_path()


def test_the_cli_reads_with_either_file():
    for model in (artifacts.bundled_model_path(), artifacts.bundled_onnx_path()):
        done = subprocess.run([sys.executable, "-m", "lab_code.recognizer", str(EXAMPLE),
                               "--model", str(model)], capture_output=True, text=True,
                              timeout=120, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "Deploying a model is half the work."


# --- production without torch -----------------------------------------------------------------
NO_TORCH = textwrap.dedent("""
    import sys

    class NoTorch:
        '''torch cannot be imported, as in the Lambda image, which does not install it.'''
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in ("torch", "torchvision", "functorch"):
                raise ModuleNotFoundError(f"No module named {name!r} (not installed)", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())
""")


def no_torch_path(tmp_path: Path) -> Path:
    """A folder whose sitecustomize.py makes torch unimportable for every Python started with it
    on PYTHONPATH (uvicorn's worker processes included)."""
    folder = tmp_path / "no_torch"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(NO_TORCH)
    return folder


def test_the_lambda_entry_serves_a_request_without_torch(tmp_path):
    probe = textwrap.dedent(f"""
        import base64, json, sys
        try:
            import torch
        except ModuleNotFoundError:
            pass
        else:
            sys.exit("torch imported: the blocker did not load")
        from lab_code.serving import lambda_function
        body = base64.b64encode(open({str(EXAMPLE)!r}, "rb").read()).decode()
        answer = lambda_function.handler({{"image": body}}, None)
        print("ANSWER " + json.dumps({{"answer": answer, "torch": "torch" in sys.modules,
                                      "runtime": lambda_function.RECOGNIZER.runtime}}))
    """)
    env = {**os.environ, "PYTHONPATH": f"{no_torch_path(tmp_path)}{os.pathsep}{ROOT}"}
    env.pop("MODEL_PATH", None)
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.split("ANSWER ", 1)[1])
    assert out["runtime"] == "onnx" and not out["torch"]
    assert out["answer"]["statusCode"] == 200
    assert json.loads(out["answer"]["body"])["text"] == "Deploying a model is half the work."


@pytest.mark.slow
def test_the_service_and_its_workers_run_without_torch(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "serverless.log"
    proc = start_background(["lab_code.serving", "serverless", "--port", str(port),
                             "--workers", "2"], url + "health", log,
                            env={"PYTHONPATH": str(no_torch_path(tmp_path))})
    try:
        body = {"image": base64.b64encode(EXAMPLE.read_bytes()).decode()}
        texts = {requests.post(url, json=body, timeout=60).json()["text"] for _ in range(6)}
        assert texts == {"Deploying a model is half the work."}
    finally:
        stop_background(proc)
    text = log.read_text()
    assert "(onnx)" in text and text.count('"runtime": "onnx"') == 2, text[-2000:]


def test_cold_start_runs_each_source_as_its_image_holds_it(tmp_path):
    """The benchmark's "this" has its bytecode compiled by the Lambda image's own step, and
    "this_uncompiled" compiles at each start (each from its own copy of the code)."""
    done = subprocess.run([sys.executable, "-m", "lab_code.measuring", "cold_start", "--rounds",
                           "1", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads((tmp_path / "results.json").read_text())["per_source"]
    assert run["this"]["bytecode"] == run["this_torchscript"]["bytecode"] == "compiled at build"
    assert run["this_uncompiled"]["bytecode"] == "compiled at each start"
    assert run["this"]["runtime"] == "onnx" and not run["this"]["torch_loaded"]


def test_deck_07_quotes_the_committed_cold_start_run():
    """The cold-start figures on lesson 07's slide are the committed run's, rounded as shown."""
    import re

    root = Path(__file__).resolve().parents[1]
    run = json.loads((root / "profiling" / "results" / "cold_start" / "results.json").read_text())
    deck = " ".join((root / "slides" / "07_fast_and_cheap.md").read_text().split())
    found = re.search(r"init ([\d.]+) s and (\d+) MB at peak, against ([\d.]+) s and (\d+) MB "
                      r"with torch \(([\d.]+)x, ([\d.]+)x", deck)
    assert found, "deck 07 no longer quotes the cold start in the form this test reads"
    this, before = run["per_source"]["this"], run["per_source"]["before"]
    ratios = run["ratios_to_before"]["this"]
    assert found.groups() == (f"{this['init_s']:.2f}", f"{this['peak_rss_mb']:.0f}",
                              f"{before['init_s']:.2f}", f"{before['peak_rss_mb']:.0f}",
                              f"{ratios['init_s']:.2f}", f"{ratios['peak_rss_mb']:.2f}")
    bare = run["per_source"]["this_uncompiled"]
    saved = re.search(r"compile step \(lesson 06\) saves ([\d.]+) s of the ([\d.]+) s", deck)
    assert saved, "deck 07's notes no longer say what the compile step saves"
    assert saved.groups() == (f"{bare['init_s'] - this['init_s']:.2f}", f"{bare['init_s']:.2f}")
