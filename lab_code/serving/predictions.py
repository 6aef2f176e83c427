"""The prediction log: one row per prediction, in SQLite (the default) or PostgreSQL (when several
instances must share one log), written by the same code.

A row holds what a prediction was, never what it said: an id, the time, the model version, the
stage latencies, the input's statistics (lab_code.serving.inputs) and the length and confidence
of the output. No image and no text: those reach the store only as a user's correction, with
their consent (lab_code.serving.corrections, table `corrections`).

    python -m lab_code.serving predictions --db watch.sqlite   # count, and show the last rows

Rows go to the database on a background thread, in small batches, so a request never waits for
a disk; when the writer falls behind, rows are dropped and counted rather than queued without
end. The log keeps at most `max_rows` rows and nothing older than `retention_days`.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_ENV = "WATCH_DB"  # where the service keeps its log: a SQLite path or a postgresql:// URL
OFF = "off"
STAGE_COLUMNS = ("read", "decode", "lines", "queue", "model", "handler")
# column -> SQL type (the same words mean the same in SQLite and PostgreSQL)
COLUMNS: dict[str, str] = {
    "id": "TEXT PRIMARY KEY", "time": "DOUBLE PRECISION NOT NULL", "model_version": "TEXT",
    "source": "TEXT",  # "api" (the HTTP backend) or "ui" (the Gradio page)
    "width": "INTEGER", "height": "INTEGER", "bytes": "INTEGER", "lines": "INTEGER",
    "brightness": "DOUBLE PRECISION", "contrast": "DOUBLE PRECISION",
    "ink_share": "DOUBLE PRECISION", "chars": "INTEGER",
    "confidence": "DOUBLE PRECISION", "min_confidence": "DOUBLE PRECISION",
    **{f"ms_{stage}": "DOUBLE PRECISION" for stage in STAGE_COLUMNS},
}
CORRECTION_COLUMNS: dict[str, str] = {
    "prediction_id": "TEXT PRIMARY KEY", "time": "DOUBLE PRECISION NOT NULL",
    "model_version": "TEXT", "text": "TEXT NOT NULL", "image": "BLOB NOT NULL",
    "consent": "TEXT NOT NULL",  # the sentence the user agreed to, stored with their data
}


def default_db() -> Path:
    """$XDG_DATA_HOME/lab-code/watch.sqlite (~/.local/share/... when unset): the user's data
    folder, never the code's."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "lab-code" / "watch.sqlite"


def new_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class LogLimits:
    max_rows: int = 1_000_000  # predictions kept (about 200 MB of SQLite); the oldest go first
    retention_days: float = 30.0  # predictions older than this are deleted
    max_corrections: int = 10_000  # corrections kept; the oldest go first
    correction_retention_days: float = 365.0
    queue_rows: int = 10_000  # rows waiting for the writer; beyond, rows are dropped and counted
    batch_rows: int = 200  # rows written in one transaction
    prune_every: int = 5_000  # rows written between two prunings


