"""Stage a trained model (the training side of the registry): compile a checkpoint to TorchScript
and export it to ONNX, store both in the local model registry as its next version with a manifest
(each file's sha256, metrics, source, time, code version), point an alias at it, and log it to
W&B as an artifact of its training run when W&B is available. Serving gets it back, verified,
with lab_code.registry.

    python -m lab_code.training stage_model --checkpoint runs/recognizer/checkpoint.pt
    python -m lab_code.training stage_model --checkpoint models/text_recognizer_checkpoint.pt \
        --onnx-only    # re-export the bundled model's ONNX file from its own checkpoint
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
    ONNX_FILE,
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


# In a clone, the checkpoint the bundled model came from sits here: lesson 01 compiles it.
BUNDLED_CHECKPOINT = (Path(__file__).resolve().parents[2] / "models"
                      / "text_recognizer_checkpoint.pt")


def code_version() -> str:
    """Package version, plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{lab_code.__version__}+{commit}" if commit else lab_code.__version__


def stage(checkpoint: str | os.PathLike, name: str = DEFAULT_MODEL_NAME, alias: str = "latest",
          registry: str | os.PathLike = DEFAULT_REGISTRY, wandb: str = "auto",
          onnx: bool = True) -> dict:
    """Compile `checkpoint` (and, with `onnx`, export it to ONNX beside it), add it to the
    registry as the next version, point `alias` at it.

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
                        source={"path": str(checkpoint), "sha256": sha256_file(checkpoint)},
                        onnx_model=model if onnx else None)


def stage_file(model: str | os.PathLike, name: str = DEFAULT_MODEL_NAME, alias: str = "latest",
               registry: str | os.PathLike = DEFAULT_REGISTRY, wandb: str = "off",
               metrics: dict | None = None, note: str | None = None,
               with_onnx: bool = False) -> dict:
    """Add an already compiled TorchScript file (the bundled model, a degraded copy, one made
    elsewhere) to the registry as the next version, like `stage` does for a checkpoint. An ONNX
    export needs the eager model a checkpoint holds, so by default the version has none and a
    service serves its TorchScript file (lab_code.registry.served_format); `with_onnx` also
    stages the ONNX file the model's own manifest names beside it (the bundled model's), after
    both files match that manifest's sha256 sums: the same weights, the same lineage."""
    from lab_code.artifacts import load_torchscript

    model = Path(model)
    load_torchscript(model)  # a TorchScript file, or one clear error
    manifest = model.parent / MANIFEST_FILE  # what the file's own manifest says of it
    known = json.loads(manifest.read_text()) if manifest.is_file() else {}
    same = known.get("file") == model.name and known.get("sha256") == sha256_file(model)
    if metrics is None:
        metrics = known.get("metrics", {}) if same else {}
    onnx_file = None
    if with_onnx:
        entry = known.get("onnx") if same else None
        onnx_file = model.parent / entry["file"] if entry else None
        if onnx_file is None or not onnx_file.is_file() or sha256_file(onnx_file) != \
                entry["sha256"]:
            raise StagingError(f"No ONNX export of {model} that the {MANIFEST_FILE} beside it "
                               "vouches for: stage the checkpoint instead (--checkpoint CKPT "
                               "exports one), or stage the file without --with-onnx.")
    source = {"path": str(model), "sha256": sha256_file(model)}
    if note:
        source["note"] = note
    return _add_version(lambda path: shutil.copyfile(model, path), name, alias, registry, wandb,
                        metrics=metrics, run_id=None, source=source, key="source_model",
                        onnx_copy=(onnx_file, known["onnx"]) if onnx_file else None)


