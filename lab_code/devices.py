"""Which torch device to run on: one resolver shared by training, profiling and benchmarks."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device that this machine does not have; the message says what to use instead."""


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when there is a GPU, else the CPU; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda needs a CUDA GPU and this machine has none: "
                          "use --device cpu (or auto).")
    return torch.device(name)
