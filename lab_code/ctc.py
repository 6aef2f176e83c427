"""CTC greedy decoding in numpy: the model's per-step class scores (logits) to text, with how sure
the model was of what it read.

The TorchScript model decodes inside its own file; a runtime that only computes logits (ONNX
Runtime: an exported graph holds tensors, not strings) decodes here, with the same rule, so both
give the same text. Class 0 is the CTC blank; class i is charset[i - 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BLANK = 0


def greedy(logits: np.ndarray, charset: Sequence[str]) -> list[tuple[str, float]]:
    """(text, confidence) for each row of `logits` (B, T, classes).

    Text: the best class at each step, repeats merged, blanks dropped, spaces at both ends
    stripped (exactly what the TorchScript model's own decode does).

    Confidence: the mean, over the best path's steps whose best class is not the blank, of that
    class's softmax probability: how sure the model was of each character it read (spaces
    included, even those stripped from the ends). A row where every step's best class is the
    blank reads as "" and its confidence is the mean probability of the blank over its steps:
    how sure the model was that there is nothing to read. A row of no steps: ("", 1.0).
    """
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"logits must have 3 dimensions (batch, steps, classes), not "
                         f"{logits.ndim}.")
    if logits.shape[2] != len(charset) + 1:
        raise ValueError(f"logits have {logits.shape[2]} classes but the charset has "
                         f"{len(charset)} characters (+1 for the blank).")
    if logits.shape[1] == 0:
        return [("", 1.0)] * logits.shape[0]
    scores = logits.astype(np.float32, copy=False)
    best = scores.argmax(axis=-1)  # (B, T); the first of equal maxima, as torch.argmax
    top = np.take_along_axis(scores, best[..., None], axis=-1)  # (B, T, 1)
    # softmax probability of the best class: exp(top) / sum(exp), shifted by top for stability
    probability = 1.0 / np.exp(scores - top).sum(axis=-1)  # (B, T)
    out = []
    for row, p in zip(best, probability, strict=True):
        read = row != BLANK
        keep = read & np.concatenate(([True], row[1:] != row[:-1]))  # a new non-blank class
        text = "".join(charset[i - 1] for i in row[keep]).strip()
        confidence = float(p[read].mean()) if read.any() else float(p.mean())
        out.append((text, confidence))
    return out
