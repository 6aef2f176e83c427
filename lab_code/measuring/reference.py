"""Make the model's reference profile: what its inputs and its confidence look like on the sets it
was built and judged on, stamped with the model's sha256 and written beside the bundled model
(lab_code/artifacts/reference_profile.json), where the service's drift check reads it.

    python -m lab_code.measuring reference            # the bundled model; ~1 min on 2 cores

It reads every image of the real-world set and a seeded sample of training lines the way the
service does (decode, statistics, lines, the model's scored reading), then records:
- per source (training, and each real-world family): the statistics, confidences and errors;
- the baseline the drift check compares with: the screenshot-like families (what the model was
  accepted on), every other image of them, so that the other half can replay a quiet day;
- how well confidence predicts a wrong reading (the proxy's quality): Spearman's rank
  correlation with the CER, the ROC AUC, and what a low-confidence threshold would catch.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lab_code import images
from lab_code.artifacts import sha256_file
from lab_code.recognizer import TextRecognizer, page_text
from lab_code.serving import drift
from lab_code.serving.inputs import DRIFT_STATS, image_stats

# The families the model was accepted on, and how the real-world set is split between the
# baseline (even positions within a family) and the replayed traffic (odd positions).
BASELINE_FAMILIES = ("unseen_font", "screenshot", "paragraph")
BINS = 5  # quantile bins per statistic: ~60 images per bin with the baseline's ~150
LOW_CONFIDENCE = 0.9  # monitoring/rules.yml's threshold: a line below it counts as unsure
TRAINING_SAMPLES = 200
TRAINING_SEED = 8_080


def realworld_records(root: Path | None = None) -> list[dict[str, Any]]:
    """The real-world set's records with their path and their position within their family."""
    from lab_code.training.evaluate import REALWORLD_DIR  # the set's one home

    root = Path(root or REALWORLD_DIR)
    records = json.loads((root / "labels.json").read_text())
    seen: dict[str, int] = {}
    for rec in records:
        rec["path"] = root / rec["file"]
        rec["position"] = seen.get(rec["family"], 0)
        seen[rec["family"]] = rec["position"] + 1
    return records


def in_baseline(rec: dict[str, Any]) -> bool:
    return rec["family"] in BASELINE_FAMILIES and rec["position"] % 2 == 0


def measure(recognizer: TextRecognizer, img, truth: str, size: int | None) -> dict[str, Any]:
    """What the service would log for one image, plus its reading's errors."""
    from lab_code.training.metrics import cer

    stats = image_stats(img)
    lines = images.page_lines(img)
    scored = recognizer.predict_lines_scored(lines) if lines else []
    text = page_text([t for t, _ in scored])
    confidences = [round(c, 4) for _, c in scored]
    return {**{k: stats[k] for k in ("brightness", "contrast", "ink_share", "height")},
            "bytes": size, "lines": len(lines), "line_confidences": confidences,
            "confidence": round(float(np.mean(confidences)), 4) if confidences else None,
            "cer": round(cer([text], [truth]), 4), "wrong": text != truth}


def columns(rows: Sequence[dict[str, Any]]) -> dict[str, list]:
    keys = [*DRIFT_STATS, "confidence", "cer"]
    return {k: [r[k] for r in rows] for k in keys} | {
        "line_confidences": [c for r in rows for c in r["line_confidences"]]}


def proxy_quality(rows: Sequence[dict[str, Any]], low: float = LOW_CONFIDENCE) -> dict[str, Any]:
    """How well an image's confidence tells a wrong reading from a right one."""
    from scipy import stats

    rows = [r for r in rows if r["confidence"] is not None]
    conf = np.array([r["confidence"] for r in rows])
    errors = np.array([r["cer"] for r in rows])
    wrong = np.array([r["wrong"] for r in rows])
    rho, p = stats.spearmanr(conf, errors)
    # AUC: the chance that a wrong reading has a lower confidence than a right one
    u = stats.mannwhitneyu(conf[~wrong], conf[wrong]).statistic if wrong.any() and (~wrong).any() \
        else float("nan")
    auc = float(u / (wrong.sum() * (~wrong).sum())) if wrong.any() and (~wrong).any() else None
    flagged = conf < low
    return {"images": len(rows), "wrong": int(wrong.sum()),
            "spearman_confidence_vs_cer": round(float(rho), 3), "spearman_p": float(p),
            "auc_wrong_vs_right": round(auc, 3) if auc is not None else None,
            "threshold": low, "flagged": int(flagged.sum()),
            "precision_at_threshold": round(float(wrong[flagged].mean()), 3)
            if flagged.any() else None,
            "recall_at_threshold": round(float(flagged[wrong].mean()), 3) if wrong.any()
            else None}


def build(recognizer: TextRecognizer, realworld: Path | None = None,
          training: int = TRAINING_SAMPLES) -> dict[str, Any]:
    """The reference profile of `recognizer` (see the module's docstring)."""
    sources: dict[str, list[dict[str, Any]]] = {}
    baseline: list[dict[str, Any]] = []
    for rec in realworld_records(realworld):
        data = rec["path"].read_bytes()
        row = measure(recognizer, images.open_image_bytes(data, name=rec["file"]), rec["text"],
                      len(data))
        sources.setdefault(f"realworld/{rec['family']}", []).append(row)
        if in_baseline(rec):
            baseline.append(row)
    if training:
        from lab_code.training import data as training_data

        rng = np.random.default_rng(TRAINING_SEED)
        sources["training"] = [measure(recognizer, img, text, None)
                               for img, text in (training_data.sample(rng)
                                                 for _ in range(training))]
    base = columns(baseline)
    edges, shares = {}, {}
    for stat in DRIFT_STATS:
        edges[stat], shares[stat] = drift.quantile_bins(base[stat], BINS)
    line_conf = np.array(base["line_confidences"])
    everything = [r for name, rows in sources.items() if name.startswith("realworld/")
                  for r in rows]
    return {
        "model_file": recognizer.model_path.name,
        "model_sha256": sha256_file(recognizer.model_path),
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m lab_code.measuring reference",
        "stats": list(DRIFT_STATS),
        "baseline": {"sources": [f"realworld/{f} (even positions)" for f in BASELINE_FAMILIES],
                     "count": len(baseline), "bins": BINS, "edges": edges, "shares": shares,
                     "values": base},
        "confidence": {"low_below": LOW_CONFIDENCE,
                       "baseline_low_share": round(float(np.mean(line_conf < LOW_CONFIDENCE)), 4),
                       "proxy_on_realworld": proxy_quality(everything)},
        "sources": {name: {"count": len(rows), **columns(rows)} for name, rows in sources.items()},
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring reference",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="TorchScript model (default: the bundled model)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write it (default: beside the bundled model)")
    parser.add_argument("--training", type=int, default=TRAINING_SAMPLES, metavar="N",
                        help=f"training lines to draw (default: {TRAINING_SAMPLES})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        recognizer = TextRecognizer(args.model, threads=1)
        profile = build(recognizer, training=args.training)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = args.out or drift.bundled_profile_path()
    out.write_text(json.dumps(profile, indent=1) + "\n")
    proxy = profile["confidence"]["proxy_on_realworld"]
    print(f"wrote {out}: baseline of {profile['baseline']['count']} images; confidence vs CER "
          f"on the real-world set: Spearman {proxy['spearman_confidence_vs_cer']}, "
          f"AUC {proxy['auc_wrong_vs_right']} ({proxy['wrong']} of {proxy['images']} wrong)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
