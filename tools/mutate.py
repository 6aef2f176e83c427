"""The mutation check: break each guarded property on purpose, one at a time, in a copy of this
checkout, run the tests named for it, and report which breaks no test caught ("survivors").

    python tools/mutate.py              # every break; exit 0 when each made a test fail in time
    python tools/mutate.py --list       # the breaks and their tests, without running anything
    python tools/mutate.py cer-ignores-case docker-course-packages   # some of them
    make mutate                         # the same as the first line, with the course's .venv

The copy holds what `git ls-files --cached --others --exclude-standard` lists (the committed
files and any new ones not ignored), made into a fresh git repository, so that this checkout is
never touched; it runs with this checkout's Python (its .venv), and imports the copy's lab_code.
Before the breaks, the named tests must pass on the unbroken copy: a test that already fails
proves nothing. Each break must then make at least one of its tests fail within LIMIT_S seconds
(pytest stops at the first failure); a break whose text is no longer in the code is reported as
stale, so an edit that moves the code shows here instead of silently testing nothing.

Run it before you finish any change that adds or moves a guard, and add a break for the guard.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 60.0  # each break must make a test fail within this (pytest's own start included)
HARD_LIMIT_S = 300  # a run that takes longer is stopped and counts as not caught


@dataclass(frozen=True)
class Break:
    name: str
    what: str  # the property broken, in one line
    tests: tuple[str, ...]  # pytest node ids, the catching one first
    path: str = ""  # a text edit: in this file...
    old: str = ""  # ...this text, which must occur exactly once...
    new: str = ""  # ...becomes this
    cell: str = ""  # or: append this code cell to the notebook at `path`
    untrack: str = ""  # or: `git rm --cached` this path (the files stay on disk)
    env: dict[str, str] = field(default_factory=dict)


BREAKS = [
    Break("pixel-check-removed",
          "images.open_image_bytes decodes without checking the pixel count first",
          ("tests/test_images.py::test_the_pixel_limit_is_checked_from_the_header_before_decoding",),
          path="lab_code/images.py",
          old="    check_size(*img.size, limits=limits)  # header only",
          new="    pass  # header only"),
    Break("scripted-decode-keeps-edge-spaces",
          "the decoder skips .strip() only when compiled with TorchScript",
          ("tests/test_model_export.py::"
           "test_the_bundled_model_strips_the_spaces_it_reads_in_a_margin_eager_and_scripted",
           "tests/test_model_export.py::test_decode_strips_edge_spaces_eager_and_scripted"),
          path="lab_code/training/model.py",
          old='            texts.append("".join(chars).strip())\n',
          new='            text = "".join(chars)\n'
              '            texts.append(text if torch.jit.is_scripting() else text.strip())\n'),
    Break("cer-ignores-case",
          "cer compares lower-cased text",
          ("tests/test_metrics.py",),
          path="lab_code/training/metrics.py",
          old="edit_distance(p, t) for p, t in zip(",
          new="edit_distance(p.lower(), t.lower()) for p, t in zip("),
    Break("edit-distance-is-hamming",
          "edit_distance counts differing positions (plus the length difference)",
          ("tests/test_metrics.py",),
          path="lab_code/training/metrics.py",
          old='substitutions each cost 1)."""\n',
          new='substitutions each cost 1)."""\n'
              '    return sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))\n'),
    Break("serving-imports-training-lazily",
          "a serving function imports a training module when it runs, not at import",
          ("tests/test_boundary.py::"
           "test_a_request_through_each_way_of_serving_loads_no_training_code",),
          path="lab_code/serving/serverless.py",
          old="        return images.lines_from(source, name=name, limits=limits.work,\n",
          new="        from lab_code.training import metrics  # noqa: F401\n"
              "        return images.lines_from(source, name=name, limits=limits.work,\n"),
    Break("docker-course-packages",
          "lambda.Dockerfile's pip install line adds matplotlib and wandb",
          ("tests/test_dockerfiles.py::test_no_course_only_package_reaches_an_image",),
          path="docker/lambda.Dockerfile",
          old='--target "${LAMBDA_TASK_ROOT}"\n',
          new='--target "${LAMBDA_TASK_ROOT}" matplotlib wandb\n'),
    Break("peak-ratio-multiplies",
          "costs.one_instance_capacity multiplies by the peak-to-average ratio",
          ("tests/test_costs.py::test_peaks_four_times_the_average_by_hand",
           "tests/test_costs.py::test_a_scenario_and_the_cli_carry_the_peak_ratio"),
          path="lab_code/measuring/costs.py",
          old="    return busy * SECONDS_PER_MONTH / _peak_ratio(peak_to_average)\n",
          new="    return busy * SECONDS_PER_MONTH * _peak_ratio(peak_to_average)\n"),
    Break("colab-shell-assignment",
          "a lesson gets a cell Colab's IPython 7.34 cannot parse: `answer = !cmd` in a block",
          ("tests/test_colab.py::test_every_cell_parses_under_colabs_rules_without_the_colab_venv",),
          path="notebooks/00_overview.ipynb",
          cell="if True:\n    answer = !echo hi"),
    Break("bundled-model-untracked",
          "nothing under lab_code/artifacts is tracked (a clone would have no model)",
          ("tests/test_packaging.py::test_the_bundled_model_is_tracked_and_ships_in_the_wheel",),
          untrack="lab_code/artifacts"),
    Break("jpeg-scans-uncounted",
          "a progressive JPEG's scans are not counted before decoding",
          ("tests/test_images.py::test_refused_from_the_bytes_before_pillow_opens_them",),
          path="lab_code/images.py",
          old="            if scans > limits.max_jpeg_scans:\n",
          new="            if False:\n"),
    Break("any-host-answered",
          "the service answers any Host header (a DNS-rebinding page can read it)",
          ("tests/test_public_serving.py::"
           "test_service_refuses_bodies_that_are_not_json_and_hosts_it_does_not_know",),
          path="lab_code/serving/guard.py",
          old="            if not host_allowed(host.decode(\"latin-1\") if host else None, "
              "self.hosts):\n",
          new="            if False:\n"),
    Break("thread-count-not-set-where-the-model-runs",
          "the recognizer no longer sets its thread count on the thread that runs the model",
          ("tests/test_threads.py::"
           "test_a_model_call_on_a_worker_thread_starts_no_openmp_team_when_given_one_thread",),
          path="lab_code/threads.py",
          old="        torch.set_num_threads(self.threads)\n        self._done.set = True\n",
          new="        self._done.set = True\n"),
    Break("onnx-export-without-fallback",
          "an ONNX export that torch.export cannot capture (torch 2.11, Colab's) fails staging",
          ("tests/test_model_export.py::"
           "test_when_torch_export_fails_the_torchscript_based_exporter_writes_the_model",),
          path="lab_code/training/export.py",
          old="        _export_legacy(model, example, path, props, reason)\n        return path\n",
          new="        raise\n"),
    Break("failed-staging-leaves-a-version",
          "a staging that fails leaves a version folder without a manifest behind",
          ("tests/test_model_export.py::test_a_staging_that_fails_leaves_no_version_behind",),
          path="lab_code/training/stage_model.py",
          old="        shutil.rmtree(folder, ignore_errors=True)\n        raise\n",
          new="        raise\n"),
    Break("card-bound-rules-out-cards",
          "preprocess.card's cheap bound skips the flood fill where the fill would find a card",
          ("tests/test_preprocess.py::"
           "test_the_cards_cheap_bound_never_rules_out_a_card_the_flood_fill_finds",),
          path="lab_code/preprocess.py",
          old="    return spans >= CARD_FILL * box\n",
          new="    return spans >= 0.97 * box\n"),
    Break("plane-fit-stops-too-soon",
          "preprocess._plane stops after its first round, where more rounds change the fit",
          ("tests/test_preprocess.py::"
           "test_the_plane_fit_stops_early_only_where_more_rounds_change_nothing",),
          path="lab_code/preprocess.py",
          old="        if last is not None and np.array_equal(last, near):\n",
          new="        if last is not None:\n"),
]


