"""Dead letters: jobs that failed for good, kept on the worker host so they can be inspected and run again.

A background job that fails simply vanishes in Gearman. Here the worker records every final failure (after the
job's last retry, a time-out, a payload it could not read, an unknown job) in a small sqlite database shared by
the processes of the pool (WAL mode, a short busy timeout, one short transaction per record). ``islandora-job
dead-letters list|show|requeue|purge`` reads and manages it; ``requeue`` submits the stored payload again as a
background job to the function it came from.

The rules that keep the store from losing failures in silence or filling the disk:

* reading (``list``, ``get``) opens the file read-only and never creates it: a ``list`` run as root before the first
  failure must not leave a root-owned database that the service user then cannot write;
* a reader who may not write the directory can still read (see :meth:`DeadLetterStore._select`): the last close of a
  WAL database removes its ``-wal`` and ``-shm`` files, and a ``mode=ro`` open must create the ``-shm`` again
  (SQLITE_READONLY_DIRECTORY, "attempt to write a readonly database"); with no write-ahead log to read, the file is
  then read as ``immutable``, checked for a writer's change around the read (tried again while a worker writes);
* :meth:`DeadLetterStore.record` never raises and never waits long for a lock: a record it cannot write (disk full,
  locked, read-only, corrupt) is logged at ERROR with the function, handle, unique key and the first 4 KiB of the
  payload, and counted in the ``dead_letters_unrecorded`` metric; the job loop goes on;
* a corrupt file is moved aside (``PATH.corrupt-TIMESTAMP``) by the writer, which starts a new one; readers report it;
* stored payloads are cut to ``max_payload`` bytes (the original size is kept), rows older than ``max_age`` are
  deleted, and the oldest rows go when the database holds more than ``max_bytes``; each pruning is logged.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from islandora_job.errors import IslandoraJobError
from islandora_job.worker import metrics

if TYPE_CHECKING:
    from islandora_job.worker.config import DeadLettersConfig

log = logging.getLogger(__name__)

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
    requeued_handle TEXT,
    payload_size INTEGER
)
"""
INDEX = "CREATE INDEX IF NOT EXISTS dead_letters_failed_at ON dead_letters (failed_at)"
COLUMNS: Final = (
    "id, function, name, handle, unique_key, payload, error, attempts, failed_at, requeued_at, requeued_handle,"
    " COALESCE(payload_size, length(payload))"
)

DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024
DEFAULT_MAX_AGE: Final = 30 * 86400.0
DEFAULT_MAX_PAYLOAD: Final = 1024 * 1024
#: How long a record waits for another process's lock before it gives up (and logs the failure).
DEFAULT_LOCK_TIMEOUT: Final = 0.2
#: How much of an unrecorded payload goes into the ERROR log line.
LOGGED_PAYLOAD: Final = 4096
#: How often a reader without write access tries again while a worker writes the store, and the pause that grows
#: by this much each time (about 1.5 s in all: a worker's record takes milliseconds).
_READ_ATTEMPTS: Final = 6
_READ_PAUSE: Final = 0.1
#: The metric event counted for each failure that could not be recorded.
UNRECORDED_EVENT: Final = "dead_letters_unrecorded"
PRUNED_EVENT: Final = "dead_letters_pruned"


class DeadLetterStoreError(IslandoraJobError):
    """The store cannot be read: corrupt, not a database, or not readable. The message names the file."""


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
    #: The payload's size when it failed; larger than ``len(payload)`` when the stored copy was cut.
    payload_size: int

    @property
    def truncated(self) -> bool:
        return self.payload_size > len(self.payload)


