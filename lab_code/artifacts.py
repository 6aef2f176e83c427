"""The files both sides of the course agree on: the compiled model's file name and where the
package bundles it, how a TorchScript file is loaded, and how a file's content is hashed.

Training writes these files and serving reads them; neither side owns this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import torch

MODEL_FILE = "text_recognizer.pt"
TORCHSCRIPT_DEPRECATION = r".*is deprecated\. Please switch to `?torch\.(compile|export)"


def bundled_model_path() -> Path:
    """The TorchScript model that ships inside the package."""
    return Path(str(resources.files("lab_code").joinpath("artifacts", MODEL_FILE)))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_version(path: str | os.PathLike) -> str:
    """A short, content-based id of a model file (the first 12 hex digits of its SHA-256)."""
    return sha256_file(path)[:12]


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Hide only torch's 'TorchScript is deprecated' warning; every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCHSCRIPT_DEPRECATION,
                                category=DeprecationWarning)
        yield


def load_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """Load a TorchScript file on the CPU, in eval mode; one clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No model file at {path}: run `make model` or pass the path of a .pt TorchScript file."
        )
    try:
        with quiet_torchscript():
            module = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as err:
        raise ValueError(f"{path} is not a TorchScript model saved by torch.jit.save.") from err
    return module.eval()


WANDB_PROJECT_ENV = "WANDB_PROJECT"
DEFAULT_WANDB_PROJECT = "text-recognizer"


def wandb_project() -> str:
    """The W&B project that training runs and staged models go to, read when it is needed
    ($WANDB_PROJECT, else text-recognizer), so both sides always agree."""
    return os.environ.get(WANDB_PROJECT_ENV) or DEFAULT_WANDB_PROJECT
