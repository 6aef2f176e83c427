"""End to end: train a few steps, export, stage (W&B offline), fetch, predict."""

import json
import os
from pathlib import Path

import pytest
import torch

from lab_code import artifacts, devices, preprocess, registry
from lab_code.recognizer import OnnxRecognizer, TextRecognizer
from lab_code.training import data, stage_model
from lab_code.training.train import TrainConfig, load_checkpoint, train

# a model is trained in the first test's setup: 95 s at load average 14
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(steps=4, batch_size=4, eval_every=4, eval_size=16, workers=0)
    summary = train(config, out, wandb_mode="offline")
    return out, summary


def test_training_writes_checkpoint_and_metrics(trained):
    out, summary = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "checkpoint.pt").is_file() and metrics["best"]["step"] == 4
    assert 0.0 <= metrics["best"]["cer"] and summary["wandb_run_id"]
    # W&B offline wrote this run under the temp dir the tests use (conftest), not $HOME or the repo
    wandb_dir = Path(os.environ["WANDB_DIR"])
    assert list(wandb_dir.rglob(f"offline-run-*-{summary['wandb_run_id']}")), wandb_dir


def test_export_stage_fetch_predict(trained, tmp_path):
    out, _ = trained
    model, _ = load_checkpoint(out / "checkpoint.pt")
    reg = tmp_path / "registry"
    manifest = stage_model.stage(out / "checkpoint.pt", registry=reg, wandb="offline")
    assert manifest["version"] == "v1" and len(manifest["sha256"]) == 64
    assert manifest["wandb"]["linked_to_training_run"] and manifest["wandb"]["mode"] == "offline"
    for key in ("metrics", "source_checkpoint", "created", "code_version"):
        assert manifest[key]
    again = stage_model.stage(out / "checkpoint.pt", registry=reg, wandb="off", onnx=False)
    assert again["version"] == "v2" and again["onnx"] is None
    path, source = registry.fetch(out=tmp_path / "fetched.pt", registry=reg, wandb="off")
    assert "local registry" in source and artifacts.sha256_file(path) == again["sha256"]
    # the fetched file is the trained model: same logits and same text as eager mode, on a line
    line = data.render("A small test", data.Style.clean(data.fonts()[0]))
    batch = preprocess.batch([preprocess.line_array(line)])
    fetched = TextRecognizer(path)
    with torch.inference_mode():
        assert torch.allclose(fetched.loaded.logits(batch), model.eval().logits(batch), atol=1e-4)
        assert fetched.predict(line) == model(batch)[0]
    # v1 also holds the ONNX export: fetched as such, it reads the same as the eager model
    assert manifest["onnx"]["file"] == artifacts.ONNX_FILE
    with pytest.raises(artifacts.RegistryError, match="staged without an ONNX file"):
        registry.fetch(out=tmp_path / "none.onnx", registry=reg, wandb="off", fmt="onnx")
    aliases = artifacts.read_aliases(reg, manifest["name"])
    (reg / manifest["name"] / artifacts.ALIASES_FILE).write_text(json.dumps(
        {**aliases, "first": "v1"}))
    onnx_path, _ = registry.fetch(alias="first", out=tmp_path / "fetched.onnx", registry=reg,
                                  wandb="off", fmt="onnx")
    assert artifacts.sha256_file(onnx_path) == manifest["onnx"]["sha256"]
    assert OnnxRecognizer(onnx_path).predict(line) == model(batch)[0]


def test_a_moved_alias_is_recorded_once(trained, tmp_path):
    """Aliases live in aliases.json only: a manifest written when `latest` named v1 must not
    still claim it after `latest` moves to v2."""
    out, _ = trained
    first = stage_model.stage(out / "checkpoint.pt", registry=tmp_path, wandb="off", onnx=False)
    second = stage_model.stage(out / "checkpoint.pt", registry=tmp_path, wandb="off", onnx=False)
    assert artifacts.read_aliases(tmp_path, first["name"]) == {"latest": second["version"]}
    folder = artifacts.model_folder(tmp_path, first["name"])
    for version in (first["version"], second["version"]):
        manifest = json.loads((folder / version / artifacts.MANIFEST_FILE).read_text())
        assert "latest" not in json.dumps(manifest), manifest


