"""How many threads the model's arithmetic may use, set on the thread that runs the model.

OpenMP's thread count belongs to each thread, not to the process. `torch.set_num_threads(1)` on
the main thread leaves every other thread at the default: a model called from a worker thread (a
ThreadPoolExecutor, Gradio's queue, Mangum's helper thread, LitServe's loop) starts a team of one
OpenMP thread per core inside oneDNN's kernels, and those threads spin while they wait for each
other. Two such processes on two cores, beside anything else the machine runs, fight over the
cores and a 7 ms line takes a second. So a recognizer that is given a thread count sets it on
each thread that calls it (`PerThread`), and a server sets the environment before it starts its
worker processes (`limit_children`), so that torch, OpenMP and OpenBLAS read it when they load.

The other pools, checked: ONNX Runtime (what the services run) keeps its count in the session,
whichever thread calls it, and lab_code.artifacts.load_onnx gives it one thread and no spinning.
numpy's OpenBLAS starts a thread per core when it loads, but the preprocessing's few small matrix
products stay below its threading threshold (their threads used no CPU time over 200 real-world
images); the environment keeps it at one all the same. The service's own pools are bounded: one
model thread per process (lab_code.serving.worker) and at most ServiceLimits.max_decoding images
decoded at once.
"""

from __future__ import annotations

import os
import threading

# Read by the libraries when they load: OpenMP (torch's operators), OpenBLAS (numpy's), MKL.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def serving_threads() -> int:
    """Threads per model call for a server: $OMP_NUM_THREADS when set to a whole number, else 1.

    One thread per call: a server reads many small requests at once, one per worker process,
    and a small model gains little from splitting each operator across cores it must share."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def limit_children(threads: int, env: dict[str, str] | None = None) -> dict[str, str]:
    """Set THREAD_VARIABLES to `threads` in `env` (default: this process's environment, which the
    processes it starts inherit) unless already set; returns `env`. Libraries read these only
    when they load, so this binds processes started afterwards, not this one."""
    env = os.environ if env is None else env
    for name in THREAD_VARIABLES:
        env.setdefault(name, str(threads))
    return env


class PerThread:
    """Calls `torch.set_num_threads(threads)` once on each thread that runs `ensure()`, so the
    count holds on whichever thread runs the model (None: leave torch as it is)."""

    def __init__(self, threads: int | None) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}.")
        self.threads = threads
        self._done = threading.local()

    def ensure(self) -> None:
        if self.threads is None or getattr(self._done, "set", False):
            return
        import torch

        torch.set_num_threads(self.threads)
        self._done.set = True