def _corrupt(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


class DeadLetterStore:
    """One sqlite file; every method opens, works and closes (processes come and go, no long-lived handles)."""

    def __init__(
        self,
        path: str,
        timeout: float = DEFAULT_LOCK_TIMEOUT,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_age: float = DEFAULT_MAX_AGE,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.max_payload = min(max_payload, max_bytes)
        self._ready = False

    @classmethod
    def from_config(cls, config: DeadLettersConfig) -> DeadLetterStore:
        """The store a worker's ``[dead_letters]`` table describes."""
        return cls(
            config.path,
            config.lock_timeout,
            max_bytes=config.max_bytes,
            max_age=config.max_age,
            max_payload=config.max_payload,
        )

    # -- writing (the worker) -----------------------------------------------------------------------------------

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A writable connection; creates the directory and the schema on first use."""
        if not self._ready:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            if not self._ready:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(SCHEMA)
                columns = {row[1] for row in db.execute("PRAGMA table_info(dead_letters)")}
                if "payload_size" not in columns:  # a store written by an older release
                    db.execute("ALTER TABLE dead_letters ADD COLUMN payload_size INTEGER")
                db.execute(INDEX)
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
        payload_size: int | None = None,
    ) -> int:
        """Store one final failure and return its id; 0 when it could not be stored. Never raises.

        A failure that cannot be stored is logged at ERROR (function, handle, unique key, the first 4 KiB of the
        payload) and counted, so that it is never lost in silence, and the caller's job loop goes on.
        ``payload_size`` is the job's real size when ``payload`` is only its head (an over-size job, whose payload
        the worker skipped unread): the letter keeps it, so that it shows as cut and is not requeued.
        """
        size = max(len(payload), payload_size or 0)
        row = (function, name, handle, unique, payload[: self.max_payload], error, attempts, failed_at or time.time())
        try:
            seen = _inode(self.path)
            try:
                return self._insert(row, size)
            except sqlite3.DatabaseError as exc:
                if not _corrupt(exc):
                    raise
                if _inode(self.path) == seen:  # else another process of the pool has already replaced it
                    self._move_aside(exc)
                return self._insert(row, size)
        except Exception as exc:  # whatever went wrong, the failure is logged, never raised
            self._unrecorded(exc, function, name, handle, unique, payload, size)
            return 0

    def _insert(self, row: tuple[object, ...], payload_size: int) -> int:
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                cursor = db.execute(
                    "INSERT INTO dead_letters (function, name, handle, unique_key, payload, error, attempts,"
                    " failed_at, payload_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, payload_size),
                )
                letter_id = int(cursor.lastrowid or 0)
                pruned = self._prune(db, letter_id)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        if pruned:
            metrics.count_event(PRUNED_EVENT, sum(pruned.values()))
            log.info(
                "dead letters: pruned %d older than %gd and %d over the %d-byte cap in %s",
                pruned["age"],
                self.max_age / 86400,
                pruned["size"],
                self.max_bytes,
                self.path,
            )
        return letter_id

    def _prune(self, db: sqlite3.Connection, keep: int) -> dict[str, int]:
        """Delete rows past the retention, then the oldest rows while the database is over its size cap."""
        aged = db.execute(
            "DELETE FROM dead_letters WHERE failed_at < ? AND id != ?", (time.time() - self.max_age, keep)
        ).rowcount
        oversize = 0
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        while True:
            used = (
                int(db.execute("PRAGMA page_count").fetchone()[0])
                - int(db.execute("PRAGMA freelist_count").fetchone()[0])
            ) * page_size
            if used <= self.max_bytes:
                break
            # Delete about the share of rows that is over the cap (at least one), oldest first; never the new one.
            rows = int(db.execute("SELECT count(*) FROM dead_letters WHERE id != ?", (keep,)).fetchone()[0])
            if rows == 0:
                break
            batch = max(1, min(rows, int(rows * (used - self.max_bytes) / used) + 1))
            oversize += db.execute(
                "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters WHERE id != ? ORDER BY id LIMIT ?)",
                (keep, batch),
            ).rowcount
        counts = {"age": max(aged, 0), "size": oversize}
        return counts if any(counts.values()) else {}

    def _move_aside(self, exc: sqlite3.Error) -> None:
        """Rename a corrupt database (and its WAL) out of the way, so that the next write starts a new one."""
        aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        os.rename(self.path, aside)
        for suffix in ("-wal", "-shm"):
            with suppress(FileNotFoundError):
                os.rename(self.path + suffix, aside + suffix)
        self._ready = False
        log.error("dead letters: %s is corrupt (%s): moved it to %s and started a new store", self.path, exc, aside)

    def _unrecorded(
        self, exc: BaseException, function: str, name: str, handle: str, unique: str, data: bytes, size: int
    ) -> None:
        metrics.count_event(UNRECORDED_EVENT)
        head = data[:LOGGED_PAYLOAD]
        more = f" (first {len(head)} of {size} bytes)" if size > len(head) else ""
        log.error(
            "dead letter NOT recorded in %s (%s): function=%s job=%s handle=%s unique=%s payload%s=%s",
            self.path,
            exc,
            function,
            name,
            handle,
            unique,
            more,
            head.decode("utf-8", "backslashreplace"),
        )

    # -- reading (the CLI) --------------------------------------------------------------------------------------

    def _query(self, options: str, query: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """Run one query on a connection opened with the URI ``options``; sqlite's errors become one line."""
        try:
            db = sqlite3.connect(f"file:{_uri_path(self.path)}?{options}", uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise DeadLetterStoreError(f"{self.path}: cannot open the dead-letter store: {exc}") from None
        try:
            return db.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            if _corrupt(exc):
                raise DeadLetterStoreError(f"{self.path}: the dead-letter store is corrupt ({exc})") from None
            if "no such table" in str(exc):  # an empty file: no dead letters yet
                raise _NoTable from None
            if getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")):
                raise _WalIndexUnwritable(exc) from None
            raise DeadLetterStoreError(f"{self.path}: cannot read the dead-letter store: {exc}") from None
        finally:
            db.close()

    def _select(self, query: str, params: Sequence[object]) -> list[DeadLetter]:
        """Read-only, never creating the store. A WAL database needs its ``-shm`` file even to be read: a reader
        who may not create it (not the service user, the worker having closed the store) reads it immutable."""
        if not os.path.exists(self.path):
            return []
        try:
            rows = self._read(query, params)
        except _NoTable:
            return []
        return [DeadLetter(*row) for row in rows]

    def _read(self, query: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        """``mode=ro``; when that needs a ``-shm`` this user cannot create, the database file alone, as sqlite's
        ``immutable`` reads it: no locks, no ``-shm``, no ``-wal``.

        That is right only when no write-ahead log holds records (they would be missed). A worker recording a
        letter meanwhile writes to a new ``-wal`` (with its ``-shm``: ``mode=ro`` can then use them), and changes the
        file itself only when it checkpoints as it closes; a read during which the file changed is done again. After
        a few tries, a ``-wal`` that still holds records (a worker died, its ``-shm`` gone) is one line naming it.
        """
        wal = self.path + "-wal"
        for attempt in range(_READ_ATTEMPTS):
            time.sleep(_READ_PAUSE * attempt)  # a worker's record takes milliseconds: let it finish
            try:
                return self._query("mode=ro", query, params)
            except _WalIndexUnwritable as exc:
                cause = exc.args[0]
            if _size(wal):
                continue
            before = _fingerprint(self.path)
            try:
                rows = self._query("mode=ro&immutable=1", query, params)
            except _WalIndexUnwritable as exc:
                raise DeadLetterStoreError(f"{self.path}: cannot read the dead-letter store: {exc.args[0]}") from None
            except DeadLetterStoreError:
                if _fingerprint(self.path) == before:
                    raise
                continue  # read while a checkpoint wrote it: read again
            if _fingerprint(self.path) == before:
                return rows
        if _size(wal):
            raise DeadLetterStoreError(
                f"{self.path}: cannot read the dead-letter store: its write-ahead log {wal} holds records and"
                f" this user cannot create {self.path}-shm to read them ({cause}); run as the service user"
            )
        raise DeadLetterStoreError(f"{self.path}: the dead-letter store changed during every read; try again")

    def list(self, *, function: str | None = None, limit: int = 100, include_requeued: bool = True) -> list[DeadLetter]:
        query = f"SELECT {COLUMNS} FROM dead_letters"
        where: list[str] = []
        params: list[object] = []
        if function is not None:
            where.append("function = ?")
            params.append(function)
        if not include_requeued:
            where.append("requeued_at IS NULL")
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id DESC LIMIT ?"
        return self._select(query, (*params, limit))

    def counts(self) -> dict[str, int]:
        """Dead letters not requeued, per function: read-only, never creating the store (as :meth:`list`)."""
        if not os.path.exists(self.path):
            return {}
        query = "SELECT function, count(*) FROM dead_letters WHERE requeued_at IS NULL GROUP BY function"
        try:
            return {str(function): int(n) for function, n in self._read(query, ())}
        except _NoTable:
            return {}

    def get(self, letter_id: int) -> DeadLetter | None:
        letters = self._select(f"SELECT {COLUMNS} FROM dead_letters WHERE id = ?", (letter_id,))
        return letters[0] if letters else None

    # -- managing (the CLI, as an operator) ---------------------------------------------------------------------

    @contextmanager
    def _manager(self) -> Iterator[sqlite3.Connection]:
        """A writable connection for an operator's command; sqlite's errors become one line naming the file."""
        try:
            with self._db() as db:
                yield db
        except sqlite3.Error as exc:
            what = "is corrupt" if _corrupt(exc) else "cannot be changed"
            raise DeadLetterStoreError(f"{self.path}: the dead-letter store {what} ({exc})") from None

    def check_writable(self) -> None:
        """Raise :class:`DeadLetterStoreError` unless this user may change the store: asked before an action that
        cannot be taken back (a requeue submits a job, then marks its letter), so that it is refused whole."""
        with self._manager() as db:
            db.execute("BEGIN IMMEDIATE")  # takes the write lock: needs write access to the file and its -wal
            db.execute("ROLLBACK")

    def mark_requeued(self, letter_id: int, handle: str) -> None:
        with self._manager() as db:
            db.execute(
                "UPDATE dead_letters SET requeued_at = ?, requeued_handle = ? WHERE id = ?",
                (time.time(), handle, letter_id),
            )

    def purge(self, ids: Sequence[int] = (), *, older_than: float | None = None, everything: bool = False) -> int:
        """Delete the given ids, or those that failed more than ``older_than`` seconds ago, or all."""
        if older_than is not None and not 0 <= older_than < math.inf:  # -1 would mean all, nan none
            raise ValueError(f"older_than must be a number of seconds, 0 or more: {older_than!r}")
        if not os.path.exists(self.path):
            return 0
        with self._manager() as db:
            if everything:
                cursor = db.execute("DELETE FROM dead_letters")
            elif older_than is not None:
                cursor = db.execute("DELETE FROM dead_letters WHERE failed_at < ?", (time.time() - older_than,))
            else:
                cursor = db.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])
            return int(cursor.rowcount)


def _size(path: str) -> int:
    """The size of a file, 0 when there is none."""
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _fingerprint(path: str) -> tuple[int, ...] | None:
    """What changes when a file is replaced or written: inode, size, modification and change times."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def _inode(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


class _NoTable(Exception):
    """The file exists but has no table yet."""


class _WalIndexUnwritable(IslandoraJobError):
    """A read-only open needed to write (the WAL's ``-shm`` file, which this user cannot create); never escapes
    :meth:`DeadLetterStore._select`, which reads the file immutable instead."""


def _uri_path(path: str) -> str:
    """A file path as the path part of an sqlite URI (``?`` and ``#`` would end it, ``%`` would escape)."""
    return os.path.abspath(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
