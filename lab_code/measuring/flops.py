"""How much of the CPU a model uses: the arithmetic one line costs (counted by formula, checked
against torch's FLOP counter) and the FP32 peak this CPU reaches on the model's own kind of
convolution, so a timing can be read as a share of what the hardware can do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lab_code.measuring.profiling import time_batch
from lab_code.training.model import LineRecognizer

# (batch, channels in = out, height, width) of the 3x3 convolutions that measure the peak
PEAK_SHAPES = ((16, 64, 32, 512), (16, 128, 32, 256), (16, 256, 16, 128))


FLOP_FORMULA = (
    "2 FLOPs per multiply-add. conv: 2*Cout*Cin*kh*kw*Hout*Wout each (bias-free; batch norm "
    "folds away); collapse conv: 2*C*C*2*1*T (+bias ignored); LSTM: 2 directions * T steps * "
    "2*4H*(I+H) (gate matmuls; biases and gate nonlinearities ignored); Linear: 2*2H*classes*T. "
    "T = W/4 steps; ReLU, max-pool and softmax-free decoding not counted."
)


def flops_per_line(model: LineRecognizer, width: int) -> dict[str, int]:
    """Multiply-add FLOPs of one line `width` columns wide, layer by layer, from the shapes."""
    h, w = model.height, width
    out: dict[str, int] = {}
    for i, block in enumerate(model.features):
        conv = block[0]
        cout, cin, kh, kw = conv.weight.shape
        out[f"conv{i + 1}"] = 2 * cout * cin * kh * kw * h * w
        pool = block[3] if len(block) > 3 else None
        if pool is not None:
            ph, pw = (pool.kernel_size, pool.kernel_size) if isinstance(pool.kernel_size, int) \
                else pool.kernel_size
            h, w = h // ph, w // pw
    cout, cin, kh, kw = model.collapse.weight.shape
    steps = w
    out["collapse"] = 2 * cout * cin * kh * kw * (h - kh + 1) * steps
    rnn = model.rnn
    out["lstm"] = 2 * steps * 2 * 4 * rnn.hidden_size * (rnn.input_size + rnn.hidden_size)
    out["linear"] = 2 * model.classify.in_features * model.classify.out_features * steps
    out["total"] = sum(out.values())
    return out


def flop_counter_check(model: LineRecognizer, width: int) -> dict:
    """torch.utils.flop_counter's count of one line beside the formula. FlopCounterMode counts
    convolutions and matmuls but not the fused CPU LSTM kernel, so the LSTM is checked on one
    step of an nn.LSTMCell with the same sizes (which runs as counted matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    formula = flops_per_line(model, width)
    line = torch.zeros(1, 1, model.height, width)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.logits(line)
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    cell = nn.LSTMCell(model.rnn.input_size, model.rnn.hidden_size)
    with FlopCounterMode(display=False) as step, torch.inference_mode():
        cell(torch.zeros(1, model.rnn.input_size))
    steps = width // 4
    return {
        "counted_total": int(counter.get_total_flops()), "counted_by_op": by_op,
        "formula_without_lstm": formula["total"] - formula["lstm"],
        "lstm_step_counted_on_lstm_cell": int(step.get_total_flops()),
        "lstm_step_by_formula": formula["lstm"] // (2 * steps),
    }


@torch.inference_mode()
def conv_peak(threads: int, shapes: Sequence[tuple[int, int, int, int]] = PEAK_SHAPES,
              repeats: int = 3) -> dict:
    """GFLOP/s of large fp32 3x3 convolutions (oneDNN) in the plain and the channels-last
    layout; the best of them is the practical FP32 peak that the fraction-of-peak figures divide
    by. Wider convolutions get closer to the hardware's limit, hence several shapes."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    measured = []
    try:
        for n, c, h, w in shapes:
            flops = 2 * n * c * c * 9 * h * w
            for layout in (torch.contiguous_format, torch.channels_last):
                x = torch.randn(n, c, h, w).to(memory_format=layout)
                weight = torch.randn(c, c, 3, 3).to(memory_format=layout)
                conv = lambda x, weight=weight: nn.functional.conv2d(x, weight, padding=1)  # noqa: E731
                seconds = time_batch(conv, x, repeats, warmup=1)
                measured.append({"shape": [n, c, h, w], "layout": str(layout).split(".")[-1],
                                 "gflops": round(flops / min(seconds) / 1e9, 1)})
    finally:
        torch.set_num_threads(before)
    return {"gflops": max(m["gflops"] for m in measured), "threads": threads,
            "measured": measured}
