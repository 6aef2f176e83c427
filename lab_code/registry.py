"""Fetch a staged model for serving: by name and alias (or an exact version and sha256), from
W&B when online, else from the local registry, and only after its sha256 matches its manifest.
The production side of the registry (lab_code.training.stage_model writes it); it never imports
the training code. A release moves aliases (`move_alias`): that is how a new version reaches
users, and how it is taken back.

    python -m lab_code.registry --name text-recognizer --alias latest --out model.pt
    python -m lab_code.registry --format onnx --out model.onnx   # its ONNX export, for onnxruntime
    python -m lab_code.registry --alias production --format onnx \
        --out build/release-model/text_recognizer.onnx   # what the Lambda image serves
    python -m lab_code.registry --version v2 --sha256 0937541a2900 --out model.pt
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
    SHA_PREFIX,
    RegistryError,
    aliases_lock,
    model_folder,
    read_aliases,
    sha256_file,
    verified_copy,
    wandb_mode,
    wandb_project,
    write_aliases,
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


def served_format(manifest: dict, fmt: str = "auto") -> str:
    """The format a service serves of a staged version: `fmt` when it names one; for "auto" the
    ONNX file when the version has one and onnxruntime imports (lab_code.recognizer.choose_runtime,
    the rule the bundled model follows too), else the TorchScript file."""
    from lab_code.recognizer import choose_runtime  # no torch: the recognizer imports it lazily

    return choose_runtime(fmt, has_onnx=bool(manifest.get("onnx")))


def resolve(name: str = DEFAULT_MODEL_NAME, alias: str | None = None, version: str | None = None,
            registry: str | os.PathLike = DEFAULT_REGISTRY,
            sha256: str | None = None, fmt: str = "auto") -> tuple[Path, dict]:
    """The staged file of name:alias (or name:version, e.g. "v3") in the local registry, where it
    lies, and its manifest; only after the file's sha256 matches the manifest, and `sha256` (the
    full digest or its first 12 or more hex digits) when given. `fmt`: the TorchScript file, its
    ONNX export, or "auto": what a service runs (served_format). RegistryError otherwise."""
    if (alias is None) == (version is None):
        raise RegistryError("Name either an alias (like production) or a version (like v3), "
                            "not both.")
    if version is None:
        aliases = read_aliases(registry, name)
        if alias not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise RegistryError(f"No model {name}:{alias} in the registry at {registry} (aliases: "
                                f"{known}); stage one with `python -m lab_code.training "
                                "stage_model --checkpoint CKPT`.")
        version = aliases[alias]
    folder = model_folder(registry, name) / version
    if not (folder / MANIFEST_FILE).is_file():
        raise RegistryError(f"No version {version} of {name} in the registry at {registry}.")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    entry = file_entry(manifest, served_format(manifest, fmt))
    path = folder / entry["file"]
    actual = sha256_file(path) if path.is_file() else "missing"
    if actual != entry["sha256"]:
        raise RegistryError(f"{path} has sha256 {actual[:SHA_PREFIX]}... but its manifest says "
                            f"{entry['sha256'][:SHA_PREFIX]}...: the file is damaged or was "
                            "changed; stage it again.")
    if sha256 is not None:
        wanted = sha256.strip().lower()
        if len(wanted) < SHA_PREFIX or not entry["sha256"].startswith(wanted):
            raise RegistryError(f"{name}:{version} {path.name} has sha256 "
                                f"{entry['sha256'][:SHA_PREFIX]}..., not {wanted[:SHA_PREFIX]}..."
                                f": check the version you asked for (at least {SHA_PREFIX} hex "
                                "digits of the sha256 of the file it serves).")
    return path, manifest


def move_alias(name: str, alias: str, version: str | None,
               registry: str | os.PathLike = DEFAULT_REGISTRY,
               expect: str | None = None) -> bool:
    """Point `alias` at `version` (None: remove the alias), in one atomic write under the lock.
    With `expect`, only if the alias names that version now (or is absent, for expect="") -
    several judges may decide at once and only the first move counts. True if it moved."""
    with aliases_lock(registry, name):
        aliases = read_aliases(registry, name)
        if expect is not None and aliases.get(alias, "") != expect:
            return False
        if version is not None:
            resolve(name, version=version, registry=registry)  # it exists and is intact
            aliases[alias] = version
        elif alias in aliases:
            del aliases[alias]
        else:
            return False
        write_aliases(registry, name, aliases)
    return True


def promote(name: str, candidate: str, production: str,
            registry: str | os.PathLike = DEFAULT_REGISTRY, expect: str | None = None) -> bool:
    """Point `production` at the version `candidate` names and remove `candidate`, in one write
    under the lock; with `expect`, only if `candidate` still names that version. True if it
    moved."""
    with aliases_lock(registry, name):
        aliases = read_aliases(registry, name)
        version = aliases.get(candidate)
        if version is None or (expect is not None and version != expect):
            return False
        resolve(name, version=version, registry=registry)
        aliases[production] = version
        del aliases[candidate]
        write_aliases(registry, name, aliases)
    return True


def fetch(name: str = DEFAULT_MODEL_NAME, alias: str | None = "latest",
          out: str | os.PathLike = MODEL_FILE, registry: str | os.PathLike = DEFAULT_REGISTRY,
          wandb: str = "auto", fmt: str = "torchscript", version: str | None = None,
          sha256: str | None = None) -> tuple[Path, str]:
    """Copy a staged model to `out` (`fmt`: its TorchScript file or its ONNX export), from W&B
    when online, else from the local registry; by alias, or by exact `version` (then `alias` is
    ignored) and, when given, `sha256` (of the file in `fmt`).

    Returns (path, where it came from). The file's sha256 must match its manifest; a copy named
    like the staged file gets its manifest.json beside it.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise RegistryError(f"The format must be one of {', '.join(FORMATS)}, not {fmt!r}.")
    if version is not None:
        alias = None
    if wandb_mode(wandb) == "online" and alias is not None and sha256 is None:
        return _fetch_wandb(name, alias, out, fmt), f"W&B project {wandb_project()}"
    path, manifest = resolve(name, alias, version, registry, sha256, fmt)
    entry = file_entry(manifest, fmt)
    verified_copy(path, entry["sha256"], out)
    if out.name == entry["file"]:  # the manifest travels with the file (an image records it)
        (out.parent / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return out, f"the local registry at {registry} ({name} {manifest['version']})"


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
    parser.add_argument("--version", default=None, metavar="VN",
                        help="fetch this exact version (e.g. v3) instead of an alias; local "
                             "registry only")
    parser.add_argument("--sha256", default=None, metavar="HEX",
                        help="refuse the model unless its sha256 starts with these hex digits "
                             "(at least 12); local registry only")
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
        path, source = fetch(args.name, args.alias, out, args.registry, args.wandb, args.fmt,
                             args.version, args.sha256)
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"fetched {args.name}:{args.version or args.alias} from {source} to {path} (sha256 "
          f"verified: model_version {sha256_file(path)[:SHA_PREFIX]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
