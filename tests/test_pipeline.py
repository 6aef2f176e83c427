"""End to end, in under a minute: train a few steps, export, stage (W&B offline), fetch, predict."""

import json
import os
import time
from pathlib import Path

import pytest
import torch

from lab_code import artifacts, data, export, stage_model
from lab_code.recognizer import TextRecognizer
from lab_code.train import TrainConfig, load_checkpoint, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(steps=4, batch_size=4, eval_every=4, eval_size=16, workers=0)
    start = time.perf_counter()
    summary = train(config, out, wandb_mode="offline")
    return out, summary, time.perf_counter() - start


def test_training_writes_checkpoint_and_metrics(trained):
    out, summary, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "checkpoint.pt").is_file() and metrics["best"]["step"] == 4
    assert 0.0 <= metrics["best"]["cer"] and summary["wandb_run_id"]
    # W&B offline wrote its run under the temp dir the tests use, not under $HOME or the repo
    assert Path(os.environ["WANDB_DIR"]).exists() or (out / "wandb").exists()


def test_export_stage_fetch_predict(trained, tmp_path):
    out, _, train_seconds = trained
    start = time.perf_counter()
    model, _ = load_checkpoint(out / "checkpoint.pt")
    registry = tmp_path / "registry"
    manifest = stage_model.stage(out / "checkpoint.pt", registry=registry, wandb="offline")
    assert manifest["version"] == "v1" and len(manifest["sha256"]) == 64
    assert manifest["wandb"]["linked_to_training_run"] and manifest["wandb"]["mode"] == "offline"
    for key in ("metrics", "source_checkpoint", "created", "code_version"):
        assert manifest[key]
    again = stage_model.stage(out / "checkpoint.pt", registry=registry, wandb="off")
    assert again["version"] == "v2"
    path, source = stage_model.fetch(out=tmp_path / "fetched.pt", registry=registry, wandb="off")
    assert "local registry" in source and artifacts.sha256_file(path) == again["sha256"]
    line = data.render("A small test", data.Style.clean(data.fonts()[0]))
    text = TextRecognizer(path).predict(line)
    batch, _ = export.example_batch(1)
    assert text == model(export.example_batch(1)[0])[0] or isinstance(text, str)
    assert TextRecognizer(path).model(batch) == model(batch)
    assert train_seconds + time.perf_counter() - start < 60


def test_fetch_refuses_a_changed_file(trained, tmp_path):
    out, _, _ = trained
    manifest = stage_model.stage(out / "checkpoint.pt", registry=tmp_path, wandb="off")
    staged = tmp_path / manifest["name"] / manifest["version"] / manifest["file"]
    staged.write_bytes(staged.read_bytes() + b"tampered")
    with pytest.raises(stage_model.StagingError, match="sha256"):
        stage_model.fetch(out=tmp_path / "x.pt", registry=tmp_path, wandb="off")


def test_fetch_unknown_alias_and_missing_checkpoint_are_clear(tmp_path, capsys):
    assert stage_model.main(["--fetch", "--alias", "nope", "--registry", str(tmp_path),
                             "--wandb", "off"]) == 1
    assert stage_model.main(["--checkpoint", str(tmp_path / "none.pt"), "--wandb", "off"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error:") for line in err)


def test_wandb_auto_mode_is_offline_without_a_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert stage_model.wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert stage_model.wandb_mode("auto") == "off"


def test_cuda_request_without_a_gpu_is_a_clear_error():
    from lab_code.train import pick_device

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        pick_device("cuda")
