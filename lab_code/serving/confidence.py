"""How sure the model is of each line it reads: the mean, over the best path's non-blank steps, of
the probability the model gave that step's class (CTC greedy decoding, the same text the model
itself returns). A proxy for "is this reading right", measured against the real-world set's
errors by `python -m lab_code.measuring reference`.

`read_scored(recognizer, lines)` uses the recognizer's own `predict_lines_scored` when it has one;
otherwise it compiles a frozen copy of the model's `logits` method once and decodes here.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from lab_code.artifacts import quiet_torchscript
from lab_code.recognizer import TextRecognizer, read_lines

Scored = tuple[str, float]  # a line's text and its confidence in [0, 1]


def greedy(logits: torch.Tensor, charset: Sequence[str]) -> list[Scored]:
    """CTC greedy decoding of (B, T, classes) logits, class 0 the blank: each row's text (best
    class per step, repeats merged, blanks dropped, stripped) and its confidence. A row with no
    non-blank step (nothing to read) gets the mean probability of its blank path."""
    probs = torch.softmax(logits.float(), dim=-1)
    best_p, best = probs.max(dim=-1)
    out: list[Scored] = []
    for row, row_p in zip(best.tolist(), best_p.tolist(), strict=True):
        chars, kept, previous = [], [], 0
        for index, p in zip(row, row_p, strict=True):
            if index != 0:
                kept.append(p)
                if index != previous:
                    chars.append(charset[index - 1])
            previous = index
        conf = float(np.mean(kept)) if kept else float(np.mean(row_p)) if row_p else 0.0
        out.append(("".join(chars).strip(), conf))
    return out


_lock = threading.Lock()


def _scorer(recognizer: TextRecognizer):
    """The model's `logits` method, frozen for the CPU like the model that serves (made once per
    recognizer), and the charset it decodes to."""
    cached = recognizer.__dict__.get("_scorer")
    if cached is not None:
        return cached
    with _lock:
        if "_scorer" not in recognizer.__dict__:
            loaded = recognizer.loaded
            logits = loaded.logits
            if recognizer.model is not loaded:  # the served model is optimized: so is this one
                with quiet_torchscript():
                    frozen = torch.jit.freeze(loaded.eval(), preserved_attrs=["logits"])
                    logits = torch.jit.optimize_for_inference(frozen,
                                                              other_methods=["logits"]).logits
            recognizer.__dict__["_scorer"] = (logits, list(loaded.charset))
    return recognizer.__dict__["_scorer"]


def read_scored(recognizer: TextRecognizer, lines: Sequence[np.ndarray]) -> list[Scored]:
    """Each line's (text, confidence), batched as `TextRecognizer.predict_lines` batches."""
    own = getattr(recognizer, "predict_lines_scored", None)
    if own is not None:
        return list(own(lines))
    return predict_lines_scored(recognizer, lines)


def predict_lines_scored(recognizer: TextRecognizer,
                         lines: Sequence[np.ndarray]) -> list[Scored]:
    """What `TextRecognizer.predict_lines_scored` does where the recognizer has no such method:
    the frozen `logits` method, then `greedy` here."""
    logits, charset = _scorer(recognizer)
    recognizer.threads.ensure()
    return read_lines(lambda batch: greedy(logits(batch), charset), lines,
                      recognizer.width_step)
