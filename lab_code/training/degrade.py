"""Make a worse model on purpose, to rehearse a rollback: Gaussian noise on a compiled model's
weights (each tensor's noise scaled to that tensor's own spread), saved as a new TorchScript file
that reads like the original, only worse. Lesson 09 stages one as a candidate and watches the
canary's rule take it back.

    python -m lab_code.training degrade --noise 0.3 --out worse.pt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from lab_code.artifacts import bundled_model_path, load_torchscript, quiet_torchscript


def degrade(model: str | os.PathLike | None = None, out: str | os.PathLike = "worse.pt",
            noise: float = 0.3, seed: int = 0) -> Path:
    """Copy the TorchScript file `model` (default: the bundled one) to `out` with noise of
    `noise` times each weight tensor's standard deviation added to it; the same seed gives the
    same file."""
    if noise < 0:
        raise ValueError(f"The noise must be zero or more, not {noise}.")
    module = load_torchscript(model or bundled_model_path())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, weight in sorted(module.named_parameters()):
            if weight.numel() > 1:
                spread = weight.std()
                weight.add_(torch.randn(weight.shape, generator=generator) * noise * spread)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with quiet_torchscript():
        module.save(str(out))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.training degrade",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None,
                        help="TorchScript file to start from (default: the bundled model)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the worse model")
    parser.add_argument("--noise", type=float, default=0.3,
                        help="noise, in standard deviations of each weight tensor (default: 0.3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = degrade(args.model, args.out, args.noise, args.seed)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {args.noise:g} standard deviations of noise on every weight tensor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
