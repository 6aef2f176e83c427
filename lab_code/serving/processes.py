"""Servers in the background: start `python -m MODULE ...` as a child process, wait until it
answers, and stop it cleanly. Used by the lessons and tests for the serverless service and the UI;
`lab_code.serving.ports` finds the free port to give it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def start_background(args: list[str], ready_url: str, log: str | os.PathLike,
                     timeout: float = 120.0, env: dict[str, str] | None = None,
                     cpus: set[int] | None = None,
                     cwd: str | os.PathLike | None = None) -> subprocess.Popen:
    """Run `python -m ARGS...` in the background (output to the file `log`) and return once
    `ready_url` answers below 500; stop it with `stop_background`. `env` adds variables; `cpus`
    pins it (and what it starts) to those CPU cores (Linux), e.g. {0} for a one-core machine;
    `cwd` is the folder it runs in (Python looks there first for `-m` modules)."""
    import requests  # only the readiness poll needs it

    package_root = str(Path(__file__).resolve().parents[2])  # this lab_code, installed or not
    # a PYTHONPATH in `env` comes first: it can serve another checkout's lab_code
    paths = [(env or {}).get("PYTHONPATH"), package_root, os.environ.get("PYTHONPATH")]
    child_env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    Path(log).write_bytes(b"")
    with open(log, "ab") as out:  # appending: the service's processes each add whole lines
        # its own process group, so that stopping it also stops any workers it started
        proc = subprocess.Popen([sys.executable, "-m", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=child_env, start_new_session=True,
                                preexec_fn=pin, cwd=cwd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(log).read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"`python -m {' '.join(args)}` exited with code {proc.returncode}: "
                               + " | ".join(tail))
        try:
            if requests.get(ready_url, timeout=2).status_code < 500:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop_background(proc)
    raise RuntimeError(f"`python -m {' '.join(args)}` did not answer at {ready_url} within "
                       f"{timeout:.0f} s: see {log}.")


def stop_background(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """Stop a process from `start_background` (SIGTERM, then SIGKILL) and return its exit code;
    whatever it started in its process group (uvicorn's workers) gets SIGKILL after it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
    return proc.returncode
