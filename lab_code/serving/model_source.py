"""Which model file a service serves, checked before it loads, and the version it then reports: a
registry alias or an exact version (with its sha256), a file ($MODEL_PATH), or the bundled model.

A file with a manifest.json beside it that names it (the bundled model, a registry version, what
`python -m lab_code.registry --out DIR/text_recognizer.pt` writes, the Lambda image's model) must
match the manifest's sha256, and $EXPECTED_MODEL_VERSION, when set, must be its first 12 hex
digits: a service never answers with a model other than the one its release names.
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
    RegistryError,
    bundled_model_path,
    sha256_file,
)

MODEL_PATH_ENV = "MODEL_PATH"  # a TorchScript file to serve (lab_code.serving.serverless reads it)
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
        return self.sha256[: registry.SHA_PREFIX]

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
    if len(wanted) < registry.SHA_PREFIX or not served.sha256.startswith(wanted):
        raise RegistryError(f"{served.path} is model version {served.version}, but "
                            f"{EXPECTED_ENV} says {wanted[:registry.SHA_PREFIX]}: deploy the image "
                            "built from that version, or fix the parameter.")
    return served


def from_file(path: str | os.PathLike, expected: str | None = None) -> ServedModel:
    """A model file, checked against the manifest.json beside it when that names it, and against
    `expected` (hex prefix of its sha256) when given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}: run `make model`, fetch one with "
                                "`python -m lab_code.registry`, or set MODEL_PATH to a .pt file.")
    digest = sha256_file(path)
    manifest_path = path.parent / MANIFEST_FILE
    name = release = None
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = {}
        if isinstance(manifest, dict) and manifest.get("file") == path.name:
            if manifest.get("sha256") != digest:
                raise RegistryError(f"{path} has sha256 {digest[:registry.SHA_PREFIX]}... but "
                                    f"the manifest beside it says "
                                    f"{str(manifest.get('sha256'))[:registry.SHA_PREFIX]}...: the "
                                    "file was changed or damaged; fetch it again.")
            name, release = manifest.get("name"), manifest.get("version")
    return check_expected(ServedModel(path, digest, name, release), expected)


def from_registry(name: str = DEFAULT_MODEL_NAME, alias: str | None = None,
                  version: str | None = None, registry_dir: str | os.PathLike = DEFAULT_REGISTRY,
                  sha256: str | None = None, expected: str | None = None) -> ServedModel:
    """name:alias or name:version from the local registry, in place (no copy), verified."""
    path, manifest = registry.resolve(name, alias, version, registry_dir, sha256)
    served = ServedModel(path, manifest["sha256"], manifest.get("name", name),
                         manifest.get("version"), alias)
    return check_expected(served, expected)


def from_environment(model_path: str | os.PathLike | None = None) -> ServedModel:
    """`model_path`, else $MODEL_PATH, else the bundled model; held to $EXPECTED_MODEL_VERSION."""
    path = model_path or os.environ.get(MODEL_PATH_ENV) or bundled_model_path()
    return from_file(path, os.environ.get(EXPECTED_ENV) or None)
