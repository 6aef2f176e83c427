"""Stage a trained model (the training side of the registry): compile a checkpoint to TorchScript,
store it in the local model registry as its next version with a manifest (sha256, metrics, source,
time, code version), point an alias at it, and log it to W&B as an artifact of its training run
when W&B is available. Serving gets it back, verified, with lab_code.registry.

    python -m lab_code.training stage_model --checkpoint runs/recognizer/checkpoint.pt
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

import lab_code
from lab_code.artifacts import (
    DEFAULT_MODEL_NAME,
    DEFAULT_REGISTRY,
    MANIFEST_FILE,
    MODEL_FILE,
    RegistryError,
    aliases_lock,
    bundled_model_path,
    model_folder,
    read_aliases,
    sha256_file,
    verified_copy,
    wandb_mode,
    wandb_project,
    write_aliases,
)


class StagingError(RegistryError):
    """A staging problem, described in one sentence."""


def code_version() -> str:
    """Package version, plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{lab_code.__version__}+{commit}" if commit else lab_code.__version__


def stage(checkpoint: str | os.PathLike, name: str = DEFAULT_MODEL_NAME, alias: str = "latest",
          registry: str | os.PathLike = DEFAULT_REGISTRY, wandb: str = "auto") -> dict:
    """Compile `checkpoint`, add it to the registry as the next version, point `alias` at it.

    The manifest describes the version and never changes; which version an alias names is kept
    in aliases.json alone, since a later staging moves the alias."""
    from lab_code.training.export import save_torchscript  # training side: only staging needs it
    from lab_code.training.train import load_checkpoint

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise StagingError(f"No checkpoint at {checkpoint}: train one with "
                           "`python -m lab_code.training train` first.")
    model, ckpt = load_checkpoint(checkpoint)
    return _add_version(lambda path: save_torchscript(model, path), name, alias, registry, wandb,
                        metrics=ckpt.get("metrics", {}), run_id=ckpt.get("wandb_run_id"),
                        source={"path": str(checkpoint), "sha256": sha256_file(checkpoint)})


def stage_file(model: str | os.PathLike, name: str = DEFAULT_MODEL_NAME, alias: str = "latest",
               registry: str | os.PathLike = DEFAULT_REGISTRY, wandb: str = "off",
               metrics: dict | None = None, note: str | None = None) -> dict:
    """Add an already compiled TorchScript file (the bundled model, a degraded copy, one made
    elsewhere) to the registry as the next version, like `stage` does for a checkpoint."""
    from lab_code.artifacts import load_torchscript

    model = Path(model)
    load_torchscript(model)  # a TorchScript file, or one clear error
    if metrics is None:
        manifest = model.parent / MANIFEST_FILE  # what the file's own manifest says of it
        known = json.loads(manifest.read_text()) if manifest.is_file() else {}
        same = known.get("file") == model.name and known.get("sha256") == sha256_file(model)
        metrics = known.get("metrics", {}) if same else {}
    source = {"path": str(model), "sha256": sha256_file(model)}
    if note:
        source["note"] = note
    return _add_version(lambda path: shutil.copyfile(model, path), name, alias, registry, wandb,
                        metrics=metrics, run_id=None, source=source, key="source_model")


def _add_version(write, name: str, alias: str, registry: str | os.PathLike, wandb: str, *,
                 metrics: dict, run_id: str | None, source: dict,
                 key: str = "source_checkpoint") -> dict:
    """Write the next version's folder (the model by `write(path)`, its manifest), log it to W&B
    when on, and point `alias` at it."""
    registry = Path(registry)
    with aliases_lock(registry, name):  # two stagings at once must not pick the same number
        folders = model_folder(registry, name).glob("v*")
        versions = [int(p.name[1:]) for p in folders if p.name[1:].isdigit()]
        version = f"v{max(versions, default=0) + 1}"
        folder = model_folder(registry, name) / version
        folder.mkdir(parents=True)
    model_path = folder / MODEL_FILE
    write(model_path)
    manifest = {
        "name": name,
        "version": version,
        "file": MODEL_FILE,
        "sha256": sha256_file(model_path),
        "size_bytes": model_path.stat().st_size,
        "metrics": metrics,
        key: source,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "wandb": None,
    }
    mode = wandb_mode(wandb)
    if mode != "off":
        manifest["wandb"] = log_artifact(model_path, manifest, run_id, mode, alias)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    with aliases_lock(registry, name):  # aliases.json is the only place an alias lives
        write_aliases(registry, name, read_aliases(registry, name) | {alias: version})
    return manifest


def log_artifact(model_path: Path, manifest: dict, run_id: str | None, mode: str,
                 alias: str) -> dict:
    """Log the model as a W&B artifact, as an output of its training run when we know it."""
    import wandb

    kwargs = {"id": run_id, "resume": "allow"} if run_id else {"job_type": "stage"}
    project = wandb_project()
    run = wandb.init(project=project, mode=mode, **kwargs)
    artifact = wandb.Artifact(manifest["name"], type="model",
                              metadata={k: v for k, v in manifest.items() if k != "wandb"})
    artifact.add_file(str(model_path), name=MODEL_FILE)
    run.log_artifact(artifact, aliases=[alias])
    info = {"mode": mode, "project": project, "run_id": run.id,
            "linked_to_training_run": bool(run_id)}
    run.finish()
    return info


def bundle(manifest: dict, registry: str | os.PathLike = DEFAULT_REGISTRY) -> Path:
    """Copy a staged model into the package (lab_code/artifacts) with its manifest."""
    folder = model_folder(registry, manifest["name"]) / manifest["version"]
    target = verified_copy(folder / manifest["file"], manifest["sha256"], bundled_model_path())
    (target.parent / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.training stage_model",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--checkpoint", type=Path, help="checkpoint.pt to compile and stage")
    what.add_argument("--model", type=Path, default=None,
                      help="an already compiled TorchScript file to stage as it is")
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME,
                        help="model name (default: %(default)s)")
    parser.add_argument("--alias", default="latest",
                        help="alias to point at the new version (default: latest)")
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY,
                        help="local registry folder (default: %(default)s)")
    parser.add_argument("--wandb", choices=["auto", "online", "offline", "off"], default="auto",
                        help="W&B logging: auto = online with WANDB_API_KEY, else offline")
    parser.add_argument("--bundle", action="store_true",
                        help="also copy the staged model into the package (maintainers)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.checkpoint is None and args.model is None:
            parser.error("give --checkpoint CKPT (or --model FILE.pt) to stage a model (python -m "
                         "lab_code.registry fetches one)")
        if args.model is not None:
            manifest = stage_file(args.model, args.name, args.alias, args.registry, args.wandb)
        else:
            manifest = stage(args.checkpoint, args.name, args.alias, args.registry, args.wandb)
    except (RegistryError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    where = args.registry / args.name / manifest["version"]
    print(f"staged {args.name}:{args.alias} as {manifest['version']} in {where} "
          f"(sha256 {manifest['sha256'][:12]}..., held-out CER "
          f"{manifest['metrics'].get('cer', float('nan')):.4f})")
    if manifest["wandb"]:
        w = manifest["wandb"]
        linked = "linked to training run" if w["linked_to_training_run"] else "new run"
        print(f"logged to W&B ({w['mode']}, project {w['project']}, run {w['run_id']}, {linked})")
    if args.bundle:
        print(f"bundled into the package: {bundle(manifest, args.registry)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
