"""Stage a trained model: compile a checkpoint to TorchScript, store it in a local model registry
with a manifest (sha256, metrics, source, time, code version), and log it to W&B as an artifact
of its training run when W&B is available. `--fetch` gets a staged model back, verified.

    python -m lab_code.stage_model --checkpoint runs/recognizer/checkpoint.pt
    python -m lab_code.stage_model --fetch --name text-recognizer --alias latest --out model.pt
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
from lab_code.artifacts import MODEL_FILE, bundled_model_path, sha256_file

DEFAULT_NAME = "text-recognizer"
DEFAULT_REGISTRY = Path("model_registry")
WANDB_PROJECT = os.environ.get("WANDB_PROJECT", "text-recognizer")


class StagingError(RuntimeError):
    """A staging or fetching problem, described in one sentence."""


def code_version() -> str:
    """Package version, plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{lab_code.__version__}+{commit}" if commit else lab_code.__version__


def wandb_mode(requested: str = "auto") -> str:
    """'online', 'offline' or 'off'. auto: online with an API key, offline without one."""
    if requested != "auto":
        return requested
    try:
        import wandb  # noqa: F401
    except ImportError:
        return "off"
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("offline", "dryrun"):
        return "offline"
    if env == "disabled":
        return "off"
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def _registry_dir(registry: Path, name: str) -> Path:
    return Path(registry) / name


def _aliases(registry: Path, name: str) -> dict[str, str]:
    path = _registry_dir(registry, name) / "aliases.json"
    return json.loads(path.read_text()) if path.exists() else {}


def stage(checkpoint: str | os.PathLike, name: str = DEFAULT_NAME, alias: str = "latest",
          registry: str | os.PathLike = DEFAULT_REGISTRY, wandb: str = "auto") -> dict:
    """Compile `checkpoint`, add it to the registry as the next version, point `alias` at it."""
    from lab_code.export import save_torchscript  # training side: only staging needs it
    from lab_code.train import load_checkpoint

    checkpoint, registry = Path(checkpoint), Path(registry)
    if not checkpoint.is_file():
        raise StagingError(f"No checkpoint at {checkpoint}: train one with "
                           "`python -m lab_code.train` first.")
    model, ckpt = load_checkpoint(checkpoint)
    folders = _registry_dir(registry, name).glob("v*")
    versions = [int(p.name[1:]) for p in folders if p.name[1:].isdigit()]
    version = f"v{max(versions, default=0) + 1}"
    folder = _registry_dir(registry, name) / version
    model_path = save_torchscript(model, folder / MODEL_FILE)
    manifest = {
        "name": name,
        "version": version,
        "aliases": [alias],
        "file": MODEL_FILE,
        "sha256": sha256_file(model_path),
        "size_bytes": model_path.stat().st_size,
        "metrics": ckpt.get("metrics", {}),
        "source_checkpoint": {"path": str(checkpoint), "sha256": sha256_file(checkpoint)},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "torch_version": torch.__version__,
        "wandb": None,
    }
    mode = wandb_mode(wandb)
    if mode != "off":
        run_id = ckpt.get("wandb_run_id")
        manifest["wandb"] = log_artifact(model_path, manifest, run_id, mode, alias)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    aliases = _aliases(registry, name) | {alias: version}
    (_registry_dir(registry, name) / "aliases.json").write_text(json.dumps(aliases, indent=2))
    return manifest


def log_artifact(model_path: Path, manifest: dict, run_id: str | None, mode: str,
                 alias: str) -> dict:
    """Log the model as a W&B artifact, as an output of its training run when we know it."""
    import wandb

    kwargs = {"id": run_id, "resume": "allow"} if run_id else {"job_type": "stage"}
    run = wandb.init(project=WANDB_PROJECT, mode=mode, **kwargs)
    artifact = wandb.Artifact(manifest["name"], type="model",
                              metadata={k: v for k, v in manifest.items() if k != "wandb"})
    artifact.add_file(str(model_path), name=MODEL_FILE)
    run.log_artifact(artifact, aliases=[alias])
    info = {"mode": mode, "project": WANDB_PROJECT, "run_id": run.id,
            "linked_to_training_run": bool(run_id)}
    run.finish()
    return info


