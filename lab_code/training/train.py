"""Train the line recognizer on synthetic lines with CTC loss; report CER on the held-out set.

    python -m lab_code.training train --steps 6000 --out runs/recognizer

writes `checkpoint.pt` (weights + config) and `metrics.json` into `--out`. CPU by default,
CUDA when present (`--device auto`). With `--wandb offline|online` the run is also logged to W&B.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

import lab_code
from lab_code import artifacts, preprocess
from lab_code.devices import DeviceError, resolve_device
from lab_code.training import data
from lab_code.training.model import LineRecognizer, count_parameters


@dataclass
class TrainConfig:
    steps: int = 6000
    batch_size: int = 24
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 1
    eval_every: int = 1000
    eval_size: int = data.TEST_SIZE
    channels: tuple[int, ...] = (16, 32, 64, 64, 96)
    hidden: int = 128
    workers: int = 1
    device: str = "auto"
    charset: str = data.CHARSET


def pick_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; asking for CUDA without one raises DeviceError."""
    return resolve_device(name)


class _Batches(torch.utils.data.IterableDataset):
    """Rendered batches from a worker process, so drawing text overlaps with training."""

    def __init__(self, seed: int, batch_size: int) -> None:
        self.seed, self.batch_size = seed, batch_size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        seed = self.seed + 1000 * (info.id if info else 0)
        for arrays, texts in data.training_batches(seed, self.batch_size):
            yield preprocess.batch(arrays), texts


def encode(texts: list[str], charset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts to concatenated CTC targets (class = charset index + 1) and their lengths."""
    index = {c: i + 1 for i, c in enumerate(charset)}
    targets = torch.tensor([index[c] for t in texts for c in t], dtype=torch.long)
    lengths = torch.tensor([len(t) for t in texts], dtype=torch.long)
    return targets, lengths


@torch.no_grad()
def evaluate(model: LineRecognizer, device: torch.device, size: int = data.TEST_SIZE,
             batch_size: int = 64) -> dict[str, float]:
    """CER and exact-line accuracy on the augmented held-out set, and CER on the plain one
    (data.held_out_cer); the best checkpoint is chosen on the augmented set."""
    model.eval()
    read = lambda arrays: model(preprocess.batch(arrays).to(device))  # noqa: E731
    try:
        result = data.held_out_cer(read, size=size, batch_size=batch_size)
        plain = data.held_out_cer(read, size=size, batch_size=batch_size, which="plain")
        return {**result, "plain_cer": plain["cer"]}
    finally:
        model.train()


def build_model(config: TrainConfig) -> LineRecognizer:
    return LineRecognizer(config.charset, tuple(config.channels), config.hidden)


def save_checkpoint(path: Path, model: LineRecognizer, config: TrainConfig,
                    result: dict) -> None:
    torch.save({
        "state_dict": model.state_dict(),
        "config": asdict(config),
        "metrics": result,
        "code_version": lab_code.__version__,
    }, path)


def load_checkpoint(path: str | os.PathLike) -> tuple[LineRecognizer, dict]:
    """Rebuild the eager model from a checkpoint; returns (model in eval mode, checkpoint dict)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    known = TrainConfig.__annotations__
    config = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in known})
    model = build_model(config)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt


def _start_wandb(mode: str, config: TrainConfig, out: Path):
    if mode == "off":
        return None
    try:
        import wandb
    except ImportError:
        print("W&B is not installed (pip install wandb): training without it.")
        return None
    os.environ.setdefault("WANDB_DIR", str(out))
    return wandb.init(project=artifacts.wandb_project(),
                      job_type="train", mode=mode, config=asdict(config))


