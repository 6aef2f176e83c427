"""Several server processes on one port: each worker listens with SO_REUSEPORT (Linux), so the
kernel spreads new connections over them; stop them all together, and wait until all are up."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from lab_code.serving.logs import READY_EVENT
from lab_code.serving.metrics import mark_dead

MAX_DEFAULT_WORKERS = 4


def wait_for_workers(log: str | os.PathLike, workers: int, timeout: float = 120.0) -> bool:
    """Wait until `workers` processes have logged READY_EVENT in the service's `log` (True) or
    `timeout` passes (False). /health answers once the first worker is up; connections opened
    before the others are ready would all go to it, and keep-alive would keep them there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = Path(log)
        if path.exists() and path.read_text(errors="replace").count(READY_EVENT) >= workers:
            return True
        time.sleep(0.2)
    return False



def default_workers() -> int:
    """One worker process per CPU core this process may use, at most MAX_DEFAULT_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def can_share_port() -> bool:
    """Whether this system spreads one port's connections over several sockets (Linux)."""
    return hasattr(socket, "SO_REUSEPORT") and sys.platform == "linux"


def _serve_one(host: str, port: int, factory: str, settings: dict) -> None:
    """One worker process: its own listening socket on the shared port (SO_REUSEPORT), so the
    kernel spreads new connections evenly over the workers; it serves the app that the
    `factory` ("module:function") builds, with uvicorn's `settings`."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    config = uvicorn.Config(factory, factory=True, **settings)
    uvicorn.Server(config).run(sockets=[sock])


def serve_workers(host: str, port: int, workers: int, factory: str, settings: dict) -> int:
    """Run `workers` processes that each serve `factory`'s app on host:port with SO_REUSEPORT
    (Linux), and stop them all on Ctrl+C or SIGTERM, or when one of them ends.

    Why not uvicorn's own `workers=N`: its workers share one listening socket, and whichever is
    awake first accepts a burst of new connections; with keep-alive, 64 clients that connect at
    once can all stay on one worker while the other idles. With a socket each, the kernel hashes
    every new connection to one of them."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_serve_one, args=(host, port, factory, settings),
                             name=f"worker-{i}")
             for i in range(workers)]
    stopping = threading.Event()

    def stop(signum=None, frame=None) -> None:
        stopping.set()

    previous = signal.signal(signal.SIGTERM, stop)
    for proc in procs:
        proc.start()
    try:
        while not stopping.is_set() and all(p.is_alive() for p in procs):
            stopping.wait(0.5)
    except KeyboardInterrupt:  # Ctrl+C: every worker got it too, and shuts down on its own
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for proc in procs:
            proc.join(settings.get("timeout_graceful_shutdown", 5) + 5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            mark_dead(proc.pid)  # its in-flight and waiting gauges leave the sums
    failed = [p for p in procs if p.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    if failed and not stopping.is_set():
        print(f"error: worker {failed[0].name} stopped with exit code {failed[0].exitcode}: "
              "see its messages above.", file=sys.stderr)
        return 1
    return 0

