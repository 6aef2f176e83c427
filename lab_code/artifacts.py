"""The files both sides of the course agree on: the compiled model's file names (TorchScript and
ONNX) and where the package bundles them, how each is loaded, how a file's content is hashed and
checked, and the layout of the model registry (folders, aliases.json, manifest.json) with W&B's
settings.

Training writes these files (lab_code.training.stage_model) and serving reads them
(lab_code.registry); neither side owns this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only where a TorchScript file is loaded: ONNX needs none
    import onnxruntime
    import torch

MODEL_FILE = "text_recognizer.pt"
# The same weights exported to ONNX (logits only; lab_code.ctc decodes): what production runs
# with onnxruntime, numpy and Pillow, without torch. The manifest's "onnx" entry records it.
ONNX_FILE = "text_recognizer.onnx"
# What the ONNX file says of itself in its metadata (the TorchScript file keeps these as
# attributes): the characters of classes 1..n, as JSON, and the line height it reads.
ONNX_CHARSET_KEY, ONNX_HEIGHT_KEY = "charset", "height"
TORCHSCRIPT_DEPRECATION = r".*is deprecated\. Please (switch to|use) `?torch\.(compile|export)"


def bundled_model_path() -> Path:
    """The TorchScript model that ships inside the package."""
    return Path(str(resources.files("lab_code").joinpath("artifacts", MODEL_FILE)))


def bundled_onnx_path() -> Path:
    """The ONNX export of the same model, shipped beside it."""
    return bundled_model_path().with_name(ONNX_FILE)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


SHA_PREFIX = 12  # hex digits of a file's sha256 that name its version (what services report)


def model_version(path: str | os.PathLike) -> str:
    """A short, content-based id of a model file: the first SHA_PREFIX hex digits of its
    SHA-256."""
    return sha256_file(path)[:SHA_PREFIX]


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Hide only torch's 'TorchScript is deprecated' warning; every other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TORCHSCRIPT_DEPRECATION,
                                category=DeprecationWarning)
        yield


def load_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """Load a TorchScript file on the CPU, in eval mode; one clear error if it is not one."""
    import torch

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


def optimize_for_cpu(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The module frozen (weights and attributes become constants, batch norms fold into the
    convolutions) and rewritten for inference on the CPU (oneDNN layouts, fused ops): same text,
    about half the time on this course's model. The result cannot be saved and loaded again, so
    it is made at load time; `height` stays readable, and `logits` (per-step class scores, for
    lab_code.ctc's scored decoding) stays callable."""
    import torch

    with quiet_torchscript():
        kept = [name for name in ("height", "logits") if hasattr(module, name)]
        frozen = torch.jit.freeze(module.eval(), preserved_attrs=kept)
        methods = [name for name in ("logits",) if name in kept]
        return torch.jit.optimize_for_inference(frozen, other_methods=methods)


def load_onnx(path: str | os.PathLike, threads: int = 1) -> onnxruntime.InferenceSession:
    """An ONNX Runtime CPU session for an ONNX file; one clear error if onnxruntime is missing
    or the file is not a model.

    Its operators run on `threads` threads of the session's own pool (not OpenMP's, and not
    per calling thread as torch's count is: the session keeps it whichever thread calls it).
    Spinning is off: by default the pool's threads spin for a while after each call, waiting
    for the next one, which costs a shared or small machine the cores other work needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No ONNX model at {path}: run `make model`, or pass the path of "
                                "an .onnx file exported by lab_code.training.export.")
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ValueError("onnxruntime is not installed: pip install onnxruntime, or serve the "
                         "TorchScript file (.pt) instead.") from err
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # only used when a graph runs branches in parallel: never
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its notes on graph rewrites are not for users
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own kinds (InvalidProtobuf, Fail, ...)
        raise ValueError(f"{path} is not an ONNX model onnxruntime can load "
                         f"({type(err).__name__}).") from err


WANDB_PROJECT_ENV = "WANDB_PROJECT"
DEFAULT_WANDB_PROJECT = "text-recognizer"


def wandb_project() -> str:
    """The W&B project that training runs and staged models go to, read when it is needed
    ($WANDB_PROJECT, else text-recognizer), so both sides always agree."""
    return os.environ.get(WANDB_PROJECT_ENV) or DEFAULT_WANDB_PROJECT


def wandb_mode(requested: str = "auto") -> str:
    """'online', 'offline' or 'off'. auto: $WANDB_MODE if it says offline or disabled, else online
    with an API key and offline without one; 'off' where wandb is not installed."""
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


# --- the model registry: <registry>/<name>/aliases.json and <registry>/<name>/vN/ -------------
DEFAULT_REGISTRY = Path("model_registry")
DEFAULT_MODEL_NAME = "text-recognizer"
ALIASES_FILE = "aliases.json"  # {"latest": "v2"}: the one record of which version an alias names
MANIFEST_FILE = "manifest.json"  # one per version: file, sha256, metrics, lineage (never aliases,
#                                  which move when a later version is staged)


class RegistryError(RuntimeError):
    """A problem with a staged model (missing, unknown alias, damaged), in one sentence."""


def model_folder(registry: str | os.PathLike, name: str) -> Path:
    """The folder of every staged version of the model `name`."""
    return Path(registry) / name


def read_aliases(registry: str | os.PathLike, name: str) -> dict[str, str]:
    """Alias -> version folder name ("latest" -> "v2"); empty when nothing is staged yet."""
    path = model_folder(registry, name) / ALIASES_FILE
    return json.loads(path.read_text()) if path.exists() else {}


@contextlib.contextmanager
def aliases_lock(registry: str | os.PathLike, name: str) -> Iterator[None]:
    """Hold the model's lock file while aliases are read and rewritten, so two writers (a
    staging run, a release command, the judges of several worker processes) never lose each
    other's change. POSIX advisory lock; elsewhere, no lock."""
    folder = model_folder(registry, name)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".aliases.lock", "a+") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: one writer at a time is up to you
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_aliases(registry: str | os.PathLike, name: str, aliases: dict[str, str]) -> None:
    """Replace aliases.json in one step (write a temporary file, then rename it), so a reader
    never sees half a file. Hold aliases_lock around the read that preceded it."""
    path = model_folder(registry, name) / ALIASES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{ALIASES_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(sorted(aliases.items())), indent=2))
    os.replace(tmp, path)


def verified_copy(src: str | os.PathLike, expected_sha256: str, out: str | os.PathLike) -> Path:
    """Copy `src` to `out` only if its sha256 is the one its manifest records."""
    src, out = Path(src), Path(out)
    actual = sha256_file(src)
    if actual != expected_sha256:
        raise RegistryError(f"{src} has sha256 {actual[:12]}... but its manifest says "
                            f"{expected_sha256[:12]}...: the file is damaged or was changed; "
                            "stage it again.")
    if src.resolve() != out.resolve():
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
    return out