def train(config: TrainConfig, out: Path, wandb_mode: str = "off") -> dict:
    """Train, evaluate every `eval_every` steps, keep the best checkpoint; returns final metrics."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    device = pick_device(config.device)
    model = build_model(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                   total_steps=config.steps, pct_start=0.1)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    loader = torch.utils.data.DataLoader(_Batches(config.seed, config.batch_size),
                                         batch_size=None, num_workers=config.workers)
    run = _start_wandb(wandb_mode, config, out)
    history: list[dict] = []
    best = {"cer": float("inf")}
    started = time.perf_counter()
    bar = tqdm(zip(range(1, config.steps + 1), loader, strict=False), total=config.steps,
               desc=f"training on {device.type}", unit="step")
    for step, (batch, texts) in bar:
        targets, target_lengths = encode(texts, config.charset)
        log_probs = model.logits(batch.to(device)).log_softmax(-1).transpose(0, 1)  # (T, B, C)
        input_lengths = torch.full((len(texts),), log_probs.size(0), dtype=torch.long)
        loss = ctc(log_probs, targets, input_lengths, target_lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % config.eval_every == 0 or step == config.steps:
            result = evaluate(model, device, config.eval_size)
            result.update(step=step, loss=float(loss.item()),
                          minutes=(time.perf_counter() - started) / 60)
            history.append(result)
            bar.write(f"step {step}: held-out CER {result['cer']:.4f} (plain set "
                      f"{result['plain_cer']:.4f}), line accuracy {result['line_accuracy']:.3f}")
            if run is not None:
                run.log(result, step=step)
            if result["cer"] <= best["cer"]:
                best = result
                save_checkpoint(out / "checkpoint.pt", model.cpu(), config, best)
                model.to(device)
    summary = {
        "best": best,
        "history": history,
        "parameters": count_parameters(model),
        "device": device.type,
        "threads": torch.get_num_threads(),
        "wall_minutes": (time.perf_counter() - started) / 60,
        "wandb_run_id": run.id if run is not None else None,
    }
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    ckpt["wandb_run_id"] = summary["wandb_run_id"]
    torch.save(ckpt, out / "checkpoint.pt")
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    if run is not None:
        run.summary.update({"best_cer": best["cer"]})
        run.finish()
    return summary


_CLI_FIELDS = {  # TrainConfig fields set from the command line, with their help
    "steps": "optimizer steps",
    "batch_size": "lines per step",
    "lr": "peak learning rate",
    "weight_decay": "AdamW weight decay",
    "seed": "random seed of the training lines (never data.TEST_SEED)",
    "eval_every": "steps between held-out evaluations",
    "eval_size": "held-out lines used per evaluation",
    "hidden": "LSTM hidden size",
    "workers": "processes rendering training lines (0 = in the training process)",
    "device": "auto, cpu or cuda",
}


def default_threads(workers: int) -> int:
    """Torch threads that leave one core to each rendering worker: torch's threads spin while
    they wait for each other, so sharing a core with the renderer slows every step."""
    return max(1, (os.cpu_count() or 1) - workers)


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m lab_code.training train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/recognizer"),
                        help="folder for checkpoint.pt and metrics.json (default: %(default)s)")
    for f in fields(TrainConfig):
        if f.name not in _CLI_FIELDS:
            continue
        default = getattr(defaults, f.name)
        kwargs: dict = {"default": default, "help": f"{_CLI_FIELDS[f.name]} (default: %(default)s)"}
        if f.name == "device":
            kwargs["choices"] = ["auto", "cpu", "cuda"]
        else:
            kwargs["type"] = type(default)
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the cores left after the rendering "
                             "workers, at least 1: rendering and training then never compete)")
    parser.add_argument("--wandb", choices=["off", "offline", "online"], default="off",
                        help="log the run to Weights & Biases (default: off)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads or default_threads(args.workers))
    config = TrainConfig(**{name: getattr(args, name) for name in _CLI_FIELDS})
    try:
        summary = train(config, args.out, args.wandb)
    except DeviceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    best = summary["best"]
    print(f"best held-out CER {best['cer']:.4f} at step {best['step']} "
          f"({summary['wall_minutes']:.1f} min on {summary['device']}); "
          f"checkpoint: {args.out / 'checkpoint.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
