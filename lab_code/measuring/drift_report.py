"""The drift report: how the inputs and the confidence of the latest predictions compare with the
model's reference profile, one panel per statistic, as a PNG or a self-contained HTML page.

    python -m lab_code.measuring drift_report --db watch.sqlite --out drift.html
    python -m lab_code.measuring drift_report --db watch.sqlite --out drift.png --last 300

For each statistic it gives the population stability index (the same function, over the same
rows, as the service's `ocr_input_drift_psi`, so the report and the alert agree) and, as a second
opinion, the two-sample Kolmogorov-Smirnov test (scipy): its p-value says how surprising the
difference would be if nothing had changed. With hundreds of rows KS flags even harmless shifts;
PSI's bins keep the question to "is this a shift worth a look".

Why not Evidently: its 0.7 release does much the same (K-S below 1,000 rows, PSI on request)
plus an HTML report, but it installs about 1 GB (plotly, pyarrow, statsmodels...) and its 0.7.23
fails to import with pandas 3, the course's pandas; numpy and scipy do this in a few lines.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lab_code.serving import drift
from lab_code.serving.inputs import DRIFT_STATS
from lab_code.serving.predictions import DB_ENV, PredictionLog, Store, default_db

LABELS = {"brightness": "brightness (mean grey)", "contrast": "contrast (grey std)",
          "ink_share": "ink share", "height": "height (px)", "lines": "lines",
          "confidence": "confidence (per image)"}


def report(rows: Sequence[dict[str, Any]], profile: dict[str, Any]) -> dict[str, Any]:
    """PSI (as the service computes it) and KS per statistic, and the confidence's share below
    the profile's low threshold, for `rows` of the prediction log."""
    from scipy import stats

    psi = drift.drift(profile, rows)
    base = profile["baseline"]["values"]
    table = {}
    for stat in [*DRIFT_STATS, "confidence"]:
        now = [r[stat] for r in rows if r.get(stat) is not None]
        ref = [v for v in base[stat] if v is not None]
        if not now:
            continue
        ks = stats.ks_2samp(ref, now)
        table[stat] = {"psi": psi.get(stat), "ks_statistic": round(float(ks.statistic), 4),
                       "ks_p": float(ks.pvalue), "median_reference": float(np.median(ref)),
                       "median_now": float(np.median(now)),
                       "drifted": psi.get(stat, 0.0) > drift.PSI_ALERT}
    low = profile["confidence"]["low_below"]
    mins = [r["min_confidence"] for r in rows if r.get("min_confidence") is not None]
    return {"rows": len(rows), "psi_alert": drift.PSI_ALERT, "statistics": table,
            "drifted": [s for s, t in table.items() if t["drifted"]],
            "images_with_a_low_confidence_line": round(float(np.mean(np.array(mins) < low)), 4)
            if mins else None,
            "baseline": profile["baseline"]["sources"]}


def plot(rows: Sequence[dict[str, Any]], profile: dict[str, Any], result: dict | None = None):
    """One panel per statistic: the reference's distribution against the recent rows'."""
    import matplotlib.pyplot as plt

    result = result or report(rows, profile)
    base = profile["baseline"]["values"]
    stats_ = [s for s in [*DRIFT_STATS, "confidence"] if s in result["statistics"]]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, stat in zip(axes.flat, stats_, strict=False):
        ref = np.array([v for v in base[stat] if v is not None], dtype=float)
        now = np.array([r[stat] for r in rows if r.get(stat) is not None], dtype=float)
        lo, hi = np.percentile(np.concatenate([ref, now]), [0.5, 99.5])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 25)
        ax.hist(ref, bins=bins, density=True, alpha=0.5, label="reference")
        ax.hist(now, bins=bins, density=True, alpha=0.5, label=f"last {len(now)}")
        row = result["statistics"][stat]
        psi = f"PSI {row['psi']:.2f}" if row["psi"] is not None else "no PSI"
        ax.set_title(f"{LABELS[stat]}\n{psi}, KS p={row['ks_p']:.1g}",
                     color="crimson" if row["drifted"] else "black", fontsize=10)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(stats_):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Inputs of the last {result['rows']} predictions against the reference profile"
                 f" (red: PSI above {drift.PSI_ALERT})")
    fig.tight_layout()
    return fig


def write(result: dict[str, Any], fig, out: Path) -> Path:
    """The report as a PNG (the figure) or a self-contained HTML page (table and figure)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        fig.savefig(out, dpi=100)
        return out
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    image = base64.b64encode(buf.getvalue()).decode("ascii")
    def cells(stat: str, t: dict[str, Any]) -> str:
        psi = "" if t["psi"] is None else f"{t['psi']:.3f}"
        return (f"<tr{' class=drift' if t['drifted'] else ''}><td>{html.escape(stat)}</td>"
                f"<td>{psi}</td><td>{t['ks_statistic']:.3f}</td><td>{t['ks_p']:.2g}</td>"
                f"<td>{t['median_reference']:.3g}</td><td>{t['median_now']:.3g}</td></tr>")

    rows = "".join(cells(stat, t) for stat, t in result["statistics"].items())
    out.write_text(f"""<!doctype html><meta charset="utf-8"><title>Drift report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:auto}}td,th{{padding:2px 10px}}
.drift{{color:crimson;font-weight:bold}}</style>
<h1>Drift report: the last {result['rows']} predictions</h1>
<p>Reference: {html.escape(', '.join(result['baseline']))}. PSI above {result['psi_alert']}
is a shift worth a look; drifted: {html.escape(', '.join(result['drifted']) or 'nothing')}.</p>
<table><tr><th>statistic</th><th>PSI</th><th>KS</th><th>KS p</th><th>median (reference)</th>
<th>median (now)</th></tr>{rows}</table>
<img alt="distributions" src="data:image/png;base64,{image}">
""")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring drift_report",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=os.environ.get(DB_ENV) or str(default_db()),
                        help=f"the prediction log: a SQLite file or postgresql:// URL (default: "
                             f"${DB_ENV}, else {default_db().name} in your data folder)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="the reference profile (default: the bundled model's)")
    parser.add_argument("--last", type=int, default=drift.WINDOW, metavar="N",
                        help=f"the latest N predictions (default: {drift.WINDOW}, as the service)")
    parser.add_argument("--out", type=Path, default=Path("drift_report.html"),
                        help="a .html or .png file to write (default: drift_report.html)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.suffix.lower() not in (".png", ".html"):
        print("error: --out must end in .png or .html.", file=sys.stderr)
        return 2
    if not args.db.startswith("postgres") and not Path(args.db).is_file():
        print(f"error: No prediction log at {args.db}: start the service first, or pass --db.",
              file=sys.stderr)
        return 1
    try:
        profile = drift.load_profile(args.profile)
        log = PredictionLog(Store(args.db))
    except (FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        rows = log.recent(args.last)
    finally:
        log.close()
    if not rows:
        print(f"error: The prediction log at {args.db} is empty: send the service some images.",
              file=sys.stderr)
        return 1
    import matplotlib

    matplotlib.use("Agg")
    result = report(rows, profile)
    out = write(result, plot(rows, profile, result), args.out)
    for stat, row in result["statistics"].items():
        psi = "  -  " if row["psi"] is None else f"{row['psi']:.3f}"
        print(f"{stat:11} PSI {psi}  KS p {row['ks_p']:.2g}{'  DRIFT' if row['drifted'] else ''}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
