"""A cache of recent answers, keyed by the image's bytes and the model's version."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict


class ResultCache:
    """The texts of recently read images, keyed by the SHA-256 of their bytes and the model's
    version, at most `max_entries` (least recently used out first); safe across threads.

    Identical bytes always give the same text with the same model, so a hit is never wrong. What
    it costs: a caller can tell (by the time, or the `cache;desc=hit` timing) that someone sent
    the same image before, so a shared cache suits public images, not private documents."""

    def __init__(self, max_entries: int, version: str = "") -> None:
        self.max_entries, self.version = max_entries, version
        self._items: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def key(self, data: bytes) -> str:
        return hashlib.sha256(self.version.encode() + b"\0" + data).hexdigest()

    def get(self, key: str) -> tuple[str, int] | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: str, text: str, lines: int) -> None:
        with self._lock:
            self._items[key] = (text, lines)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
