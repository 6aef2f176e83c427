"""How much the service takes on at once, and for how long: its limits, and the bounded counter
that admits a request or answers 503 (back-pressure, instead of a queue that grows without end)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from lab_code import images, urlfetch

MAX_BODY_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit (6 MB)


@dataclass(frozen=True)
class ServiceLimits:
    """How much the service takes on at once, and for how long."""

    deadline_s: float = 25.0  # one request, from its body to its answer (504 beyond)
    max_waiting: int = 64  # requests admitted at once (waiting or running); 503 beyond
    max_fetches: int = 8  # image_url downloads at once; 503 beyond (slow upstreams hold them)
    # images decoded and split into lines at once, each in a worker process of its own that the
    # deadline can stop (lab_code.serving.decoding): each may take up to ~700 MB
    max_decoding: int = 2
    decode_cpu_s: int = 10  # CPU seconds one image may take to decode and split (422 beyond)
    decode_memory_mb: int = 1536  # memory one decoding worker may use (422 beyond)
    retry_after_s: int = 2  # the Retry-After a 503 carries
    stuck_after_s: float = 60.0  # /health says unhealthy while one model call runs longer
    cache_entries: int = 0  # texts of recent images kept by content hash (0: no cache)
    body_deadline_s: float = 20.0  # a request's whole body must arrive within this (408)
    max_buffered_bytes: int = 64 * 2**20  # request bodies held at once, all together (503)
    allowed_hosts: tuple[str, ...] = ()  # host names to answer to besides IP addresses, localhost
    url_policy: urlfetch.UrlPolicy = field(default_factory=urlfetch.UrlPolicy)
    work: images.WorkLimits = images.LIMITS



class Counter:
    """A count of things in progress with a ceiling, safe across threads."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling, self.value, self._lock = ceiling, 0, threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.value >= self.ceiling:
                return False
            self.value += 1
            return True

    def give(self) -> None:
        with self._lock:
            self.value -= 1

    def slot(self):
        """Take one; returns a give-back that works once however often it is called, or None
        when the ceiling is reached."""
        if not self.take():
            return None
        given = threading.Event()

        def give_once() -> None:
            with self._lock:
                if given.is_set():
                    return
                given.set()
                self.value -= 1

        return give_once
