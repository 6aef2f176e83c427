"""The model compiles with torch.jit.script, matches eager mode, and tracing's pitfalls are real."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lab_code import preprocess
from lab_code.artifacts import bundled_model_path, load_torchscript, quiet_torchscript
from lab_code.training import data, export
from lab_code.training.model import LineRecognizer

EXAMPLES = Path(preprocess.__file__).parent / "assets" / "examples"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LineRecognizer(data.CHARSET).eval()


def test_heights_agree():
    assert LineRecognizer(data.CHARSET).height == preprocess.HEIGHT


def test_output_steps_are_a_quarter_of_the_width(model):
    assert model.logits(torch.zeros(2, 1, 32, 200)).shape == (2, 50, len(data.CHARSET) + 1)


def test_scripted_model_saves_loads_and_matches_eager(model, tmp_path):
    path = export.save_torchscript(model, tmp_path / "m.pt")
    compiled = load_torchscript(path)
    batch, _ = export.example_batch(6)
    parity = export.check_parity(model, compiled, batch)
    assert parity.ok, parity
    assert compiled.charset == list(data.CHARSET)


def eager_copy_of(scripted: torch.jit.ScriptModule) -> LineRecognizer:
    """An eager LineRecognizer holding a TorchScript model's weights (its sizes read from them)."""
    weights = scripted.state_dict()
    channels = tuple(weights[f"features.{i}.0.weight"].shape[0] for i in range(5))
    hidden = weights["rnn.weight_hh_l0"].shape[1]
    eager = LineRecognizer("".join(scripted.charset), channels=channels, hidden=hidden)
    eager.load_state_dict(weights)
    return eager.eval()


def undecorated(model, logits: torch.Tensor) -> list[str]:
    """Greedy CTC decoding without the final strip: what the model's steps spell."""
    texts = []
    for row in logits.argmax(-1).tolist():
        kept = [i for n, i in enumerate(row) if i != 0 and (n == 0 or i != row[n - 1])]
        texts.append("".join(model.charset[i - 1] for i in kept))
    return texts


def test_the_bundled_model_strips_the_spaces_it_reads_in_a_margin_eager_and_scripted():
    """The bundled examples and lesson 02's 64 shipped lines with a blank margin added make the
    trained model spell a space there: the eager model and its TorchScript compilation must both
    return the text without it, and the same text."""
    from lab_code.measuring import profiling

    bundled = load_torchscript(bundled_model_path())
    eager = eager_copy_of(bundled)
    scripted = export.script(eager)  # compiled from this checkout's code, not the file's
    arrays = [arr for path in sorted(EXAMPLES.glob("*.png"))
              for arr in preprocess.line_arrays(Image.open(path))] + profiling.load_lines()[0]
    lines = []
    for arr in arrays:
        blank = np.zeros((arr.shape[0], 32), arr.dtype)
        lines.append(np.concatenate([blank, arr, blank], axis=1))
    batch = preprocess.batch(lines)
    with torch.no_grad():
        logits = eager.logits(batch)
        spelled = undecorated(eager, logits)
        edged = [t for t in spelled if t != t.strip()]
        assert len(edged) >= 3, (f"the bundled model spells no edge space on these lines "
                                 f"({spelled}): pick lines or margins where it does")
        want = [t.strip() for t in spelled]
        assert eager.decode(logits) == want
        assert scripted(batch) == want
        assert (scripted.logits(batch) - logits).abs().max().item() < 1e-4


def test_decode_strips_edge_spaces_eager_and_scripted(model):
    classes = len(data.CHARSET) + 1
    space, a, b = (data.CHARSET.index(ch) + 1 for ch in " ab")
    steps = [space, 0, a, 0, space, b, b, space, space, 0, space]  # " a b  " once merged
    logits = torch.nn.functional.one_hot(torch.tensor([steps]), classes).float()
    assert model.decode(logits) == ["a b"]
    assert export.script(model).decode(logits) == ["a b"]


def test_decode_merges_repeats_and_drops_blanks(model):
    classes = len(data.CHARSET) + 1
    a, b = data.CHARSET.index("a") + 1, data.CHARSET.index("b") + 1
    steps = [a, a, 0, a, b, b, 0, 0]
    logits = torch.nn.functional.one_hot(torch.tensor([steps]), classes).float()
    assert model.decode(logits) == ["aab"]
    assert export.script(model).decode(logits) == ["aab"]


