"""What a Lambda cold start costs the function: the time to import its entry module (which loads
the model, warms it up and builds the app: the init phase) and the process's peak memory, in a
fresh interpreter each time, for this checkout and for a git commit side by side.

    python -m lab_code.measuring cold_start --baseline d18f1bf --out profiling/results/cold_start

Each round starts one process per source, in turns (forwards, then backwards), so a busy
machine slows every source alike; the figures are medians over rounds, and the ratios compare
them. `--baseline REF` imports that commit's entry module (`lab_code.lambda_function` in the old
layout) with this checkout's TorchScript model in its package, so only code and runtime differ.

Each source runs from a copy of its lab_code/ as its Lambda image holds it: no `__pycache__`
(.dockerignore keeps it out), its bytecode compiled only if that commit's
docker/lambda.Dockerfile has a `RUN python -m compileall` step, and nothing written at import
(Lambda's files are read-only). "this_uncompiled" is this checkout without that step: the
difference is what the step saves every cold start.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab_code.artifacts import bundled_model_path
from lab_code.dockerfile import parse_dockerfile
from lab_code.dockerfile.bytecode import compile_step, run_compile_step
from lab_code.measuring.service_benchmark import ROOT, extract_baseline, machine

ENTRY = "lab_code.serving.lambda_function"
LAMBDA_DOCKERFILE = "docker/lambda.Dockerfile"
OLD_ENTRY = "lab_code.lambda_function"  # before the package was laid out by side
# Run in a fresh interpreter: the clock starts just before the entry module's import, as
# Lambda's init phase does once the runtime is up; ru_maxrss is the process's peak resident set.
PROBE = """
import json, resource, sys, time
start = time.perf_counter()
import importlib
module = importlib.import_module(sys.argv[1])
init_s = time.perf_counter() - start
recognizer = getattr(module, "RECOGNIZER", None)
print("COLD-START " + json.dumps({
    "init_s": init_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "torch_loaded": "torch" in sys.modules,
    "runtime": getattr(recognizer, "runtime", "torchscript"),
    "model_file": str(getattr(recognizer, "model_path", "")).rsplit("/", 1)[-1]}))
"""


def entry_of(src: Path | None) -> str:
    """The Lambda entry module of the lab_code under `src` (None: this checkout)."""
    root = src or ROOT
    return ENTRY if (root / "lab_code" / "serving" / "lambda_function.py").is_file() \
        else OLD_ENTRY


def dockerfile_at(ref: str | None) -> str | None:
    """The text of the Lambda Dockerfile at git commit `ref` (None: this checkout's file), or
    None when there is none."""
    if ref is None:
        path = ROOT / LAMBDA_DOCKERFILE
        return path.read_text() if path.is_file() else None
    done = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{LAMBDA_DOCKERFILE}"],
                          capture_output=True, text=True, timeout=60)
    return done.stdout if done.returncode == 0 else None


def as_built(package_root: Path, into: Path | None, dockerfile: str | None) -> Path:
    """The folder a source's cold start runs from: `package_root`'s lab_code/ copied to `into`
    without any `__pycache__` (None: `package_root` is already such a copy), then compiled by
    the Dockerfile's compileall step when `dockerfile` (its text) has one."""
    if into is not None:
        shutil.copytree(package_root / "lab_code", into / "lab_code",
                        ignore=shutil.ignore_patterns("__pycache__"))
        package_root = into
    step = compile_step(parse_dockerfile(dockerfile)) if dockerfile else None
    if step is not None:
        run_compile_step(step, package_root)
    return package_root


def bytecode_of(src: Path | None) -> str:
    """Whether a source's code comes compiled (its copy holds .pyc files) or compiles at start."""
    compiled = src is not None and next((src / "lab_code").rglob("*.pyc"), None) is not None
    return "compiled at build" if compiled else "compiled at each start"


def one_start(src: Path | None, env: dict[str, str]) -> dict[str, Any]:
    """One cold start of the entry module of `src` (None: this checkout) in a new process that
    writes no bytecode (Lambda's files are read-only)."""
    full = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "PYTHONPATH")}
    full.update(env, PYTHONPATH=str(src or ROOT), PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-c", PROBE, entry_of(src)], capture_output=True,
                          text=True, env=full, cwd=src or ROOT, timeout=300)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("COLD-START ")]
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"importing {entry_of(src)} failed: {tail[0]}")
    return json.loads(lines[-1].removeprefix("COLD-START "))


