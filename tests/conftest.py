"""Test-wide isolation: nothing touches $HOME or the network, and notebooks are timed.

The environment is set when this file is imported, before any test (or nbval kernel, which
inherits it) starts, so W&B, ngrok, matplotlib, Jupyter and Gradio all write under a temp dir.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

from lab_code.serving import ports

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_LIMIT_S = 120.0  # every notebook must run within this on a 2-core CPU

_HOME = Path(tempfile.mkdtemp(prefix="course-tests-home-"))
for _key, _value in {
    "HOME": str(_HOME),
    "XDG_CONFIG_HOME": str(_HOME / ".config"),
    "XDG_CACHE_HOME": str(_HOME / ".cache"),
    "MPLCONFIGDIR": str(_HOME / ".matplotlib"),
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_DIR": str(_HOME / "wandb"),
    "WANDB_DATA_DIR": str(_HOME / "wandb-data"),
    "WANDB_CACHE_DIR": str(_HOME / "wandb-cache"),
    "WANDB_CONFIG_DIR": str(_HOME / "wandb-config"),
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "KINETO_LOG_LEVEL": "6",
    "AWS_EC2_METADATA_DISABLED": "true",  # botocore must not ask 169.254.169.254 for keys
}.items():
    os.environ[_key] = _value
for _key in ("WANDB_API_KEY", "NGROK_AUTHTOKEN", "HF_TOKEN", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "BACKEND_URL",
             "BACKEND_AUTH"):
    os.environ.pop(_key, None)
# nbval kernels start in the notebook's folder; make sure they import this checkout's package.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def pytest_unconfigure(config):
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return ports.free_port("127.0.0.1")


# --- per-notebook timing (nbval runs one test item per cell) --------------------------------
_notebook_seconds: dict[str, float] = defaultdict(float)
_notebook_started: dict[str, float] = {}


def _notebook_of(item) -> str | None:
    path = str(getattr(item, "path", item.fspath))
    return os.path.relpath(path, ROOT) if path.endswith(".ipynb") else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    name = _notebook_of(item)
    start = time.perf_counter()
    yield
    if name:
        _notebook_seconds[name] += time.perf_counter() - start


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _notebook_seconds:
        return
    terminalreporter.section(f"notebook run times (limit {NOTEBOOK_LIMIT_S:.0f} s each)")
    for name, seconds in sorted(_notebook_seconds.items()):
        flag = "  <-- over the limit" if seconds > NOTEBOOK_LIMIT_S else ""
        terminalreporter.write_line(f"{seconds:7.1f} s  {name}{flag}")
    report = ROOT / "build" / "notebook_times.txt"
    report.parent.mkdir(exist_ok=True)
    report.write_text("".join(f"{s:.1f}\t{n}\n" for n, s in sorted(_notebook_seconds.items())))


def pytest_sessionfinish(session, exitstatus):
    slow = [n for n, s in _notebook_seconds.items() if s > NOTEBOOK_LIMIT_S]
    if slow and session.exitstatus == 0:
        session.exitstatus = 1
        print(f"\nnotebooks over {NOTEBOOK_LIMIT_S:.0f} s: {', '.join(sorted(slow))}")
