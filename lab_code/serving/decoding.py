"""Decoding where a deadline can stop it: a few worker processes that turn image bytes into line
arrays (or a checked, shrunk picture), each with a ceiling on its memory and on the CPU time one
image may take, killed and replaced when a request's deadline passes.

Why processes: a thread cannot be stopped. A decode that runs past its request's deadline in a
thread keeps running after the 504, and keeps its decode slot: two crafted JPEGs once held both
slots for 30 s while /health said ok. A process can be killed; the operating system then takes
back all its memory at once, which a long-lived server process never quite gets back from glibc.

    pool = DecodePool(size=2)
    lines = pool.lines(data, "the upload", images.LIMITS, deadline=time.monotonic() + 10)

The workers run this module's `serve` (numpy and Pillow, never torch: ~40 MB each) and speak a
small framed protocol over their stdin and stdout: a JSON header and raw bytes, no pickle, so a
worker that a hostile file took over cannot hand the server code to run.
Each worker sets its own limits (RLIMIT_AS for memory, RLIMIT_CPU per image); a worker that
ends a job holding more than `recycle_mb` of memory is replaced. Every replacement is logged.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lab_code import images, preprocess
from lab_code.serving.logs import log_request

MEMORY_MB = 1536  # address space of one worker: a 4000 x 4000 page peaks near 700 MB resident
CPU_S = 10  # CPU seconds one image may take (the largest real pages here: ~3.5 s)
RECYCLE_MB = 256  # a worker still holding more than this after a job is replaced
START_TIMEOUT_S = 60.0  # a new worker must say it is ready within this
MAX_FAILED_STARTS = 5  # in a row: then the pool is broken (and /health says so)
_HEAD = struct.Struct(">I")
EXIT_MEMORY = 75  # a worker's exit status when a job's bytes did not fit in its memory


class DecodeTimeout(TimeoutError):
    """The request's deadline passed while its image waited for, or was in, a worker."""


class DecoderError(RuntimeError):
    """A bug: the worker failed on something other than the image (a 500)."""


