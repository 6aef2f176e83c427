"""The CPU time processes have used so far, read from Linux's /proc: a service's (its process
group: the process a benchmark started in a session of its own, and its workers) or a given set
of processes' (a CPU hog's). Over a load run, CPU seconds per wall second are the cores a process
got: beside other work the kernel decides that share, and it explains what requests per second
alone cannot."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path


def _cpu_s(keep: Callable[[int, list[str]], bool]) -> float:
    """User + system seconds of every process whose (pid, stat fields after its name) `keep`
    accepts; processes that end meanwhile are skipped."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if keep(int(stat.parent.name), fields):  # fields: state, ppid, pgrp, ... utime, stime
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by every process in the process group `pgid`
    (the service and its workers); 0.0 for a group with no process."""
    return _cpu_s(lambda pid, fields: int(fields[2]) == pgid)


def processes_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds (user + system) used so far by the processes `pids` that still run."""
    wanted = set(pids)
    return _cpu_s(lambda pid, fields: pid in wanted) if wanted else 0.0
