"""Dead letters: jobs that failed for good, kept on the worker host so they can be inspected and run again.

A background job that fails simply vanishes in Gearman. Here the worker records every final failure (after the
job's last retry, a time-out, a payload it could not read, an unknown job) in a small sqlite database shared by
the processes of the pool (WAL mode, a busy timeout, one short transaction per record). ``islandora-job
dead-letters list|show|requeue|purge`` reads and manages it; ``requeue`` submits the stored payload again as a
background job to the function it came from.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    function TEXT NOT NULL,
    name TEXT NOT NULL,
    handle TEXT NOT NULL,
    unique_key TEXT NOT NULL,
    payload BLOB NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL,
    requeued_at REAL,
    requeued_handle TEXT
)
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    function: str
    name: str
    handle: str
    unique_key: str
    payload: bytes
    error: str
    attempts: int
    failed_at: float
    requeued_at: float | None
    requeued_handle: str | None


class DeadLetterStore:
    """One sqlite file; every method opens, works and closes (processes come and go, no long-lived handles)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._ready = False

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            if not self._ready:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(SCHEMA)
                self._ready = True
            yield db
        finally:
            db.close()

    def record(
        self,
        *,
        function: str,
        name: str,
        handle: str,
        unique: str,
        payload: bytes,
        error: str,
        attempts: int,
        failed_at: float | None = None,
    ) -> int:
        with self._db() as db:
            cursor = db.execute(
                "INSERT INTO dead_letters (function, name, handle, unique_key, payload, error, attempts, failed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (function, name, handle, unique, payload, error, attempts, failed_at or time.time()),
            )
            return int(cursor.lastrowid or 0)

    def list(self, *, function: str | None = None, limit: int = 100, include_requeued: bool = True) -> list[DeadLetter]:
        query = "SELECT * FROM dead_letters"
        where, params = [], []
        if function is not None:
            where.append("function = ?")
            params.append(function)
        if not include_requeued:
            where.append("requeued_at IS NULL")
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id DESC LIMIT ?"
        with self._db() as db:
            rows = db.execute(query, (*params, limit)).fetchall()
        return [DeadLetter(*row) for row in rows]

    def get(self, letter_id: int) -> DeadLetter | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM dead_letters WHERE id = ?", (letter_id,)).fetchone()
        return None if row is None else DeadLetter(*row)

    def mark_requeued(self, letter_id: int, handle: str) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE dead_letters SET requeued_at = ?, requeued_handle = ? WHERE id = ?",
                (time.time(), handle, letter_id),
            )

    def purge(self, ids: Sequence[int] = (), *, older_than: float | None = None, everything: bool = False) -> int:
        """Delete the given ids, or those that failed more than ``older_than`` seconds ago, or all."""
        with self._db() as db:
            if everything:
                cursor = db.execute("DELETE FROM dead_letters")
            elif older_than is not None:
                cursor = db.execute("DELETE FROM dead_letters WHERE failed_at < ?", (time.time() - older_than,))
            else:
                cursor = db.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])
            return int(cursor.rowcount)
