"""Several server processes on one port: each worker listens with SO_REUSEPORT (Linux), so the
kernel spreads new connections over them; a worker that dies (the OOM killer, a crash) is
replaced while the others go on serving, up to a bound; stop them all together, and wait until
all are up."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from lab_code.serving.logs import READY_EVENT, log_request
from lab_code.serving.metrics import mark_dead

MAX_DEFAULT_WORKERS = 4
MAX_RESTARTS, RESTART_WINDOW_S = 5, 60.0  # more restarts than this within the window: give up


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


def _serve_one(host: str, port: int, factory: str, settings: dict, go=None) -> None:
    """One worker process: its own listening socket on the shared port (SO_REUSEPORT), so the
    kernel spreads new connections evenly over the workers; it serves the app that the
    `factory` ("module:function") builds, with uvicorn's `settings`.

    Given `go` (an Event), it is a spare: it imports the factory's module (torch and the app's
    code: most of a worker's start-up) and waits until `go` is set, or until the process that
    started it is gone (then it exits)."""
    import importlib

    import uvicorn

    if go is not None:
        parent = os.getppid()
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the runner's to act on
        importlib.import_module(factory.split(":")[0])
        while not go.wait(1.0):
            if os.getppid() != parent:  # the runner died: nobody will ever need this spare
                return
        signal.signal(signal.SIGINT, interrupt)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    config = uvicorn.Config(factory, factory=True, **settings)
    uvicorn.Server(config).run(sockets=[sock])


def serve_workers(host: str, port: int, workers: int, factory: str, settings: dict) -> int:
    """Run `workers` processes that each serve `factory`'s app on host:port with SO_REUSEPORT
    (Linux), and stop them all on Ctrl+C or SIGTERM. A worker that dies is replaced at once
    (its in-flight requests are lost; the other workers' are not), and the log says so in JSON
    lines ("worker_exited", "worker_started"); after MAX_RESTARTS within RESTART_WINDOW_S
    something is wrong with every worker, so it stops them all and returns 1.

    The replacement is a spare that has already imported torch and the app, most of a
    worker's start-up (10 of 16 s on a busy 2-core machine) and of its memory (importing torch
    alone: ~180 of ~200 MB PSS here), so it only loads the model before it serves (4-5 s there),
    and a new spare is started behind it.

    Why not uvicorn's own `workers=N`: its workers share one listening socket, and whichever is
    awake first accepts a burst of new connections; with keep-alive, 64 clients that connect at
    once can all stay on one worker while the other idles. With a socket each, the kernel hashes
    every new connection to one of them."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")

    def start(name: str, go=None):
        proc = context.Process(target=_serve_one, args=(host, port, factory, settings, go),
                               name=name)
        proc.start()
        return proc

    def start_spare():
        go = context.Event()
        proc = start("spare", go)
        log_request(event="spare_started", pid=proc.pid)
        return proc, go

    stopping = threading.Event()

    def stop(signum=None, frame=None) -> None:
        stopping.set()

    previous = signal.signal(signal.SIGTERM, stop)
    procs = [start(f"worker-{i}") for i in range(workers)]
    spare, go = start_spare()
    restarts: list[float] = []
    gave_up = None
    try:
        while not stopping.is_set() and gave_up is None:
            for i, proc in enumerate([*procs, spare]):
                if proc.is_alive() or stopping.is_set():
                    continue
                now = time.monotonic()
                restarts[:] = [t for t in restarts if now - t < RESTART_WINDOW_S] + [now]
                log_request(event="worker_exited", worker=proc.name, pid=proc.pid,
                            exit_code=proc.exitcode, restarts_in_window=len(restarts))
                mark_dead(proc.pid)  # its in-flight and waiting gauges leave the sums
                if len(restarts) > MAX_RESTARTS:
                    gave_up = proc
                    break
                if proc is not spare:  # the spare takes the dead worker's place
                    if spare.is_alive():
                        go.set()
                        procs[i], spare.name = spare, f"worker-{i}"
                        log_request(event="worker_started", worker=spare.name, pid=spare.pid,
                                    replaces=proc.pid, was_spare=True)
                    else:
                        procs[i] = start(f"worker-{i}")
                        log_request(event="worker_started", worker=procs[i].name,
                                    pid=procs[i].pid, replaces=proc.pid, was_spare=False)
                spare, go = start_spare()
            stopping.wait(0.2)
    except KeyboardInterrupt:  # Ctrl+C: every worker got it too, and shuts down on its own
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in [*procs, spare]:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for proc in [*procs, spare]:
            proc.join(settings.get("timeout_graceful_shutdown", 5) + 5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            mark_dead(proc.pid)  # its in-flight and waiting gauges leave the sums
    if gave_up is not None:
        print(f"error: workers stopped {len(restarts)} times within {RESTART_WINDOW_S:.0f} s "
              f"(the last, {gave_up.name}, with exit code {gave_up.exitcode}): see the messages "
              "above; the service is stopped.", file=sys.stderr)
        return 1
    return 0
