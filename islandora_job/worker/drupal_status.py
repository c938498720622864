"""The Drupal module's job status table, kept for the jobs this worker runs, as ``drush islandora-job-router`` did.

Why: the module's ``islandora_job_submit`` and ``islandora_job_submit_background`` insert a WAITING row holding the
exact payload in ``{prefix}islandora_job_job_status`` and skip any submission whose payload matches a WAITING row.
Only the worker ever clears that row: a worker that ignores the table makes every later identical submission a
silent no-op, and the table grows by a row per distinct job. So, per job whose payload is in the islandora format:

* before it runs, the WAITING row (state 0) whose ``data`` equals the payload becomes RUNNING (1);
* on success that row is deleted; on a final failure (an exception, a plain fail, the time limit, an unknown job)
  it becomes ERROR (-1), which no longer blocks an identical submission.

Which row: the router selected ``status_id`` with ``fetchField()`` (the first row of a SELECT without ORDER BY) and
then updated and deleted by that id: one row, not every match. We take the lowest ``status_id`` (what that SELECT
returns in practice), and only if it is still WAITING when we update it, so two workers never share a row. Any
other match (two submissions racing past the module's check) stays WAITING for the next identical job, as it did.

Matching: ``data`` is ``longblob`` on MySQL and ``bytea`` on PostgreSQL. On MySQL the module binds the payload as is;
on PostgreSQL it binds ``addcslashes($data, '\\\\')``, because its parameter is read in bytea's escape format, which
turns each doubled backslash back into one: there too the row that matches is the one whose bytes equal the payload.
We bind the payload as bytes (a ``bytea`` parameter on PostgreSQL), which compares bytes without any escaping
(``tests/integration/test_drupal_status.py`` shows it against rows the module's PHP code inserted).

The table never costs a job more than a bounded time, and never the job itself: connecting and each statement are
limited to ``[drupal] timeout`` seconds; a database that fails is dropped and left alone for a backoff (doubling up
to ``retry_max``), during which jobs skip the table at no cost; every problem is counted (``drupal_status_errors``,
``drupal_status_rows_missing``) and logged at WARNING at most once a minute per database. A job whose row could not be
updated ran all the same; its outcome is kept (:attr:`_Store.pending`) and written once the database answers again,
so an outage does not leave WAITING rows that would block identical submissions for good.

A row may become visible only after its job ran: ``islandora_job_submit_background`` inserts it in a transaction
that commits when the function returns, after gearmand accepted the job (later still inside a transaction of the
site, which Drupal nests as a savepoint). The drush router's bootstrap hid that; a worker that starts a job within
a millisecond does not. So a job that found no WAITING row has it looked for again once it ends, and a few times
more later, in a background thread (:data:`LATE_DELAYS`), and the row found is deleted or marked. The cost is a few
SELECTs for a job that never had a row (a batch job, another client), none of them before its answer. A job that
timed out is looked for once, at once, after its answer: the watchdog ends the process, and the thread with it.

Drivers are pure Python (PyMySQL, pg8000), imported when a database is first used, so the wheelhouse stays portable.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol
from urllib.parse import unquote, urlsplit

from islandora_job.backoff import Backoff, Throttle
from islandora_job.payload import PayloadError, decode
from islandora_job.worker import metrics
from islandora_job.worker.config import DrupalConfig
from islandora_job.worker.router import Assignment, Outcome, Prepared

log = logging.getLogger(__name__)

#: The module's states (``ISLANDORA_JOB_STATE__*``).
ERROR: Final = -1
WAITING: Final = 0
RUNNING: Final = 1
#: Metric events (islandora_job.worker.metrics).
ERRORS_EVENT: Final = "drupal_status_errors"
MISSING_EVENT: Final = "drupal_status_rows_missing"
#: URL schemes accepted for each kind of database (Drupal's driver names too).
SCHEMES: Final = {"mysql": "mysql", "mariadb": "mysql", "pgsql": "postgresql", "postgres": "postgresql"}
SCHEMES_TEXT: Final = "mysql://USER:PASSWORD@HOST[:PORT]/DB or postgresql://USER:PASSWORD@HOST[:PORT]/DB"
DEFAULT_PORTS: Final = {"mysql": 3306, "postgresql": 5432}
_IDENTIFIER = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?", re.ASCII)
#: Attempts at taking a row another worker took between our SELECT and our UPDATE.
_TAKE_ATTEMPTS: Final = 3
#: Outcomes kept while a database is down (per database and worker process), and written per job once it is back.
MAX_PENDING: Final = 10000
#: The share of ``[drupal] timeout`` after which the server itself abandons a statement (see :func:`_connect`).
SERVER_SHARE: Final = 0.8
REPLAY_PER_JOB: Final = 20
#: When a job that found no WAITING row looks for it again after it ended (seconds after the previous look).
LATE_DELAYS: Final = (0.0, 1.0, 4.0, 25.0)  # looks at once, then at 1, 5 and 30 s
#: Rows looked for late at once, per database and worker process (the oldest dropped beyond).
MAX_LATE: Final = 10000


# --- the database URL ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Database:
    kind: str  # "mysql" or "postgresql"
    host: str
    port: int
    user: str
    password: str
    name: str

    def __repr__(self) -> str:  # never the password, wherever a Database is shown
        return f"Database({self})"

    def __str__(self) -> str:
        return f"{self.kind}://{self.user}@{self.host}:{self.port}/{self.name}"

    @classmethod
    def parse(cls, url: str) -> Database:
        """Raises ValueError with a reason that never holds the password (see :func:`database_problem`)."""
        parsed = _split(url)
        if isinstance(parsed, str):
            raise ValueError(parsed)
        return parsed


def _split(url: str) -> Database | str:
    """The database of ``SCHEME://USER:PASSWORD@HOST[:PORT]/DB``, or why not. The credentials end at the *last*
    ``@``, so a password may hold ``@``, ``/`` and ``:`` as they are; ``%XX`` is decoded in the user, the password
    and the database name (write a ``%`` in a password as ``%25``)."""
    scheme, sep, rest = url.partition("://")
    kind = SCHEMES.get(scheme.lower(), scheme.lower()) if sep else ""
    if kind not in DEFAULT_PORTS:
        return f"must be {SCHEMES_TEXT}: unknown scheme {scheme.lower()!r}" if sep else f"must be {SCHEMES_TEXT}"
    credentials, at, location = rest.rpartition("@")
    user, _, password = credentials.partition(":")
    if not at or not user:
        return f"must be {SCHEMES_TEXT}: no user"
    address, slash, name = location.partition("/")
    if any(mark in location for mark in "?#"):
        return f"must be {SCHEMES_TEXT}: no '?' or '#' part"
    if not slash or not name or "/" in name:
        return f"must be {SCHEMES_TEXT}: no database name after the host"
    try:
        parts = urlsplit(f"//{address}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return f"must be {SCHEMES_TEXT}: bad host or port"
    if not host:
        return f"must be {SCHEMES_TEXT}: no host"
    if port == 0:
        return f"must be {SCHEMES_TEXT}: port 0"
    return Database(kind, host, port or DEFAULT_PORTS[kind], unquote(user), unquote(password), unquote(name))


def redact(url: str) -> str:
    """The URL with its password (if any) replaced by ``***``: what a log line or an error may show."""
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url if sep else "***"
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{location}"


def database_problem(url: str) -> str | None:
    """Why ``url`` is not a usable database URL (never quoting the password), or None."""
    parsed = _split(url)
    return parsed if isinstance(parsed, str) else None


def identifier_problem(name: str, *, empty_ok: bool = False) -> str | None:
    """Why ``name`` cannot be (part of) a table name in a statement, or None: letters, digits, ``_`` and at most one
    ``.`` (Drupal's prefix may name another schema or database: ``shared.``)."""
    if not name:
        return None if empty_ok else "must not be empty"
    candidate = name[:-1] if name.endswith(".") else name
    if not _IDENTIFIER.fullmatch(candidate):
        return f"must be letters, digits and '_' (one '.' at most), not {name!r}"
    return None


# --- the drivers ----------------------------------------------------------------------------------------------------


class _Cursor(Protocol):
    rowcount: int

    def execute(self, operation: str, args: Any = ...) -> Any: ...

    def fetchone(self) -> Any: ...


def _connect(db: Database, timeout: float) -> Any:
    """A DB-API connection in autocommit mode, every socket operation limited to ``timeout`` seconds.

    The server is told to give up first (at :data:`SERVER_SHARE` of the timeout), so a statement waiting for a
    lock fails there rather than going on after we stopped waiting and applying when the lock is released
    (MariaDB: ``max_statement_time``; MySQL, which lacks it: the InnoDB lock wait, in whole seconds;
    PostgreSQL: ``statement_timeout``)."""
    where = {"host": db.host, "port": db.port, "user": db.user, "password": db.password, "database": db.name}
    server_limit = timeout * SERVER_SHARE
    if db.kind == "mysql":
        import pymysql  # type: ignore[import-untyped]

        limits = {"connect_timeout": timeout, "read_timeout": timeout, "write_timeout": timeout}
        lock_wait = f"SET SESSION innodb_lock_wait_timeout = {max(1, math.ceil(server_limit))}"
        connection = pymysql.connect(**where, **limits, autocommit=True, charset="utf8mb4", init_command=lock_wait)
        if "mariadb" in connection.get_server_info().lower():
            with connection.cursor() as cursor:
                cursor.execute(f"SET SESSION max_statement_time = {server_limit:.3f}")
        return connection
    import pg8000.dbapi  # type: ignore[import-untyped]

    connection = pg8000.dbapi.connect(**where, timeout=timeout, application_name="islandora-job-worker")
    connection.autocommit = True
    cursor = connection.cursor()
    cursor.execute(f"SET statement_timeout = {max(1, int(server_limit * 1000))}")
    cursor.close()
    return connection


# --- one database -------------------------------------------------------------------------------------------------


class _Store:
    """One database: a lazily made connection, dropped on any error and retried after a backoff."""

    def __init__(self, db: Database, table: str, timeout: float, retry_max: float, connect: Callable[..., Any]) -> None:
        self.db, self.table, self.timeout = db, table, timeout
        self._connect = connect
        self._connection: Any = None
        self._lock = threading.Lock()  # the watchdog thread may mark a timed-out job
        self.backoff = Backoff(initial=min(1.0, retry_max), cap=retry_max)
        self.retry_at = 0.0
        self.throttle = Throttle()
        self.missing_throttle = Throttle()
        #: Outcomes not written (the database failed): (status_id, or the payload when the row was never taken,
        #: success). Written first once the database answers again, a few per job, so an outage leaves no row
        #: WAITING for a job that ran (which would block its identical submissions for good).
        self.pending: deque[tuple[int | bytes, bool]] = deque(maxlen=MAX_PENDING)
        #: Rows not found yet for jobs that ended: (when to look, looks so far, order, payload, success), a heap.
        self.late: list[tuple[float, int, int, bytes, bool]] = []
        self._late_order = 0
        self._late_wakeup = threading.Condition()
        self._late_thread: threading.Thread | None = None

    def take(self, payload: bytes) -> int | Literal[False] | None:
        """Mark the oldest WAITING row holding ``payload`` RUNNING: its status_id, None when there is none, False
        when the database could not be asked."""
        status_id: int | Literal[False] | None = self._run("mark RUNNING", lambda cursor: self._take(cursor, payload))
        return status_id

    def _take(self, cursor: _Cursor, payload: bytes) -> int | None:
        select = f"SELECT status_id FROM {self.table} WHERE data = %s AND state = %s ORDER BY status_id LIMIT 1"
        update = f"UPDATE {self.table} SET state = %s WHERE status_id = %s AND state = %s"
        for _attempt in range(_TAKE_ATTEMPTS):
            cursor.execute(select, (payload, WAITING))
            row = cursor.fetchone()
            if row is None:
                return None
            cursor.execute(update, (RUNNING, row[0], WAITING))
            if cursor.rowcount == 1:
                return int(row[0])
        return None

    def finish(self, row: int | bytes, ok: bool) -> bool | None:
        """Delete the row (``ok``) or mark it ERROR; ``row`` is its status_id, or the payload of a row not taken
        (yet). True: done; None: no WAITING row holds the payload; False: the database failed, and the outcome is
        kept in :attr:`pending`, written once it answers again."""
        done: bool | None = self._run("delete" if ok else "mark ERROR", lambda cursor: self._finish(cursor, row, ok))
        if done is False:
            if len(self.pending) == self.pending.maxlen:
                self.warn(ERRORS_EVENT, self.throttle, f"{MAX_PENDING} outcomes wait already; the oldest is dropped")
            self.pending.append((row, ok))
        return done

    def _finish(self, cursor: _Cursor, row: int | bytes, ok: bool) -> Literal[True] | None:
        """True once the row is deleted or marked; None when ``row`` is a payload no WAITING row holds."""
        status_id = self._take(cursor, row) if isinstance(row, bytes) else row
        if status_id is None:
            return None
        if ok:
            cursor.execute(f"DELETE FROM {self.table} WHERE status_id = %s", (status_id,))
        else:
            cursor.execute(f"UPDATE {self.table} SET state = %s WHERE status_id = %s", (ERROR, status_id))
        return True

    def finish_late(self, payload: bytes, ok: bool) -> None:
        """The outcome of a job that found no WAITING row when it started: looked for after each of
        :data:`LATE_DELAYS` in a background thread, so the job's answer never waits for it; counted as missing when
        none ever shows."""
        with self._late_wakeup:
            if len(self.late) >= MAX_LATE:
                heapq.heappop(self.late)
            self._late_order += 1
            heapq.heappush(self.late, (time.monotonic() + LATE_DELAYS[0], 1, self._late_order, payload, ok))
            if self._late_thread is None:
                self._late_thread = threading.Thread(target=self._look_late, name="drupal-status-late", daemon=True)
                self._late_thread.start()
            self._late_wakeup.notify()

    def _look_late(self) -> None:
        """The background looks of :meth:`finish_late`, in due order; ends when none is left."""
        while True:
            with self._late_wakeup:
                if not self.late:
                    self._late_thread = None
                    return
                wait = self.late[0][0] - time.monotonic()
                if wait > 0:
                    self._late_wakeup.wait(wait)
                    continue
                _due, looks, _order, payload, ok = heapq.heappop(self.late)
            if self.finish(payload, ok) is not None:
                continue  # done, or kept in pending by a failing database
            if looks < len(LATE_DELAYS):
                with self._late_wakeup:
                    self._late_order += 1
                    due = time.monotonic() + LATE_DELAYS[looks]
                    heapq.heappush(self.late, (due, looks + 1, self._late_order, payload, ok))
            else:
                self.missing(payload)

    def missing(self, payload: bytes) -> None:
        """No WAITING row, not even after the job ended: normal for batches (which the module does not track) and
        for clients other than the module; a sign of trouble when it is every job (wrong database, prefix, site)."""
        self.warn(
            MISSING_EVENT,
            self.missing_throttle,
            f"no WAITING row for a job's payload ({len(payload)} bytes, {payload[:80]!r}) (normal for "
            "islandora_job_submit_batch and other clients; check [drupal] if it is every job)",
        )

    def _replay(self, cursor: _Cursor) -> None:
        """Write up to :data:`REPLAY_PER_JOB` outcomes that waited; each leaves the list only once written."""
        for _n in range(min(REPLAY_PER_JOB, len(self.pending))):
            row, ok = self.pending[0]
            self._finish(cursor, row, ok)
            self.pending.popleft()

    def _run(self, what: str, work: Callable[[_Cursor], Any]) -> Any:
        """``work`` on a connection; False when the database could not be used (the problem is counted, logged)."""
        now = time.monotonic()
        if now < self.retry_at:
            self._problem(what, "still backing off after an error")
            return False
        if not self._lock.acquire(timeout=self.timeout):
            self._problem(what, "the connection is busy")
            return False
        try:
            if self._connection is None:
                self._connection = self._connect(self.db, self.timeout)
                if self.backoff.attempts:
                    log.info("drupal status table: %s reachable again", self.db)
                self.backoff.reset()
                self.throttle.reset()
            cursor = self._connection.cursor()
            try:
                self._replay(cursor)
                return work(cursor)
            finally:
                cursor.close()
        except Exception as exc:  # any driver error, timeout or refusal: the job goes on without the table
            self._drop()
            self.retry_at = time.monotonic() + self.backoff.next_delay()
            self._problem(what, _describe(exc))
            return False
        finally:
            self._lock.release()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too: it is gone either way
                connection.close()

    def _problem(self, what: str, reason: str) -> None:
        self.warn(
            ERRORS_EVENT,
            self.throttle,
            f"could not {what}: {reason}; the job runs without it, its row keeps its state; retrying with backoff",
        )

    def warn(self, event: str, throttle: Throttle, text: str) -> None:
        """Count ``event``; log ``text`` at WARNING unless ``throttle`` holds it back (once a minute at most)."""
        metrics.count_event(event)
        held = throttle.allow(time.monotonic())
        if held is not None:
            more = f" ({held} more since the last line)" if held else ""
            log.warning("drupal status table %s on %s: %s%s", self.table, self.db, text, more)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


# --- what the worker calls ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """The job's row for :meth:`StatusTable.end`: its status_id once marked RUNNING, or the payload when the
    database could not be asked (the outcome then goes to the row found later, see :attr:`_Store.pending`)."""

    store: _Store
    status_id: int | bytes
    missing: bool = False  # no WAITING row when the job started: it may be committed later (finish_late)


class StatusTable:
    """The worker's hook (``process.JobTracker``): :meth:`begin` before a job runs, :meth:`end` with its outcome.

    Neither ever raises, and each costs a job at most ``[drupal] timeout`` per statement.
    ``command_functions``: the Gearman functions of ``[[command_jobs]]`` entries with ``status_table = true``; the
    rows of other command entries belong to their command (the drush router keeps them).
    """

    def __init__(
        self,
        config: DrupalConfig,
        command_functions: Collection[str] = (),
        connect: Callable[..., Any] = _connect,
    ) -> None:
        table = f"{config.prefix}{config.table}"
        self._stores: dict[str, _Store] = {}
        self._default = self._store(config.database, table, config, connect) if config.database else None
        self._sites: Mapping[str, _Store] = {
            site: self._store(url, table, config, connect) for site, url in config.sites.items()
        }
        self._commands = frozenset(command_functions)

    def _store(self, url: str, table: str, config: DrupalConfig, connect: Callable[..., Any]) -> _Store:
        store = self._stores.get(url)
        if store is None:
            store = self._stores[url] = _Store(Database.parse(url), table, config.timeout, config.retry_max, connect)
        return store

    def begin(self, assignment: Assignment, prepared: Prepared | Outcome) -> Row | None:
        """Mark the job's WAITING row RUNNING (also for a job failing before it runs: :meth:`end` follows)."""
        try:
            if isinstance(prepared, Prepared):
                if prepared.external is not None and assignment.function not in self._commands:
                    return None  # the command keeps its rows itself
                if prepared.spec is not None and prepared.payload is None:
                    return None  # a raw-bytes job: not the module's payload
            known = prepared.payload if isinstance(prepared, Prepared) else None
            site = (known or decode(assignment.data)).site  # the router's decoding when it has one
        except PayloadError:
            return None
        except Exception:  # pragma: no cover - a bug here must not cost the job
            log.exception("drupal status table: cannot inspect job handle=%s", assignment.handle)
            return None
        store = self._sites.get(site or "", self._default)
        if store is None:
            return None
        status_id = store.take(assignment.data)
        if status_id is None:
            return Row(store, assignment.data, missing=True)
        return Row(store, assignment.data if status_id is False else status_id)

    def end(self, row: Row, ok: bool, *, last: bool = False) -> None:
        """Delete the row (success) or mark it ERROR (failure). ``last``: the process ends right after (the
        watchdog's path), so a row missing at the start is looked for now, once, not in the background thread that
        dies with the process."""
        try:
            if row.missing and isinstance(row.status_id, bytes):
                if not last:
                    row.store.finish_late(row.status_id, ok)
                elif row.store.finish(row.status_id, ok) is None:
                    row.store.missing(row.status_id)
            else:
                row.store.finish(row.status_id, ok)
        except Exception:  # pragma: no cover - a bug here must not cost the job
            log.exception("drupal status table: cannot finish a row of %s", row.store.db)


def from_config(
    config: DrupalConfig, command_jobs: Collection[tuple[Collection[str], bool]] = ()
) -> StatusTable | None:
    """The tracker for a worker, or None when no database is configured. ``command_jobs``: (names, status_table) of
    each ``[[command_jobs]]`` entry."""
    if not config.database and not config.sites:
        return None
    functions = [name for names, keep in command_jobs if keep for name in names]
    return StatusTable(config, functions)