def test_tracing_fails_on_strings_and_warns_about_the_decoder(model):
    report = export.trace_pitfalls(model, export.example_batch(2)[0])
    assert "traced functions" in report.full_model_error
    assert any("Python" in w for w in report.traced_warnings)
    assert report.scripted_on_b == export.script(model)(export.example_batch(2)[0][1:2])[0]


def test_the_traced_decoder_replays_its_example(model):
    """Hand-built logits, so that lines A and B surely decode differently: B is A with its scores
    flipped in time. A working decoder tells them apart; the traced one answers A for both."""
    classes = len(data.CHARSET) + 1
    a, b, c = (data.CHARSET.index(ch) + 1 for ch in "abc")
    logits_a = torch.nn.functional.one_hot(torch.tensor([[a, 0, b, b, 0, c]]), classes).float()
    logits_b = logits_a.flip(1)  # flip line B's scores: "cba"
    assert model.decode(logits_a) == ["abc"] and model.decode(logits_b) == ["cba"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the tracer's own warning
        with quiet_torchscript():
            traced = export.trace_decoder(logits_a)
    working = export.collapse_repeats(logits_b).tolist()
    assert working == [c, b, a] != export.collapse_repeats(logits_a).tolist()
    assert traced(logits_b).tolist() == [a, b, c]  # the traced decoder replays its example
    assert export.script(model).decode(logits_b) == ["cba"]  # the scripted one does not


def test_torch_export_runs_the_tensor_part(model, tmp_path):
    batch, _ = export.example_batch(2)
    path = export.export_pt2(model, tmp_path / "m.pt2", batch, width=64)
    loaded = export.load_pt2(path)
    three = export.fit_width(torch.cat([batch, batch[:1]]), 64)  # another batch size works
    assert torch.allclose(loaded(three), model.logits(three), atol=1e-5)
    with pytest.raises(Exception):  # noqa: B017 - another width does not: the LSTM was unrolled
        loaded(export.fit_width(batch, 96))


# --- ONNX: where torch.export cannot capture the model ----------------------------------------
CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "text_recognizer_checkpoint.pt"


@pytest.fixture(scope="module")
def trained_model():
    from lab_code.training.train import load_checkpoint

    return load_checkpoint(CHECKPOINT)[0].eval()


def test_when_torch_export_fails_the_torchscript_based_exporter_writes_the_model(
        trained_model, tmp_path, monkeypatch, capsys):
    """torch 2.11 (Colab's in December 2026) cannot capture the LSTM with a dynamic width
    ("Pending unbacked symbols"): the export falls back, says so, and the file still reads any
    batch and width as the model does. Seen for real in the Colab-like venv; simulated here."""
    pytest.importorskip("onnxruntime")
    from lab_code.recognizer import OnnxRecognizer

    real = torch.onnx.export

    def without_torch_export(*args, dynamo=True, **kwargs):
        if dynamo:
            raise torch.onnx.OnnxExporterError("as torch 2.11's torch.export does")
        return real(*args, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", without_torch_export)
    path = export.export_onnx(trained_model, tmp_path / "m.onnx")
    assert export.onnx_exporter(path).startswith(export.LEGACY)
    assert "TorchScript-based exporter" in capsys.readouterr().err
    batch, _ = export.example_batch(6)
    parity = export.check_onnx_parity(trained_model, path, batch)
    assert parity.ok, parity
    page = Image.open(EXAMPLES / "page_3_lines.png")  # three lines of three widths, one batch
    assert OnnxRecognizer(path).predict(page) == OnnxRecognizer().predict(page)  # the bundled


def test_the_current_exporter_is_named_in_the_file(trained_model, tmp_path):
    pytest.importorskip("onnxruntime")
    path = export.export_onnx(trained_model, tmp_path / "m.onnx")
    exporter = export.onnx_exporter(path)
    assert exporter.startswith((export.DYNAMO, export.LEGACY)) and torch.__version__ in exporter


def test_a_staging_that_fails_leaves_no_version_behind(tmp_path, monkeypatch):
    from lab_code.training import stage_model

    def broken(model, folder):
        raise stage_model.StagingError("the export read differently")

    monkeypatch.setattr(stage_model, "onnx_entry", broken)
    with pytest.raises(stage_model.StagingError):
        stage_model.stage(CHECKPOINT, registry=tmp_path, wandb="off")
    folder = tmp_path / stage_model.DEFAULT_MODEL_NAME
    assert not list(folder.glob("v*")), "a failed staging left a version without a manifest"
    monkeypatch.undo()
    again = stage_model.stage(CHECKPOINT, registry=tmp_path, wandb="off", onnx=False)
    assert again["version"] == "v1"
