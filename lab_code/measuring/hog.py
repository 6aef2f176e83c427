"""A bounded CPU hog: one busy process per core for a few seconds, so a benchmark or a test can
measure a service on a busy machine (a real host is never quiet) and leave nothing behind.

    python -m lab_code.measuring hog --seconds 10      # what `top -H` and the service then show

Each process spins in plain Python until its own deadline, so it ends on time even if whatever
started it dies; `cpu_hog` also stops them when its block ends, and waits until they are gone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
MAX_SECONDS = 600.0  # a hog longer than this is a mistake, not a measurement


AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")


def autogroup() -> bool | None:
    """Whether Linux shares the CPU between sessions before threads (autogroup): a service in a
    session of its own then gets about an equal share beside a hog in another, however many
    threads it runs. None where the kernel does not say (not Linux, or built without it)."""
    try:
        return AUTOGROUP.read_text().strip() == "1"
    except OSError:
        return None


def cores() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def start(seconds: float, processes: int | None = None) -> list[subprocess.Popen]:
    """Start `processes` (default: one per core) busy processes that end by themselves after
    `seconds`; `stop` ends them sooner."""
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be above 0 and at most {MAX_SECONDS:.0f}, not {seconds}.")
    count = cores() if processes is None else processes
    if count < 1:
        raise ValueError(f"processes must be at least 1, not {count}.")
    code = SPIN.format(seconds=float(seconds))
    return [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(count)]


def stop(procs: list[subprocess.Popen]) -> None:
    """End the hog's processes now and wait until each is gone."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()


@contextlib.contextmanager
def cpu_hog(seconds: float, processes: int | None = None) -> Iterator[list[subprocess.Popen]]:
    """`with cpu_hog(10):` one busy process per core (or `processes`) while the block runs, at
    most `seconds`; all of them are gone when it ends, however it ends."""
    procs = start(seconds, processes)
    try:
        yield procs
    finally:
        stop(procs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab_code.measuring hog",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="how long (default: 10, at most 600)")
    parser.add_argument("--processes", type=int, default=None,
                        help=f"busy processes (default: one per core, here {cores()})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with cpu_hog(args.seconds, args.processes) as procs:
            print(f"{len(procs)} busy processes for {args.seconds:g} s (Ctrl+C stops them)",
                  flush=True)
            while any(p.poll() is None for p in procs):
                time.sleep(0.1)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
