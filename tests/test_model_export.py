"""The model compiles with torch.jit.script, matches eager mode, and tracing's pitfalls are real."""

import warnings

import pytest
import torch

from lab_code import preprocess
from lab_code.artifacts import load_torchscript, quiet_torchscript
from lab_code.training import data, export
from lab_code.training.model import LineRecognizer


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