def measure(sources: dict[str, tuple[Path | None, dict[str, str]]],
            rounds: int) -> dict[str, Any]:
    """Cold starts of every source, `rounds` times in alternating order: per source the
    median init seconds and peak RSS, every round's figures, what it loaded, and whether its
    bytecode came compiled."""
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
    names = list(sources)
    for number in range(rounds):
        for name in names if number % 2 == 0 else reversed(names):
            src, env = sources[name]
            records[name].append(one_start(src, env))
    out = {}
    for name, runs in records.items():
        out[name] = {
            "init_s": round(statistics.median(r["init_s"] for r in runs), 3),
            "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs), 1),
            "init_s_rounds": [round(r["init_s"], 3) for r in runs],
            "peak_rss_mb_rounds": [round(r["peak_rss_mb"], 1) for r in runs],
            "torch_loaded": runs[-1]["torch_loaded"], "runtime": runs[-1]["runtime"],
            "model_file": runs[-1]["model_file"], "entry": entry_of(sources[name][0]),
            "bytecode": bytecode_of(sources[name][0])}
    return out


def ratios(per_source: dict[str, Any], base: str) -> dict[str, dict[str, float]]:
    """Init time and peak RSS of each source relative to `base`."""
    ref = per_source[base]
    return {name: {"init_s": round(rec["init_s"] / ref["init_s"], 3),
                   "peak_rss_mb": round(rec["peak_rss_mb"] / ref["peak_rss_mb"], 3)}
            for name, rec in per_source.items() if name != base}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.measuring cold_start",
        description="Time a Lambda cold start's init phase (import of the entry module: model "
                    "loaded and warmed, app built) and its peak memory, in fresh processes.")
    parser.add_argument("--baseline", default=None, metavar="REF",
                        help="a git commit whose entry module is measured beside this one's "
                             "(default: none)")
    parser.add_argument("--rounds", type=int, default=7, metavar="N",
                        help="cold starts per source, taken in turns (default: 7)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for results.json (default: print only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rounds < 1:
        print("error: --rounds must be at least 1.", file=sys.stderr)
        return 2
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            baseline = extract_baseline(args.baseline, Path(tmp)) if args.baseline else None
            # this checkout as its image ships it (its bundled ONNX file when onnxruntime is
            # here); the same code on the TorchScript file, which tells the runtime's share from
            # the rest; and the same without the image's compile step
            this = as_built(ROOT, Path(tmp) / "this", dockerfile_at(None))
            bare = as_built(ROOT, Path(tmp) / "this_uncompiled", None)
            sources: dict[str, tuple[Path | None, dict[str, str]]] = {
                "this": (this, {}),
                "this_torchscript": (this, {"MODEL_PATH": str(bundled_model_path())}),
                "this_uncompiled": (bare, {})}
            if baseline is not None:
                as_built(baseline, None, dockerfile_at(args.baseline))
                sources["before"] = (baseline, {})
        except (ValueError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        load_before = os.getloadavg()
        try:
            per_source = measure(sources, args.rounds)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    results = {"command": "python -m lab_code.measuring cold_start " + " ".join(
                   argv if argv is not None else sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "baseline": args.baseline, "machine": machine(), "load_before": load_before,
               "rounds": args.rounds, "per_source": per_source,
               "ratios_to_before": ratios(per_source, "before") if baseline else {},
               "load_after": os.getloadavg(), "wall_s": round(time.time() - started, 1)}
    for name, rec in per_source.items():
        print(f"{name:18} init {rec['init_s']:.2f} s, peak RSS {rec['peak_rss_mb']:.0f} MB "
              f"({rec['runtime']}, torch {'loaded' if rec['torch_loaded'] else 'not loaded'}, "
              f"bytecode {rec['bytecode']})")
    for name, ratio in results["ratios_to_before"].items():
        print(f"{name:18} vs before: init x{ratio['init_s']:.2f}, peak RSS "
              f"x{ratio['peak_rss_mb']:.2f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