# --- the copy ------------------------------------------------------------------------------------


def git(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    # the copy's own identity: commits there never leave it
    return subprocess.run(["git", "-c", "user.name=mutation check",
                           "-c", "user.email=mutation-check@localhost", *args],
                          cwd=cwd, check=True, capture_output=True, text=True, **kwargs)


def make_copy(target: Path) -> Path:
    """The checkout's files (tracked, and new ones git does not ignore) in a fresh repository."""
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).stdout
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / rel)
    git("init", "-q", cwd=target)
    git("add", "-A", cwd=target)
    git("commit", "-q", "-m", "the checkout, unbroken", cwd=target)
    return target


def restore(copy: Path) -> None:
    git("reset", "-q", "--hard", "HEAD", cwd=copy)
    git("clean", "-q", "-fd", cwd=copy)  # leaves ignored files (caches, build outputs)


def apply(brk: Break, copy: Path) -> str | None:
    """Make the break in the copy; a sentence saying why it cannot be made, or None."""
    if brk.untrack:
        git("rm", "-r", "-q", "--cached", brk.untrack, cwd=copy)
        return None
    path = copy / brk.path
    if not path.is_file():
        return f"{brk.path} does not exist"
    if brk.cell:
        import nbformat

        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(brk.cell))
        nbformat.write(nb, path)
        return None
    text = path.read_text(encoding="utf-8")
    if text.count(brk.old) != 1:
        return (f"the text to replace occurs {text.count(brk.old)} times in {brk.path}, not once: "
                "update the break in tools/mutate.py to the code as it is now")
    path.write_text(text.replace(brk.old, brk.new), encoding="utf-8")
    return None


