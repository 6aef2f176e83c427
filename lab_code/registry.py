"""Fetch a staged model for serving: by name and alias, from W&B when online, else from the local
registry, and only after its sha256 matches its manifest. The production side of the registry
(lab_code.training.stage_model writes it); it never imports the training code.

    python -m lab_code.registry --name text-recognizer --alias latest --out model.pt
    python -m lab_code.registry --format onnx --out model.onnx   # its ONNX export, for onnxruntime
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lab_code.artifacts import (
    DEFAULT_MODEL_NAME,
    DEFAULT_REGISTRY,
    MANIFEST_FILE,
    MODEL_FILE,
    ONNX_FILE,
    RegistryError,
    model_folder,
    read_aliases,
    verified_copy,
    wandb_mode,
    wandb_project,
)

FORMATS = ("torchscript", "onnx")


def file_entry(manifest: dict, fmt: str = "torchscript") -> dict:
    """{"file", "sha256"} of a staged version's file in `fmt`: the TorchScript file, or its ONNX
    export (RegistryError when the version was staged without one)."""
    if fmt == "onnx":
        if not manifest.get("onnx"):
            raise RegistryError(f"{manifest.get('name')} {manifest.get('version')} was staged "
                                "without an ONNX file: stage it again, or fetch --format "
                                "torchscript.")
        return manifest["onnx"]
    return {"file": manifest["file"], "sha256": manifest["sha256"]}


def fetch(name: str = DEFAULT_MODEL_NAME, alias: str = "latest",
          out: str | os.PathLike = MODEL_FILE, registry: str | os.PathLike = DEFAULT_REGISTRY,
          wandb: str = "auto", fmt: str = "torchscript") -> tuple[Path, str]:
    """Copy a staged model to `out` (`fmt`: its TorchScript file or its ONNX export), from W&B
    when online, else from the local registry.

    Returns (path, where it came from). The file's sha256 must match its manifest.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise RegistryError(f"The format must be one of {', '.join(FORMATS)}, not {fmt!r}.")
    if wandb_mode(wandb) == "online":
        return _fetch_wandb(name, alias, out, fmt), f"W&B project {wandb_project()}"
    aliases = read_aliases(registry, name)
    if alias not in aliases:
        known = ", ".join(sorted(aliases)) or "none"
        raise RegistryError(f"No model {name}:{alias} in the registry at {registry} (aliases: "
                            f"{known}); stage one with `python -m lab_code.training stage_model "
                            "--checkpoint CKPT`.")
    folder = model_folder(registry, name) / aliases[alias]
    entry = file_entry(json.loads((folder / MANIFEST_FILE).read_text()), fmt)
    verified_copy(folder / entry["file"], entry["sha256"], out)
    return out, f"the local registry at {registry} ({name} {aliases[alias]})"


def _fetch_wandb(name: str, alias: str, out: Path, fmt: str = "torchscript") -> Path:
    import wandb

    try:
        artifact = wandb.Api().artifact(f"{wandb_project()}/{name}:{alias}", type="model")
        folder = Path(artifact.download())
    except Exception as err:  # wandb raises many kinds; the message says what to do
        raise RegistryError(f"Could not fetch {name}:{alias} from W&B ({type(err).__name__}): "
                            "check your network and WANDB_API_KEY, or use --wandb off to "
                            "fetch from the local registry.") from err
    entry = file_entry({**artifact.metadata, "file": MODEL_FILE}, fmt)
    return verified_copy(folder / entry["file"], entry["sha256"], out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.registry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME,
                        help="model name (default: %(default)s)")
    parser.add_argument("--alias", default="latest", help="alias to fetch (default: latest)")
    parser.add_argument("--registry", type=Path, default=DEFAULT_REGISTRY,
                        help="local registry folder (default: %(default)s)")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="torchscript",
                        help="the TorchScript file (lessons 01-06) or its ONNX export (what the "
                             "services run with onnxruntime) (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where to write the model (default: {MODEL_FILE}, or {ONNX_FILE} "
                             "with --format onnx)")
    parser.add_argument("--wandb", choices=["auto", "online", "offline", "off"], default="auto",
                        help="auto = from W&B with WANDB_API_KEY, else from the local registry")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or Path(ONNX_FILE if args.fmt == "onnx" else MODEL_FILE)
    try:
        path, source = fetch(args.name, args.alias, out, args.registry, args.wandb, args.fmt)
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"fetched {args.name}:{args.alias} from {source} to {path} (sha256 verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