class Store:
    """One database connection, SQLite or PostgreSQL, and the few statements the log needs.
    `url` is a file path (or sqlite:///path) or postgresql://user@host:port/db (psycopg 3)."""

    def __init__(self, url: str | os.PathLike) -> None:
        text = str(url)
        self.url = text
        self.postgres = text.startswith(("postgresql://", "postgres://"))
        if self.postgres:
            try:
                import psycopg
            except ImportError as err:
                raise RuntimeError("A postgresql:// log needs psycopg: pip install "
                                   "'psycopg[binary]', then try again.") from err
            self.conn = psycopg.connect(text, autocommit=False, connect_timeout=10)
            self.mark, self.blob = "%s", "BYTEA"
        else:
            path = Path(text.removeprefix("sqlite:///").removeprefix("sqlite:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, timeout=10, check_same_thread=False,
                                        isolation_level=None)  # explicit transactions
            # WAL: readers never block the writer, and several processes may write in turn
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=10000")
            self.mark, self.blob = "?", "BLOB"
        self._lock = threading.Lock()
        self._create()

    def _create(self) -> None:
        for table, columns in (("predictions", COLUMNS), ("corrections", CORRECTION_COLUMNS)):
            cols = ", ".join(f"{k} {v.replace('BLOB', self.blob)}" for k, v in columns.items())
            self.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
        self.execute("CREATE INDEX IF NOT EXISTS predictions_time ON predictions (time)")

    def execute(self, sql: str, params: Sequence[Any] = (), many: bool = False,
                fetch: bool = False) -> list[tuple]:
        """Run one statement (or one per row of `params` with many) in its own transaction."""
        sql = sql.replace("?", self.mark)
        with self._lock:
            if self.postgres:
                with self.conn.cursor() as cur:
                    try:
                        if many:
                            cur.executemany(sql, params)
                        else:
                            cur.execute(sql, params)
                        rows = cur.fetchall() if fetch else []
                        self.conn.commit()
                    except Exception:
                        self.conn.rollback()
                        raise
                return rows
            cur = self.conn.cursor()
            reading = sql.lstrip().upper().startswith("SELECT")
            try:
                if not reading:  # take the write lock now, not halfway (no deadlock)
                    cur.execute("BEGIN IMMEDIATE")
                if many:
                    cur.executemany(sql, params)
                else:
                    cur.execute(sql, params)
                rows = cur.fetchall() if fetch else []
                if not reading:
                    cur.execute("COMMIT")
            except Exception:
                if self.conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()
            return rows

    def close(self) -> None:
        with self._lock:
            self.conn.close()


def open_store(url: str | os.PathLike | None) -> Store | None:
    """The store `url` names (None or "off": no log)."""
    if url is None or str(url) == OFF:
        return None
    return Store(url)


class PredictionLog:
    """Writes prediction rows on a background thread, in batches; reads them back for the drift
    check, the report and the tests. `on_drop(n)` is told about rows it had to drop."""

    def __init__(self, store: Store, limits: LogLimits | None = None,
                 on_drop: Callable[[int], None] | None = None) -> None:
        self.store, self.limits, self.on_drop = store, limits or LogLimits(), on_drop
        self._queue: queue.Queue = queue.Queue(self.limits.queue_rows)
        self._since_prune = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._write_loop, name="prediction-log",
                                        daemon=True)
        self._thread.start()

    def write(self, row: dict[str, Any]) -> None:
        """Queue one row (never blocks: a full queue drops it and counts the drop)."""
        values = tuple(row.get(k) for k in COLUMNS)
        try:
            self._queue.put_nowait(values)
        except queue.Full:
            self.dropped += 1
            if self.on_drop:
                self.on_drop(1)

    def _write_loop(self) -> None:
        insert = (f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES "
                  f"({', '.join('?' for _ in COLUMNS)}) ON CONFLICT (id) DO NOTHING")
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = [first], False
            while len(batch) < self.limits.batch_rows:
                try:
                    item = self._queue.get(timeout=0.05)
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                self.store.execute(insert, batch, many=True)
            except Exception as err:  # a database that went away must not take the service
                self.dropped += len(batch)
                if self.on_drop:
                    self.on_drop(len(batch))
                print(json.dumps({"event": "prediction_log_error",
                                  "error": f"{type(err).__name__}: {str(err)[:200]}"}),
                      file=sys.stderr, flush=True)
            finally:
                for _ in batch:
                    self._queue.task_done()
            self._since_prune += len(batch)
            if self._since_prune >= self.limits.prune_every:
                self._since_prune = 0
                self.prune()
            if stop:
                self._queue.task_done()
                return

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is written (True), or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(10)
        self.store.close()

    def prune(self, now: float | None = None) -> None:
        """Delete what is past the limits: rows older than the retention, then the oldest rows
        beyond max_rows; the same for corrections."""
        now = time.time() if now is None else now
        limits = self.limits
        for table, days, most in (("predictions", limits.retention_days, limits.max_rows),
                                  ("corrections", limits.correction_retention_days,
                                   limits.max_corrections)):
            self.store.execute(f"DELETE FROM {table} WHERE time < ?", (now - days * 86400,))
            self.store.execute(
                f"DELETE FROM {table} WHERE time < (SELECT time FROM {table} ORDER BY time DESC "
                f"LIMIT 1 OFFSET ?)", (most - 1,))

    # --- reading back -------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.store.execute("SELECT COUNT(*) FROM predictions", fetch=True)[0][0])

    def recent(self, limit: int = 500, since: float | None = None,
               columns: Iterable[str] = tuple(COLUMNS)) -> list[dict[str, Any]]:
        """The last `limit` rows (newest last), optionally only those after `since`."""
        return recent_rows(self.store, limit, since, columns)

    def find(self, prediction_id: str) -> dict[str, Any] | None:
        rows = self.store.execute(f"SELECT {', '.join(COLUMNS)} FROM predictions WHERE id = ?",
                                  (prediction_id,), fetch=True)
        return dict(zip(COLUMNS, rows[0], strict=True)) if rows else None

    def wait_for(self, prediction_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The row of `prediction_id`, waiting up to `timeout` seconds for it: a service writes
        its rows a moment after it answers, from another process. LookupError if none comes."""
        deadline = time.monotonic() + timeout
        where = "the PostgreSQL log" if self.store.postgres else self.store.url  # no password
        while (row := self.find(prediction_id)) is None:
            if time.monotonic() >= deadline:
                raise LookupError(f"No row for prediction {prediction_id} in {where} "
                                  f"after {timeout:g} s: check that the service was started with "
                                  "this log (--watch-db), and look in its output for "
                                  "prediction_log_error.")
            time.sleep(0.02)
        return row


def recent_rows(store: Store, limit: int = 500, since: float | None = None,
                columns: Iterable[str] = tuple(COLUMNS)) -> list[dict[str, Any]]:
    columns = [c for c in columns if c in COLUMNS]
    where, params = ("WHERE time >= ?", [since]) if since is not None else ("", [])
    rows = store.execute(f"SELECT {', '.join(columns)} FROM predictions {where} "
                         f"ORDER BY time DESC LIMIT ?", (*params, int(limit)), fetch=True)
    return [dict(zip(columns, r, strict=True)) for r in reversed(rows)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab_code.serving predictions",
        description="Show what the prediction log holds: how many rows, and the last few.")
    parser.add_argument("--db", default=os.environ.get(DB_ENV) or str(default_db()),
                        help=f"a SQLite file or postgresql:// URL (default: ${DB_ENV}, else "
                             f"{default_db().name} in your data folder)")
    parser.add_argument("--last", type=int, default=5, metavar="N", help="rows to show (5)")
    return parser


def open_for_command(db: str) -> Store | None:
    """The log a command reads (`--db`), or None after one sentence on stderr saying why not:
    the shared start of the predictions and corrections commands."""
    if not db.startswith("postgres") and not Path(db).is_file():
        print(f"error: No prediction log at {db}: start the service first, or pass --db.",
              file=sys.stderr)
        return None
    try:
        return Store(db)
    except Exception as err:  # psycopg's many errors, sqlite3's too
        print(f"error: Could not open {db} ({type(err).__name__}): check the path or URL.",
              file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = open_for_command(args.db)
    if store is None:
        return 1
    total = store.execute("SELECT COUNT(*) FROM predictions", fetch=True)[0][0]
    corrections = store.execute("SELECT COUNT(*) FROM corrections", fetch=True)[0][0]
    print(f"{total} predictions, {corrections} corrections")
    for row in recent_rows(store, args.last):
        print(json.dumps(row))
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