class DecoderUnavailable(images.ImageInputError):
    """No worker could be started (503)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=503)


# --- the framed protocol: a JSON header, then raw blobs ----------------------------------------
def _write_frame(fd: int, header: dict[str, Any], blobs: list[bytes] = ()) -> None:
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]}).encode()
    for part in (_HEAD.pack(len(head)), head, *blobs):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            wait = deadline - time.monotonic()
            poller = select.poll()  # not select(): a busy server's descriptors pass 1024
            poller.register(fd, select.POLLIN)
            if wait <= 0 or not poller.poll(wait * 1000):
                raise DecodeTimeout
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float | None = None) -> tuple[dict[str, Any], list[bytes]]:
    (size,) = _HEAD.unpack(_read_exactly(fd, _HEAD.size, deadline))
    if size > 1 << 20:
        raise EOFError  # not our protocol
    header = json.loads(_read_exactly(fd, size, deadline))
    return header, [_read_exactly(fd, n, deadline) for n in header.pop("blobs")]


def _image_frame(img: Image.Image) -> tuple[dict[str, Any], bytes]:
    if img.mode in ("P", "PA"):  # a palette does not travel as raw bytes; RGBA keeps its look
        img = img.convert("RGBA")
    return {"mode": img.mode, "size": list(img.size)}, img.tobytes()


def _image_from(header: dict[str, Any], raw: bytes) -> Image.Image:
    return Image.frombytes(header["mode"], tuple(header["size"]), raw)


# --- the worker side --------------------------------------------------------------------------
def _task(header: dict[str, Any], blobs: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    limits = images.WorkLimits(**header["limits"])
    timings: dict[str, float] = {}
    stats: dict[str, float] = {}
    if header["task"] == "lines":  # image bytes -> line arrays (and the picture's statistics)
        inspect = None
        if header.get("stats"):
            from lab_code.serving.inputs import image_stats

            inspect = lambda img: stats.update(image_stats(img))  # noqa: E731
        arrays = images.decode_lines(blobs[0], header["name"], limits, timings, inspect)
    elif header["task"] == "image_lines":  # a picture (raw pixels) -> line arrays
        arrays = images.page_lines(_image_from(header, blobs[0]), limits)
    elif header["task"] == "image":  # image bytes -> a checked picture, shrunk to MAX_SIDE
        img = preprocess.shrink(images.open_image_bytes(blobs[0], header["name"], limits))
        meta, raw = _image_frame(img)
        return {"ok": True, **meta}, [raw]
    else:
        raise ValueError(f"unknown task {header['task']!r}")
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]
    return {"ok": True, "shapes": [list(a.shape) for a in arrays], "timings": timings,
            "stats": stats}, [a.tobytes() for a in arrays]


def _resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def serve(memory_mb: int, cpu_s: int, recycle_mb: int) -> int:
    """The worker's loop: read a job from stdin, answer on stdout, until stdin closes."""
    import resource

    out = os.dup(1)  # the protocol's own descriptor; stray prints go to stderr instead
    os.dup2(2, 1)
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU must not write a core file
    _write_frame(out, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            header, blobs = _read_frame(0)
        except EOFError:  # the server closed the pipe (or died): nothing left to do
            return 0
        except MemoryError:  # the job itself does not fit: the server reads the exit status
            return EXIT_MEMORY
        used = sum(os.times()[:2])
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        soft = math.ceil(used + cpu_s)
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard < 0 else min(soft, hard), hard))
        out_of_memory = False
        try:
            reply, out_blobs = _task(header, blobs)
        except images.ImageInputError as err:
            reply, out_blobs = {"ok": False, "status": err.status, "message": str(err)}, []
        except MemoryError:
            out_of_memory = True
            reply, out_blobs = {"ok": False, "status": 422, "message": (
                f"{header.get('name', 'the image')} needs more than {memory_mb} MB to decode: "
                "send a smaller image.")}, []
        except Exception as err:  # a bug, not the image: the server answers 500
            import traceback

            traceback.print_exc()  # to stderr: the service's log
            reply, out_blobs = {"ok": False, "status": 500, "message": type(err).__name__}, []
        del blobs
        reply["rss_mb"] = round(_resident_mb(), 1)
        reply["retire"] = out_of_memory or reply["rss_mb"] > recycle_mb
        _write_frame(out, reply, out_blobs)
        if reply["retire"]:
            return 0


# A worker's whole program: no `python -m` entry, so no command a user might run by mistake.
WORKER_COMMAND = ("import sys; from lab_code.serving.decoding import serve; "
                  "sys.exit(serve(*map(int, sys.argv[1:4])))")


