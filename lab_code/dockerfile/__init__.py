"""Read a Dockerfile the way `docker build` does, without a Docker engine: one module per idea.

    steps    parse each instruction and explain it (the layer it makes; the container's command)
    ignore   .dockerignore: which files the build context holds
    rebuild  which steps a change of files reruns, and which come from the cache
    hadolint hadolint's findings (the Dockerfile linter)
    cli      the table and `python -m lab_code.dockerfile FILE --changed PATH --lint`
    engine   whether this machine has a Docker engine at all (Colab and CI have none)

The names below are the ones the lessons use (`from lab_code import dockerfile`).
"""

from lab_code.dockerfile.cli import build_parser, main, table
from lab_code.dockerfile.hadolint import Finding, HadolintNotFound, hadolint_path, lint, lint_text
from lab_code.dockerfile.ignore import DockerIgnore, IgnoreRule
from lab_code.dockerfile.rebuild import RebuildPlan, copied_files, rebuild_plan, source_matches
from lab_code.dockerfile.steps import (
    BASE,
    BASE_ENTRYPOINTS,
    FILESYSTEM,
    METADATA,
    Step,
    base_entrypoint,
    container_command,
    explain,
    parse_dockerfile,
    read_dockerfile,
)

__all__ = [
    "BASE", "BASE_ENTRYPOINTS", "FILESYSTEM", "METADATA", "DockerIgnore", "Finding",
    "HadolintNotFound", "IgnoreRule", "RebuildPlan", "Step", "base_entrypoint", "build_parser",
    "container_command", "copied_files", "explain", "hadolint_path", "lint", "lint_text", "main",
    "parse_dockerfile", "read_dockerfile", "rebuild_plan", "source_matches", "table",
]