def _add_version(write, name: str, alias: str, registry: str | os.PathLike, wandb: str, *,
                 metrics: dict, run_id: str | None, source: dict,
                 key: str = "source_checkpoint", onnx_model=None,
                 onnx_copy: tuple[Path, dict] | None = None) -> dict:
    """Write the next version's folder (the model by `write(path)`; with `onnx_model`, the eager
    model, its ONNX export beside it, or with `onnx_copy` (file, manifest entry) a verified copy
    of one; its manifest), log it to W&B when on, and point `alias` at it."""
    registry = Path(registry)
    with aliases_lock(registry, name):  # two stagings at once must not pick the same number
        folders = model_folder(registry, name).glob("v*")
        versions = [int(p.name[1:]) for p in folders if p.name[1:].isdigit()]
        version = f"v{max(versions, default=0) + 1}"
        folder = model_folder(registry, name) / version
        folder.mkdir(parents=True)
    try:  # a version is its folder with a manifest: a failure leaves neither
        manifest = _write_version(folder, version, write, name, metrics, source, key, onnx_model,
                                  onnx_copy)
        mode = wandb_mode(wandb)
        if mode != "off":
            manifest["wandb"] = log_artifact(folder / MODEL_FILE, manifest, run_id, mode, alias)
        (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    with aliases_lock(registry, name):  # aliases.json is the only place an alias lives
        write_aliases(registry, name, read_aliases(registry, name) | {alias: version})
    return manifest


def _write_version(folder: Path, version: str, write, name: str, metrics: dict, source: dict,
                   key: str, onnx_model, onnx_copy: tuple[Path, dict] | None) -> dict:
    """The model file(s) in `folder` and the manifest that describes them (not yet written)."""
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
        "onnx": onnx_entry(onnx_model, folder) if onnx_model is not None else None,
        "wandb": None,
    }
    if onnx_copy is not None:
        src, entry = onnx_copy
        verified_copy(src, entry["sha256"], folder / ONNX_FILE)
        manifest["onnx"] = {**entry, "file": ONNX_FILE}
    return manifest


def onnx_entry(model, folder: Path) -> dict:
    """Export `model` (the eager LineRecognizer) to ONNX in `folder`, check it reads the example
    lines as the model does, and describe it for the manifest (file, sha256, size, exporter)."""
    from lab_code.training.export import check_onnx_parity, example_batch, export_onnx

    try:
        import onnxruntime
        import onnxscript  # noqa: F401 - the exporter needs it
    except ImportError as err:
        raise StagingError(f"Exporting to ONNX needs onnx, onnxscript and onnxruntime ({err}): "
                           'pip install -e ".[fast]".') from err
    path = export_onnx(model, folder / ONNX_FILE)
    parity = check_onnx_parity(model, path, example_batch()[0])
    if not parity.ok:
        raise StagingError(f"The ONNX export reads differently from the model (max |diff| "
                           f"{parity.max_abs_diff:.1e}, same text: {parity.same_text}): it is "
                           "not staged; report the torch and onnxruntime versions.")
    return {"file": ONNX_FILE, "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
            "exporter": parity.exporter,
            "onnxruntime_version": onnxruntime.__version__,
            "max_abs_logit_diff": round(parity.max_abs_diff, 8)}


def add_onnx(checkpoint: str | os.PathLike, folder: str | os.PathLike | None = None) -> dict:
    """Export the ONNX file of a model already staged or bundled (`folder`, default the
    package's artifacts) from `checkpoint`, which must be the one its manifest names (same
    sha256): the same weights, the same lineage. Records it in the manifest; returns that."""
    from lab_code.training.train import load_checkpoint

    checkpoint = Path(checkpoint)
    folder = Path(folder) if folder is not None else bundled_model_path().parent
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise StagingError(f"No {MANIFEST_FILE} in {folder}: stage the model first "
                           "(--checkpoint CKPT without --onnx-only).")
    if not checkpoint.is_file():
        raise StagingError(f"No checkpoint at {checkpoint}: pass the one the model was staged "
                           "from.")
    manifest = json.loads(manifest_path.read_text())
    expected = manifest.get("source_checkpoint", {}).get("sha256")
    if sha256_file(checkpoint) != expected:
        raise StagingError(f"{checkpoint} is not the checkpoint {folder / manifest['file']} was "
                           f"made from (its manifest names {expected and expected[:12]}...): "
                           "pass that one, or stage this checkpoint as a new version.")
    model, _ = load_checkpoint(checkpoint)
    manifest["onnx"] = onnx_entry(model, folder)
    manifest_path.write_text(json.dumps(manifest, indent=2))
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
    if manifest.get("onnx"):
        artifact.add_file(str(model_path.with_name(ONNX_FILE)), name=ONNX_FILE)
    run.log_artifact(artifact, aliases=[alias])
    info = {"mode": mode, "project": project, "run_id": run.id,
            "linked_to_training_run": bool(run_id)}
    run.finish()
    return info


