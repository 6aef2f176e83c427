"""Where a request's time goes: one request to the service broken into its stages (from the
Server-Timing header it answers with, and the client's own clock), drawn as stacked bars; and a
flame graph of the running service from py-spy, a sampling profiler that attaches to its PID.

    python -m lab_code.measuring stages http://127.0.0.1:8000/ --image line.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lab_code.measuring import loadgen

# The service's stages, in the order a request meets them (lab_code.serving.serverless times each).
STAGES = {
    "read": "base64 (or the download)",
    "decode": "PNG/JPEG to pixels",
    "lines": "split into lines, scale",
    "queue": "wait for the model thread",
    "model": "forward pass + CTC decoding",
}
COLORS = {"client + HTTP": "#bbbbbb", "JSON + validation": "#8c8c8c", "framework": "#d9a441",
          "read": "#4c72b0", "decode": "#55a868", "lines": "#64b5cd", "queue": "#c44e52",
          "model": "#8172b2", "cache hit": "#2ca02c"}


class ProfilerError(Exception):
    """py-spy is missing or may not attach to the process: one sentence on what to do."""


def breakdown(stages_ms: dict[str, float], client_ms: float) -> dict[str, float]:
    """The whole time of one request (or a mean over many), split so the parts add up to
    `client_ms`: the service's own stages, the framework around them (threads, response model),
    the JSON body's parsing and validation, and the rest (client, HTTP, loopback)."""
    inner = {name: stages_ms[name] for name in STAGES if name in stages_ms}
    handler = stages_ms.get("handler", sum(inner.values()))
    app = stages_ms.get("app", handler)
    parts = {"client + HTTP": max(0.0, client_ms - app),
             "JSON + validation": max(0.0, app - handler), **inner,
             "framework": max(0.0, handler - sum(inner.values()))}
    return {name: round(ms, 3) for name, ms in parts.items()}


def one_request(url: str, body: bytes, timeout: float = 60.0) -> dict[str, Any]:
    """POST one request and return its status, text, client-side milliseconds and the stages
    of its Server-Timing header."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            payload, status, header = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as err:
        payload, status, header = err.read(), err.code, err.headers
    client_ms = (time.perf_counter() - start) * 1000
    timing = ", ".join(header.get_all("server-timing") or [])
    return {"status": status, "body": json.loads(payload or b"{}"), "client_ms": client_ms,
            "stages_ms": loadgen.parse_server_timing(timing), "cache_hit": "cache;desc=hit" in
            timing}


def plot(rows: dict[str, dict[str, float]], title: str = "where a request's time goes"):
    """Horizontal stacked bars, one per row (label -> breakdown()), in milliseconds."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 1.4 + 0.6 * len(rows)))
    labels = list(rows)
    seen: set[str] = set()
    for y, label in enumerate(labels):
        left = 0.0
        for part, ms in rows[label].items():
            ax.barh(y, ms, left=left, color=COLORS.get(part, "#999999"),
                    label=None if part in seen else part, edgecolor="white", linewidth=0.5)
            if ms > 0.06 * sum(rows[label].values()):
                ax.text(left + ms / 2, y, f"{ms:.1f}", ha="center", va="center", fontsize=8,
                        color="white")
            seen.add(part)
            left += ms
        ax.text(left, y, f"  {left:.1f} ms", va="center", fontsize=9)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=8, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    ax.margins(x=0.12)
    fig.tight_layout()
    return fig


def py_spy() -> str:
    """The py-spy executable (installed with the course's `fast` extra)."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not found:
        raise ProfilerError('py-spy is not installed: run `pip install py-spy` (or pip install '
                            '-e ".[fast]") and try again.')
    return found


def flamegraph(pid: int, out: str | Path, seconds: float = 5.0, rate: int = 250,
               subprocesses: bool = True) -> Path:
    """Sample the Python stacks of process `pid` (and its worker processes) for `seconds` and
    write an SVG flame graph to `out`: wide boxes are where the time goes."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [py_spy(), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
           "--rate", str(rate), "--format", "flamegraph", "--output", str(out), "--nonblocking"]
    if subprocesses:
        cmd.append("--subprocesses")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 and subprocesses:  # a child that ended mid-sample stops py-spy: again
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not out.is_file():
        lines = (done.stderr + done.stdout).strip().splitlines()
        why = next((line[len("Error: "):] for line in lines if line.startswith("Error: ")),
                   lines[-1].strip() if lines else "no output")
        if "No stack counts" in why:
            hint = ("no Python code ran while it sampled: put load on the service meanwhile "
                    "(lab_code.measuring.loadgen), or sample for longer")
        elif any("ermission" in line for line in lines):
            hint = ("py-spy needs permission to read another process: run as root, or allow it "
                    "with `sudo sysctl kernel.yama.ptrace_scope=0` (in Docker: --cap-add "
                    "SYS_PTRACE)")
        else:
            hint = "is the process still running?"
        raise ProfilerError(f"py-spy could not profile process {pid} ({why}): {hint}.")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.measuring stages",
        description="Send one image to the service and print where its time went.")
    parser.add_argument("url", help="the service's POST URL, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--image", type=Path, default=None,
                        help="image file (default: the first screenshot line of the real-world "
                             "set)")
    parser.add_argument("--repeats", type=int, default=20, metavar="N",
                        help="requests to average over (default: 20)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        body = (loadgen.image_body(args.image) if args.image
                else loadgen.realworld_bodies(limit=1, family="screenshot")[0])
        answers = [one_request(args.url, body) for _ in range(max(1, args.repeats))]
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        print(f"error: no answer from {args.url} ({reason}): is the service running "
              "(python -m lab_code.serving serverless)?", file=sys.stderr)
        return 1
    last = answers[-1]
    if last["status"] != 200:
        print(f"error: the service answered {last['status']}: "
              f"{last['body'].get('error', last['body'])}", file=sys.stderr)
        return 1
    names = {name for a in answers for name in a["stages_ms"]}
    mean = {n: sum(a["stages_ms"].get(n, 0.0) for a in answers) / len(answers) for n in names}
    client = sum(a["client_ms"] for a in answers) / len(answers)
    print(f"text: {last['body'].get('text')!r}  (mean of {len(answers)} requests)")
    for part, ms in breakdown(mean, client).items():
        print(f"  {part:<18} {ms:7.2f} ms  {STAGES.get(part, '')}")
    print(f"  {'total':<18} {client:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