# --- running the tests ---------------------------------------------------------------------------


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy)  # the copy's lab_code, not the checkout's editable install
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTEST_ADDOPTS", None)
    return env


def pytest(copy: Path, tests: tuple[str, ...], extra: list[str], env: dict[str, str],
           limit: float) -> tuple[int | None, float, str]:
    """(exit code or None when stopped at `limit`, seconds, the output's tail)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-header",
           "-o", "addopts=", *extra, *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True,
                              timeout=limit)
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code, out = None, (err.stdout or b"").decode(errors="replace")
    return code, time.perf_counter() - start, out[-3000:]


def failed_tests(output: str) -> list[str]:
    return [line.removeprefix("FAILED ").split(" - ")[0] for line in output.splitlines()
            if line.startswith("FAILED ")]


def check_copy_imports_itself(copy: Path, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", "import lab_code; print(lab_code.__file__)"],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=120)
    found = Path(done.stdout.strip() or "?").resolve()
    if not found.is_relative_to(copy.resolve()):
        sys.exit(f"error: in the copy, Python imports lab_code from {found}, not from the copy: "
                 "the breaks would not be seen. Run this with the checkout's .venv python.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="run only these breaks (default: all)")
    parser.add_argument("--list", action="store_true", help="list the breaks and exit")
    parser.add_argument("--keep", action="store_true", help="keep the copy and print its path")
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")
    parser.add_argument("--limit", type=float, default=LIMIT_S,
                        help=f"seconds within which a test must fail (default {LIMIT_S:g})")
    args = parser.parse_args(argv)
    known = {b.name: b for b in BREAKS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"no break named {', '.join(unknown)}: --list shows them")
    chosen = [known[n] for n in args.names] or BREAKS
    if args.list:
        for brk in chosen:
            print(f"{brk.name}: {brk.what}\n    " + "\n    ".join(brk.tests))
        return 0

    load = os.getloadavg()[0]
    print(f"{len(chosen)} breaks; load average {load:.1f} on {os.cpu_count()} CPUs", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="mutate-"))
    copy = make_copy(workdir / "checkout")
    env = environment(copy)
    check_copy_imports_itself(copy, env)
    rows = []
    try:
        everything = tuple(dict.fromkeys(t for brk in chosen for t in brk.tests))
        code, seconds, out = pytest(copy, everything, [], env, HARD_LIMIT_S * 3)
        print(f"unbroken: {len(everything)} test ids, exit {code}, {seconds:.0f} s", flush=True)
        if code != 0:
            print(out)
            print("error: the named tests must pass on the unbroken copy before any break "
                  "means anything.", file=sys.stderr)
            return 2
        for brk in chosen:
            restore(copy)
            problem = apply(brk, copy)
            if problem:
                rows.append({"break": brk.name, "verdict": "stale", "seconds": 0.0,
                             "failed": [], "note": problem})
            else:
                code, seconds, out = pytest(copy, brk.tests, ["-x"], {**env, **brk.env},
                                            HARD_LIMIT_S)
                failed = failed_tests(out)
                if code == 1 and failed and seconds <= args.limit:
                    verdict = "caught"
                elif code == 1 and failed:
                    verdict = "slow"
                else:
                    verdict = "survived"
                rows.append({"break": brk.name, "verdict": verdict, "seconds": round(seconds, 1),
                             "failed": failed, "note": "" if failed else out[-600:]})
            row = rows[-1]
            print(f"{row['verdict']:>8}  {row['seconds']:6.1f} s  {brk.name}  "
                  f"{', '.join(row['failed']) or row['note']}", flush=True)
    finally:
        if args.keep:
            print(f"the copy: {copy}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    bad = [r for r in rows if r["verdict"] != "caught"]
    total = sum(r["seconds"] for r in rows)
    print(f"{len(rows) - len(bad)} of {len(rows)} breaks caught within {args.limit:g} s, "
          f"{len(bad)} not ({', '.join(r['break'] + ': ' + r['verdict'] for r in bad) or 'none'});"
          f" {total:.0f} s of tests; load average now {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"limit_s": args.limit, "load_before": load,
                                         "breaks": rows}, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