def bundle(manifest: dict, registry: str | os.PathLike = DEFAULT_REGISTRY) -> Path:
    """Copy a staged model (its TorchScript and ONNX files) into the package (lab_code/artifacts)
    with its manifest, and, in a clone, the checkpoint it was staged from into models/ (lesson 01
    compiles that file: it must be this model's), each copy checked against its sha256."""
    folder = model_folder(registry, manifest["name"]) / manifest["version"]
    target = verified_copy(folder / manifest["file"], manifest["sha256"], bundled_model_path())
    onnx = manifest.get("onnx")
    if onnx:
        verified_copy(folder / onnx["file"], onnx["sha256"], target.parent / onnx["file"])
    else:  # a version staged before ONNX: no stale export may stay beside the new model
        (target.parent / ONNX_FILE).unlink(missing_ok=True)
    (target.parent / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    source = manifest.get("source_checkpoint") or {}
    if BUNDLED_CHECKPOINT.parent.is_dir() and Path(source.get("path", "")).is_file():
        verified_copy(source["path"], source["sha256"], BUNDLED_CHECKPOINT)
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.training stage_model",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--checkpoint", type=Path, help="checkpoint.pt to compile and stage")
    what.add_argument("--model", type=Path, default=None,
                      help="an already compiled TorchScript file to stage as it is")
    parser.add_argument("--with-onnx", action="store_true",
                        help="with --model: also stage the ONNX export its manifest names beside "
                             "it (the bundled model has one; what the services run)")
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME,
                        help="model name (default: %(default)s)")
    parser.add_argument("--alias", default="latest",
                        help="alias to point at the new version (default: latest)")
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY,
                        help="local registry folder (default: %(default)s)")
    parser.add_argument("--wandb", choices=["auto", "online", "offline", "off"], default="auto",
                        help="W&B logging: auto = online with WANDB_API_KEY, else offline")
    parser.add_argument("--bundle", action="store_true",
                        help="also copy the staged model into the package, and the checkpoint "
                        "it came from into models/ in a clone (maintainers)")
    parser.add_argument("--onnx-only", action="store_true",
                        help="stage nothing: export the ONNX file of the model bundled in the "
                             "package from --checkpoint (the one its manifest names) and record "
                             "it in the manifest (maintainers)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.checkpoint is None and args.model is None:
            parser.error("give --checkpoint CKPT (or --model FILE.pt) to stage a model (python -m "
                         "lab_code.registry fetches one)")
        if args.onnx_only:
            if args.checkpoint is None:
                parser.error("--onnx-only exports from the checkpoint: give --checkpoint CKPT")
            manifest = add_onnx(args.checkpoint)
            onnx = manifest["onnx"]
            print(f"exported {bundled_model_path().with_name(onnx['file'])} from "
                  f"{args.checkpoint} (sha256 {onnx['sha256'][:12]}..., "
                  f"{onnx['size_bytes'] / 1e6:.2f} MB), recorded in its manifest")
            return 0
        if args.with_onnx and args.model is None:
            parser.error("--with-onnx goes with --model FILE.pt (--checkpoint exports its own)")
        if args.model is not None:
            manifest = stage_file(args.model, args.name, args.alias, args.registry, args.wandb,
                                  with_onnx=args.with_onnx)
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
