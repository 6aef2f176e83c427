"""The explainer's command line: a table of the steps with their explanations, which of them a
change rebuilds, hadolint's findings, and an estimate of the image's size.

    python -m lab_code.dockerfile docker/frontend.Dockerfile --lint \
        --changed lab_code/serving/app.py
    python -m lab_code.dockerfile docker/lambda.Dockerfile --size
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

from lab_code.dockerfile.hadolint import Finding, HadolintNotFound, lint
from lab_code.dockerfile.ignore import DockerIgnore
from lab_code.dockerfile.rebuild import RebuildPlan, rebuild_plan
from lab_code.dockerfile.steps import Step, read_dockerfile


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def table(steps: Sequence[Step], plan: RebuildPlan | None = None, width: int = 100) -> str:
    """The steps as a text table: number, line, instruction, layer kind, cache (with a plan),
    then the explanation, wrapped."""
    rebuilt = {s.number for s in plan.rebuilt} if plan else set()
    rows = []
    head = f"{'step':>4}  {'line':>4}  {'instruction':<44}  {'layer':<10}"
    head += f"  {'cache':<8}" if plan else ""
    rows.append(head)
    rows.append("-" * len(head))
    for step in steps:
        row = f"{step.number:>4}  {step.line:>4}  {_shorten(step.text, 44):<44}  {step.layer:<10}"
        if plan:
            row += f"  {'REBUILT' if step.number in rebuilt else 'cached':<8}"
        rows.append(row)
        rows += textwrap.wrap(step.explanation, width=width, initial_indent=" " * 12,
                              subsequent_indent=" " * 12)
    if plan:
        rows += ["", *textwrap.wrap(plan.summary(), width=width)]
    return "\n".join(rows)


def _lint_report(findings: Sequence[Finding]) -> Iterator[str]:
    if not findings:
        yield "hadolint: no findings."
        return
    yield f"hadolint: {len(findings)} finding(s):"
    for finding in findings:
        yield f"  {finding}"


# --- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.dockerfile",
        description="Explain a Dockerfile step by step: what each instruction does, which "
                    "layer it makes, which layers a change of files rebuilds, and what hadolint "
                    "finds. Builds nothing: no Docker engine is needed.",
    )
    parser.add_argument("dockerfile", type=Path, help="the Dockerfile to explain")
    parser.add_argument("--context", type=Path, default=Path("."),
                        help="the build context, the folder `docker build` is given "
                             "(default: the current folder); its .dockerignore applies")
    parser.add_argument("--changed", nargs="+", action="extend", default=[], metavar="PATH",
                        help="files that changed, relative to the context: show which steps "
                             "rebuild")
    parser.add_argument("--lint", action="store_true",
                        help="also run hadolint; exit 1 when it reports an error")
    parser.add_argument("--size", action="store_true",
                        help="also estimate the size of what the image installs and copies "
                             "(from this environment's installed distributions; "
                             "lab_code.dockerfile.size says how)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        steps = read_dockerfile(args.dockerfile)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    plan = None
    if args.changed:
        ignore = DockerIgnore.for_build(args.context, args.dockerfile)
        plan = rebuild_plan(steps, args.changed, args.context, ignore)
    print(table(steps, plan))
    if args.size:
        from lab_code.dockerfile.size import estimate

        print()
        print(estimate(steps, args.context).summary())
    if not args.lint:
        return 0
    try:
        findings = lint(args.dockerfile)
    except (HadolintNotFound, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print()
    print("\n".join(_lint_report(findings)))
    return 1 if any(f.level == "error" for f in findings) else 0