def fetch(name: str = DEFAULT_NAME, alias: str = "latest", out: str | os.PathLike = MODEL_FILE,
          registry: str | os.PathLike = DEFAULT_REGISTRY, wandb: str = "auto") -> tuple[Path, str]:
    """Copy a staged model to `out`, from W&B when online, else from the local registry.

    Returns (path, where it came from). The file's sha256 must match its manifest.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if wandb_mode(wandb) == "online":
        return _fetch_wandb(name, alias, out), f"W&B project {WANDB_PROJECT}"
    aliases = _aliases(Path(registry), name)
    if alias not in aliases:
        known = ", ".join(sorted(aliases)) or "none"
        raise StagingError(f"No model {name}:{alias} in the registry at {registry} (aliases: "
                           f"{known}); stage one with `python -m lab_code.stage_model "
                           "--checkpoint CKPT`.")
    folder = _registry_dir(Path(registry), name) / aliases[alias]
    manifest = json.loads((folder / "manifest.json").read_text())
    _verified_copy(folder / manifest["file"], manifest["sha256"], out)
    return out, f"the local registry at {registry} ({name} {aliases[alias]})"


def _verified_copy(src: Path, expected: str, out: Path) -> None:
    actual = sha256_file(src)
    if actual != expected:
        raise StagingError(f"{src} has sha256 {actual[:12]}... but its manifest says "
                           f"{expected[:12]}...: the file is damaged or was changed; "
                           "stage it again.")
    if src.resolve() != out.resolve():
        shutil.copyfile(src, out)


def _fetch_wandb(name: str, alias: str, out: Path) -> Path:
    import wandb

    try:
        artifact = wandb.Api().artifact(f"{WANDB_PROJECT}/{name}:{alias}", type="model")
        folder = Path(artifact.download())
    except Exception as err:  # noqa: BLE001 - wandb raises many kinds; the message says what to do
        raise StagingError(f"Could not fetch {name}:{alias} from W&B ({type(err).__name__}): "
                           "check your network and WANDB_API_KEY, or use --wandb off to "
                           "fetch from the local registry.") from err
    _verified_copy(folder / MODEL_FILE, artifact.metadata["sha256"], out)
    return out


def bundle(manifest: dict, registry: str | os.PathLike = DEFAULT_REGISTRY) -> Path:
    """Copy a staged model into the package (lab_code/artifacts) with its manifest."""
    folder = _registry_dir(Path(registry), manifest["name"]) / manifest["version"]
    target = bundled_model_path()
    _verified_copy(folder / manifest["file"], manifest["sha256"], target)
    (target.parent / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.stage_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="checkpoint.pt to compile and stage")
    parser.add_argument("--fetch", action="store_true", help="fetch a staged model instead")
    parser.add_argument("--name", default=DEFAULT_NAME, help="model name (default: %(default)s)")
    parser.add_argument("--alias", default="latest", help="alias to set or fetch (default: latest)")
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY,
                        help="local registry folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(MODEL_FILE),
                        help="where --fetch writes the model (default: %(default)s)")
    parser.add_argument("--wandb", choices=["auto", "online", "offline", "off"], default="auto",
                        help="W&B logging: auto = online with WANDB_API_KEY, else offline")
    parser.add_argument("--bundle", action="store_true",
                        help="also copy the staged model into the package (maintainers)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.fetch:
            path, source = fetch(args.name, args.alias, args.out, args.registry, args.wandb)
            print(f"fetched {args.name}:{args.alias} from {source} to {path} (sha256 verified)")
            return 0
        if args.checkpoint is None:
            parser.error("give --checkpoint CKPT to stage a model, or --fetch to get one")
        manifest = stage(args.checkpoint, args.name, args.alias, args.registry, args.wandb)
    except StagingError as err:
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
