"""Which model file a service serves, checked before it loads, and the version it then reports: a
registry alias or an exact version (with its sha256), a file ($MODEL_PATH), or the bundled model.

A file with a manifest.json beside it that names it, as its TorchScript `file` or its ONNX export
`onnx.file` (the bundled model, a registry version, what `python -m lab_code.registry --format
onnx --out DIR/text_recognizer.onnx` writes, the Lambda image's model), must match the sha256 the
manifest gives that file, and $EXPECTED_MODEL_VERSION, when set, must be its first 12 hex digits:
a service never answers with a model other than the one its release names. The version a service
reports is always the served file's (lab_code.artifacts.model_version).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab_code import registry
from lab_code.artifacts import (
    DEFAULT_MODEL_NAME,
    DEFAULT_REGISTRY,
    MANIFEST_FILE,
    SHA_PREFIX,
    RegistryError,
    sha256_file,
)
from lab_code.recognizer import model_file

MODEL_PATH_ENV = "MODEL_PATH"  # a model file (.onnx or .pt) to serve (serverless reads it too)
EXPECTED_ENV = "EXPECTED_MODEL_VERSION"  # the version the release names (deploy/template.yaml)


@dataclass(frozen=True)
class ServedModel:
    """A model file that passed its checks: where it is, its sha256, and, when a manifest or the
    registry says so, its name and registry version ("v3")."""

    path: Path
    sha256: str
    name: str | None = None
    release: str | None = None  # the registry's version folder, e.g. "v3"
    alias: str | None = None  # the alias it was resolved through, if any

    @property
    def version(self) -> str:
        """What every answer reports as model_version: the first 12 hex digits of the sha256."""
        return self.sha256[:SHA_PREFIX]

    def describe(self) -> dict[str, Any]:
        """For /health and logs: the version, and the registry's names for it when known."""
        out: dict[str, Any] = {"version": self.version, "sha256": self.sha256}
        if self.name:
            out["name"] = self.name
        if self.release:
            out["release"] = self.release
        if self.alias:
            out["alias"] = self.alias
        return out


def check_expected(served: ServedModel, expected: str | None) -> ServedModel:
    """`served` unchanged when `expected` is empty or a prefix (12+ hex digits) of its sha256;
    RegistryError with one sentence otherwise."""
    if not expected:
        return served
    wanted = expected.strip().lower()
    if len(wanted) < SHA_PREFIX or not served.sha256.startswith(wanted):
        raise RegistryError(f"{served.path} is model version {served.version}, but "
                            f"{EXPECTED_ENV} says {wanted[:SHA_PREFIX]}: deploy the image "
                            "built from that version, or fix the parameter.")
    return served


def from_file(path: str | os.PathLike, expected: str | None = None) -> ServedModel:
    """A model file, checked against the manifest.json beside it when that names it (as its
    TorchScript file or its ONNX export), and against `expected` (hex prefix of its sha256) when
    given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}: run `make model`, fetch one with "
                                "`python -m lab_code.registry`, or set MODEL_PATH to a .onnx or "
                                ".pt file.")
    digest = sha256_file(path)
    manifest_path = path.parent / MANIFEST_FILE
    name = release = None
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = {}
        entry = _entry_naming(manifest, path.name) if isinstance(manifest, dict) else None
        if entry is not None:
            if entry.get("sha256") != digest:
                raise RegistryError(f"{path} has sha256 {digest[:SHA_PREFIX]}... but the manifest "
                                    f"beside it says {str(entry.get('sha256'))[:SHA_PREFIX]}...: "
                                    "the file was changed or damaged; fetch it again.")
            name, release = manifest.get("name"), manifest.get("version")
    return check_expected(ServedModel(path, digest, name, release), expected)


def _entry_naming(manifest: dict, file_name: str) -> dict | None:
    """The manifest's {"file", "sha256"} for `file_name`, in whichever format names it."""
    for fmt in registry.FORMATS:
        try:
            entry = registry.file_entry(manifest, fmt)
        except (RegistryError, KeyError, TypeError):
            continue
        if isinstance(entry, dict) and entry.get("file") == file_name:
            return entry
    return None


def from_registry(name: str = DEFAULT_MODEL_NAME, alias: str | None = None,
                  version: str | None = None, registry_dir: str | os.PathLike = DEFAULT_REGISTRY,
                  sha256: str | None = None, expected: str | None = None,
                  runtime: str = "auto") -> ServedModel:
    """name:alias or name:version from the local registry, in place (no copy), verified: the file
    a service runs in `runtime` (auto: the ONNX export when the version has one and onnxruntime
    imports; registry.served_format)."""
    path, manifest = registry.resolve(name, alias, version, registry_dir, sha256, runtime)
    digest = _entry_naming(manifest, path.name)["sha256"]  # resolve checked the file against it
    served = ServedModel(path, digest, manifest.get("name", name), manifest.get("version"), alias)
    return check_expected(served, expected)


def from_environment(model_path: str | os.PathLike | None = None,
                     runtime: str = "auto") -> ServedModel:
    """`model_path`, else $MODEL_PATH, else the bundled model in `runtime` (lab_code.recognizer.
    model_file: its ONNX file when onnxruntime imports); held to $EXPECTED_MODEL_VERSION."""
    path = model_file(model_path or os.environ.get(MODEL_PATH_ENV) or None, runtime)
    return from_file(path, os.environ.get(EXPECTED_ENV) or None)