# --- the server side --------------------------------------------------------------------------
class _Worker:
    def __init__(self, memory_mb: int, cpu_s: int, recycle_mb: int) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                           os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER_COMMAND, str(memory_mb), str(cpu_s), str(recycle_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        self.pid = self.proc.pid
        self.ready = False  # said so, and was handed to the pool
        self.busy_since: float | None = None

    def wait_ready(self, timeout: float) -> None:
        header, _ = _read_frame(self.proc.stdout.fileno(), time.monotonic() + timeout)
        if not header.get("ready"):
            raise EOFError

    def send(self, header: dict[str, Any], blobs: list[bytes]) -> None:
        _write_frame(self.proc.stdin.fileno(), header, blobs)

    def receive(self, deadline: float) -> tuple[dict[str, Any], list[bytes]]:
        return _read_frame(self.proc.stdout.fileno(), deadline)

    def kill(self) -> int | None:
        """Stop the worker (SIGKILL if it is still running) and return its exit status."""
        if self.proc.poll() is None:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        return self.proc.wait()


class DecodePool:
    """`size` decoding worker processes. Each call takes an idle worker (waiting for one until
    the deadline), hands it one image, and waits for the answer until the deadline; a worker
    that has not answered by then is killed and a new one started in the background."""

    def __init__(self, size: int = 2, memory_mb: int = MEMORY_MB, cpu_s: int = CPU_S,
                 recycle_mb: int = RECYCLE_MB) -> None:
        self.size, self.memory_mb, self.cpu_s, self.recycle_mb = size, memory_mb, cpu_s, \
            recycle_mb
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._started = self._closed = False
        self.replaced = 0  # workers replaced so far (killed at a deadline, died, retired)
        self.failed_starts = 0  # in a row
        self.broken: str | None = None  # why no worker can start, once that is so

    # -- starting and replacing workers
    def start(self) -> DecodePool:
        """Start the workers (in the background; calls wait for them). Safe to call again."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        for _ in range(self.size):
            self._spawn_soon()
        return self

    def _spawn_soon(self) -> None:
        threading.Thread(target=self._spawn, name="decoder-start", daemon=True).start()

    def _spawn(self) -> None:
        while not self._closed:
            worker = None
            try:
                worker = _Worker(self.memory_mb, self.cpu_s, self.recycle_mb)
                with self._lock:
                    self._all.add(worker)
                worker.wait_ready(START_TIMEOUT_S)
            except (OSError, EOFError, ValueError, DecodeTimeout) as err:
                if worker is not None:
                    self._forget(worker)
                if self._closed:  # closed while it started: not a failure
                    return
                self.failed_starts += 1
                log_request(event="decoder_start_failed", error=type(err).__name__,
                            failed_in_a_row=self.failed_starts)
                if self.failed_starts >= MAX_FAILED_STARTS:
                    self.broken = (f"{self.failed_starts} decoding workers in a row failed to "
                                   "start")
                    return
                time.sleep(0.5 * 2 ** self.failed_starts)
                continue
            self.failed_starts = 0
            if self._closed:
                self._forget(worker)
                return
            worker.ready = True
            self._idle.put(worker)
            return

    def _forget(self, worker: _Worker) -> int | None:
        with self._lock:
            self._all.discard(worker)
        return worker.kill()

    def _replace(self, worker: _Worker, reason: str, **fields: Any) -> None:
        status = self._forget(worker)
        self.replaced += 1
        log_request(event="decoder_replaced", reason=reason, pid=worker.pid, exit_status=status,
                    **fields)
        if not self._closed:
            self._spawn_soon()

    # -- one job
    def _run(self, header: dict[str, Any], blobs: list[bytes],
             deadline: float) -> tuple[dict[str, Any], list[bytes]]:
        if self._closed:
            raise DecoderUnavailable("The image decoder has been shut down: try again later.")
        self.start()
        name = header.get("name", "the image")
        worker = self._take(deadline)
        while worker.proc.poll() is not None:  # died while idle (the OOM killer, a kill)
            self._replace(worker, "died while idle")
            worker = self._take(deadline)
        worker.busy_since = time.monotonic()
        try:
            worker.send(header, blobs)
            reply, out = worker.receive(deadline)
        except DecodeTimeout:
            self._replace(worker, "deadline", name=name)
            raise
        except (OSError, EOFError, ValueError):  # it died: CPU limit, memory, the OOM killer
            try:
                status = worker.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                status = worker.kill()
            self._replace(worker, "died", name=name)
            if status == -signal.SIGXCPU:
                raise images.ImageInputError(f"{name} needs more than {self.cpu_s} s of CPU to "
                                             "decode: send a smaller or simpler image.") from None
            if status == EXIT_MEMORY:
                raise images.ImageInputError(f"{name} needs more than {self.memory_mb} MB to "
                                             "decode: send a smaller image.") from None
            raise images.ImageInputError(f"{name} stopped the decoder (exit status {status}): "
                                         "send an ordinary PNG or JPEG.") from None
        finally:
            worker.busy_since = None
        if reply.pop("retire", False):
            self._replace(worker, "memory", rss_mb=reply.get("rss_mb"))
        else:
            self._idle.put(worker)
        if not reply["ok"] and reply["status"] == 500:
            raise DecoderError(f"{reply['message']} in the decoding worker")
        if not reply["ok"]:
            raise images.ImageInputError(reply["message"], status=reply["status"])
        return reply, out

    def _take(self, deadline: float) -> _Worker:
        """An idle worker, waiting for one until `deadline` (DecodeTimeout)."""
        while True:
            if self.broken:
                raise DecoderUnavailable(f"The image decoder is unavailable ({self.broken}): "
                                         "try again later.")
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise DecodeTimeout
            try:
                return self._idle.get(timeout=min(wait, 1.0))  # wake up to notice `broken`
            except queue.Empty:
                continue

    def lines(self, data: bytes, name: str, limits: images.WorkLimits, deadline: float,
              timings: dict[str, float] | None = None,
              stats: dict[str, float] | None = None) -> list[np.ndarray]:
        """images.decode_lines(data, name, limits) in a worker, by `deadline` (time.monotonic);
        `stats`, when given, gets the decoded picture's statistics (lab_code.serving.inputs).
        What `images.look` refuses from the bytes and the header is refused here, at once,
        without waiting for a worker."""
        images.look(data, name, limits)
        reply, blobs = self._run({"task": "lines", "name": name, "limits": asdict(limits),
                                  "stats": stats is not None}, [data], deadline)
        if timings is not None:
            timings.update(reply.get("timings", {}))
        if stats is not None:
            stats.update(reply.get("stats", {}))
        return _arrays(reply, blobs)

    def image(self, data: bytes, name: str, limits: images.WorkLimits,
              deadline: float) -> Image.Image:
        """images.open_image_bytes then preprocess.shrink, in a worker, by `deadline` (what
        `images.look` refuses is refused here, at once)."""
        images.look(data, name, limits)
        reply, blobs = self._run({"task": "image", "name": name, "limits": asdict(limits)},
                                 [data], deadline)
        return _image_from(reply, blobs[0])

    def image_lines(self, img: Image.Image, limits: images.WorkLimits,
                    deadline: float) -> list[np.ndarray]:
        """images.page_lines(img, limits) in a worker, by `deadline`."""
        images.check_size(*img.size, limits=limits)  # before copying a giant's pixels over
        meta, raw = _image_frame(img)
        reply, blobs = self._run({"task": "image_lines", "name": "The image",
                                  "limits": asdict(limits), **meta}, [raw], deadline)
        return _arrays(reply, blobs)

    # -- what /health reports, and the end
    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            workers = list(self._all)
        busy = [now - w.busy_since for w in workers if w.busy_since is not None]
        return {"workers": len(workers), "busy": len(busy),
                "longest_s": round(max(busy, default=0.0), 2), "replaced": self.replaced,
                **({"broken": self.broken} if self.broken else {})}

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> bool:
        """Start the pool if need be and wait until all its workers are ready (True), or until
        `timeout` passes or the pool breaks (False)."""
        self.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.broken:
            with self._lock:
                if sum(w.ready for w in self._all) >= self.size:
                    return True
            time.sleep(0.05)
        return False

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._all]

    def close(self) -> None:
        self._closed = True
        with self._lock:
            workers, self._all = list(self._all), set()
        for worker in workers:
            worker.kill()


def _arrays(reply: dict[str, Any], blobs: list[bytes]) -> list[np.ndarray]:
    return [np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()
            for shape, raw in zip(reply["shapes"], blobs, strict=True)]


_SHARED: dict[tuple[int, int, int, int], DecodePool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(size: int = 2, memory_mb: int = MEMORY_MB, cpu_s: int = CPU_S,
                recycle_mb: int = RECYCLE_MB) -> DecodePool:
    """One pool per setting per process (every app a process builds shares it), started on
    first use and stopped when the process exits."""
    key = (size, memory_mb, cpu_s, recycle_mb)
    with _SHARED_LOCK:
        pool = _SHARED.get(key)
        if pool is None or pool._closed:
            pool = _SHARED[key] = DecodePool(*key)
    return pool


@atexit.register
def _close_shared() -> None:
    for pool in list(_SHARED.values()):
        pool.close()

