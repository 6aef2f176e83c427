"""Character error rate (CER): edit distance between prediction and truth, per truth character."""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions and substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def cer(predictions: Sequence[str], truths: Sequence[str]) -> float:
    """Total edits over total truth characters (0.0 is perfect; can exceed 1.0)."""
    if len(predictions) != len(truths):
        raise ValueError("predictions and truths must have the same length")
    errors = sum(edit_distance(p, t) for p, t in zip(predictions, truths, strict=True))
    return errors / max(1, sum(len(t) for t in truths))
