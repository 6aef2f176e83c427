"""The package's one-way flow, proved for every module: training -> files -> production.

Each module is imported in a fresh interpreter. A production module (and a neutral one, which
both sides import) must load no training module and no matplotlib, and must leave every
process-wide setting as it found it: environment variables, torch's thread counts, logger levels
and handlers, signal handlers, warnings filters. A training module must load no production module
(only the neutral ones, which hold the contracts both sides share).

To add a module, give it a side in SIDE; test_every_module_has_a_side fails until you do.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lab_code

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "lab_code" / "assets" / "examples" / "line_sans.png"

PRODUCTION, NEUTRAL, TRAINING, TOOL = "production", "neutral", "training", "tool"
SIDE = {
    # production: serves a compiled model and never needs the code that defined it
    "images": PRODUCTION, "recognizer": PRODUCTION, "registry": PRODUCTION, "app": PRODUCTION,
    "serverless": PRODUCTION, "tunnel": PRODUCTION, "ports": PRODUCTION,
    "urlfetch": PRODUCTION, "lambda_function": PRODUCTION, "processes": PRODUCTION,
    "batching": PRODUCTION, "threads": PRODUCTION,
    # neutral: the contracts both sides import (pixels; file names, loader, hashing; devices)
    "preprocess": NEUTRAL, "artifacts": NEUTRAL, "devices": NEUTRAL,
    # training: makes the model and stages it
    "data": TRAINING, "fonts": TRAINING, "model": TRAINING, "train": TRAINING,
    "export": TRAINING, "stage_model": TRAINING, "metrics": TRAINING,
    # tools that look at both sides (measure, judge, explain, check the machine): no rule here
    "evaluate": TOOL, "profiling": TOOL, "environment": TOOL, "docker_engine": TOOL,
    "dockerfile": TOOL, "tesseract": TOOL, "service_benchmark": TOOL, "stages": TOOL,
    "loadgen": TOOL, "costs": TOOL, "cpu_compile": TOOL,
}
# What a module must do after its import, where importing alone would prove too little.
USE = {"recognizer": f"module.TextRecognizer().predict({str(EXAMPLE)!r})"}
# Modules that break the rule today, each with what it changes; fixing one makes its xfail an
# XPASS, which fails the suite (strict): then delete its line here.
KNOWN = {
    "app": "sets GRADIO_ANALYTICS_ENABLED at import; and importing gradio sets the "
           "huggingface_hub logger's level (import gradio where the UI is built)",
}
# Entry points whose import *is* the process set-up: Lambda's init phase imports this module to
# load the model and choose torch's threads once per cold start. They still load no training code.
ENTRY_POINTS = {"lambda_function"}
# Variables that the suite sets (tests/conftest.py) and modules have been seen to setdefault at
# import: the probe starts without them, so that such a setdefault shows.
UNSET = ("GRADIO_ANALYTICS_ENABLED", "KINETO_LOG_LEVEL", "OMP_NUM_THREADS")


def present() -> list[str]:
    """The lab_code modules (and subpackages) in this checkout."""
    return sorted(m.name for m in pkgutil.iter_modules(lab_code.__path__))


def of_side(*sides: str) -> list[str]:
    return [m for m in present() if SIDE.get(m) in sides]


PROBE = """
import importlib, json, logging, os, signal, sys, warnings
# the base both sides stand on: what these libraries do at their own import is the baseline
import numpy, PIL.Image, requests, torch

def state():
    loggers = {name: lg.level  # a library may give its own logger a NullHandler; not a level
               for name, lg in logging.Logger.manager.loggerDict.items()
               if isinstance(lg, logging.Logger)}
    root = logging.getLogger()
    return {
        "os.environ": dict(os.environ),
        "torch threads": [torch.get_num_threads(), torch.get_num_interop_threads()],
        "root logger": [root.level, len(root.handlers)],
        "logger levels": loggers,
        "signal handlers": {str(s): repr(signal.getsignal(s)) for s in signal.valid_signals()
                            if s not in (signal.SIGKILL, signal.SIGSTOP)},
        "warnings filters": [repr(f) for f in warnings.filters],
    }

before = state()
name = sys.argv[1]
module = importlib.import_module("lab_code." + name)
exec(sys.argv[2], {"module": module})
after = state()
changed = {}
for key in before:
    old, new = before[key], after[key]
    if isinstance(old, dict):
        # a logger created by the import, left at level NOTSET, is no change
        fresh = logging.NOTSET if key == "logger levels" else None
        diff = sorted(k for k in old.keys() | new.keys()
                      if old.get(k, fresh) != new.get(k, fresh))
        if diff:
            changed[key] = diff[:8]
    elif old != new:
        changed[key] = [str(old)[:200], str(new)[:200]]
print("PROBE-JSON " + json.dumps({"loaded": sorted(sys.modules), "changed": changed}))
"""


def probe(module: str) -> dict:
    """Import lab_code.<module> in a fresh interpreter: the modules it loaded, what it changed."""
    # the timeout only keeps a hang from blocking the suite (app imports gradio: several seconds)
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    done = subprocess.run([sys.executable, "-c", PROBE, module, USE.get(module, "")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=180)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("PROBE-JSON ")]
    assert done.returncode == 0 and lines, f"importing lab_code.{module} failed:\n" \
                                           f"{done.stderr[-2000:]}"
    return json.loads(lines[-1].removeprefix("PROBE-JSON "))


def marked(modules: list[str]) -> list:
    return [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=KNOWN[m]))
            if m in KNOWN else m for m in modules]


@pytest.mark.parametrize("module", marked(of_side(PRODUCTION, NEUTRAL)))
def test_a_production_module_loads_no_training_code_and_changes_nothing(module):
    found = probe(module)
    training = {f"lab_code.{m}" for m, side in SIDE.items() if side == TRAINING}
    loaded = sorted(m for m in found["loaded"]
                    if m in training or m == "matplotlib" or m.startswith("matplotlib."))
    assert not loaded, f"importing lab_code.{module} loads {loaded[:6]}"
    if module not in ENTRY_POINTS:
        assert not found["changed"], f"importing lab_code.{module} changes {found['changed']}"


@pytest.mark.parametrize("module", marked(of_side(TRAINING)))
def test_a_training_module_reaches_production_only_through_the_neutral_ones(module):
    found = probe(module)
    production = {f"lab_code.{m}" for m, side in SIDE.items() if side == PRODUCTION}
    loaded = sorted(m for m in found["loaded"] if m in production)
    assert not loaded, f"importing lab_code.{module} loads production modules {loaded}"


def test_every_module_has_a_side():
    missing = [m for m in present() if m not in SIDE]
    assert not missing, f"give {missing} a side in SIDE (tests/test_boundary.py)"
    assert not set(KNOWN) - set(SIDE), "KNOWN names a module that SIDE does not"
