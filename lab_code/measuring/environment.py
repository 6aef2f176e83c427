"""Check the machine a learner runs the course on: Python, torch, CPU threads, GPU, the course's
libraries, and whether the internet and an ngrok token are available.

    python -m lab_code.measuring environment
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys

import torch

from lab_code.serving.ports import reachable

# What the lessons import: the setup cell (Colab) and `make setup` both install these.
LIBRARIES = ("torch", "gradio", "gradio_client", "fastapi", "mangum", "pyngrok", "wandb",
             "tensorboard", "torch-tb-profiler", "dockerfile-parse", "ipywidgets")
# What only running the course's own tests needs (`make setup` installs them, Colab does not).
TEST_TOOLS = ("pytest", "nbval")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def online(host: str = "pypi.org", port: int = 443, timeout: float = 1.5) -> bool:
    """True if a TCP connection to `host` opens within `timeout` seconds."""
    return reachable(host, port, timeout)


def report(check_network: bool = True) -> dict:
    """What this machine offers the course, as a dict."""
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "colab": "google.colab" in sys.modules,
        "cpu_threads": torch.get_num_threads(),
        "cuda": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "libraries": {name: _version(name) for name in LIBRARIES},
        "test_tools": {name: _version(name) for name in TEST_TOOLS},
        "internet": online() if check_network else None,
        "ngrok_token": bool(os.environ.get("NGROK_AUTHTOKEN")),
    }


def _test_tools(tools: dict, colab: bool) -> str:
    present = [f"{name} {version}" for name, version in tools.items() if version]
    absent = [name for name, version in tools.items() if version is None]
    if absent:
        how = f"`pip install {' '.join(absent)}`" if colab else "run `make setup`"
        present.append(f"no {', '.join(absent)} (needed only to run the course's tests: {how})")
    return ", ".join(present)


def summary(info: dict) -> str:
    """The report as short lines a person can read."""
    device = f"CUDA GPU: {info['gpu']}" if info["cuda"] else "no GPU: everything runs on the CPU"
    lines = [
        f"Python {info['python']} on {info['platform']}{' (Colab)' if info['colab'] else ''}",
        f"torch {info['libraries']['torch']}, {info['cpu_threads']} CPU threads, {device}",
    ]
    fix = "re-run the setup cell at the top" if info["colab"] else "run `make setup`"
    missing = [n for n, v in info["libraries"].items() if v is None]
    lines.append("course libraries: " + ("all installed" if not missing else
                                         "missing " + ", ".join(missing) + f" ({fix})"))
    lines.append("test tools: " + _test_tools(info.get("test_tools", {}), info["colab"]))
    if info["internet"] is not None:
        lines.append("internet: " + ("yes" if info["internet"] else
                                     "no (lessons that need it will say so and skip)"))
    lines.append("NGROK_AUTHTOKEN: " + ("set" if info["ngrok_token"] else
                                        "not set (only lesson 05 needs it)"))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring environment",
                                     description="Print what this machine offers the course.")
    parser.add_argument("--offline", action="store_true", help="skip the internet check")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(summary(report(check_network=not args.offline)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