def test_fetch_refuses_a_changed_file(trained, tmp_path):
    out, _ = trained
    manifest = stage_model.stage(out / "checkpoint.pt", registry=tmp_path, wandb="off",
                                 onnx=False)
    staged = tmp_path / manifest["name"] / manifest["version"] / manifest["file"]
    staged.write_bytes(staged.read_bytes() + b"tampered")
    with pytest.raises(artifacts.RegistryError, match="sha256"):
        registry.fetch(out=tmp_path / "x.pt", registry=tmp_path, wandb="off")
    assert not (tmp_path / "x.pt").exists()


def test_fetch_unknown_alias_and_missing_checkpoint_are_clear(tmp_path, capsys):
    assert registry.main(["--alias", "nope", "--registry", str(tmp_path), "--wandb", "off"]) == 1
    assert stage_model.main(["--checkpoint", str(tmp_path / "none.pt"), "--wandb", "off"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error:") for line in err)
    assert "no model text-recognizer:nope" in err[0].lower() and "no checkpoint" in err[1].lower()


def test_wandb_auto_mode_is_offline_without_a_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert artifacts.wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "not-a-real-key")
    assert artifacts.wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert artifacts.wandb_mode("auto") == "off"


def test_cuda_request_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(devices.DeviceError, match="needs a CUDA GPU"):
        devices.resolve_device("cuda")


def test_onnx_only_exports_for_the_checkpoint_the_manifest_names_and_no_other(trained, tmp_path):
    out, _ = trained
    staged = stage_model.stage(out / "checkpoint.pt", registry=tmp_path, wandb="off", onnx=False)
    folder = tmp_path / staged["name"] / staged["version"]
    other = Path(__file__).resolve().parents[1] / "models" / "text_recognizer_checkpoint.pt"
    with pytest.raises(stage_model.StagingError, match="is not the checkpoint"):
        stage_model.add_onnx(other, folder)
    manifest = stage_model.add_onnx(out / "checkpoint.pt", folder)
    assert artifacts.sha256_file(folder / artifacts.ONNX_FILE) == manifest["onnx"]["sha256"]
    assert json.loads((folder / artifacts.MANIFEST_FILE).read_text()) == manifest


def test_the_bundled_checkpoint_is_the_one_the_bundled_model_was_made_from():
    """Lesson 01 compiles models/text_recognizer_checkpoint.pt: it must be the bundled model's own
    checkpoint (`make model` copies it there), or the lesson teaches on other weights."""
    root = Path(__file__).resolve().parents[1]
    manifest = json.loads((root / "lab_code" / "artifacts" / artifacts.MANIFEST_FILE).read_text())
    checkpoint = root / "models" / "text_recognizer_checkpoint.pt"
    assert artifacts.sha256_file(checkpoint) == manifest["source_checkpoint"]["sha256"], (
        "the bundled model came from another checkpoint: copy its source checkpoint to models/")


def test_bundling_copies_the_models_checkpoint_to_models_in_a_clone(trained, tmp_path,
                                                                     monkeypatch):
    out, _ = trained
    reg = tmp_path / "registry"
    manifest = stage_model.stage(out / "checkpoint.pt", registry=reg, wandb="off", onnx=False)
    monkeypatch.setattr(stage_model, "bundled_model_path", lambda: tmp_path / "pkg" / "m.pt")
    monkeypatch.setattr(stage_model, "BUNDLED_CHECKPOINT", tmp_path / "models" / "ckpt.pt")
    stage_model.bundle(manifest, reg)  # no models/ folder (an installed package): nothing copied
    assert not (tmp_path / "models").exists()
    (tmp_path / "models").mkdir()
    stage_model.bundle(manifest, reg)
    assert artifacts.sha256_file(tmp_path / "models" / "ckpt.pt") == \
        manifest["source_checkpoint"]["sha256"]
