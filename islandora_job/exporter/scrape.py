"""Ask every gearmand for its queue, once per scrape, in parallel, each within one deadline.

A gearmand that is down, frozen (SIGSTOP), trickling bytes or flooding lines costs the scrape at most its
deadline and a bounded amount of memory (:data:`MAX_ANSWER_BYTES`, and :data:`~islandora_job.admin.MAX_LINES`
lines), and shows as ``up 0``; the other servers' figures are served as usual. Scrapes that arrive together (two
Prometheus servers, a person reloading the page) share one round of questions: :class:`Scraper` keeps the last
round for :attr:`Scraper.min_interval` seconds, so a flood of HTTP requests cannot become a flood of admin sessions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from islandora_job.address import ServerAddress
from islandora_job.admin import AdminClient, FunctionStatus, PriorityStatus
from islandora_job.errors import ConnectionLost, IslandoraJobError

log = logging.getLogger(__name__)

#: An admin answer from one server larger than this is refused (the server shows as down): ``status`` lines are
#: ~50 bytes, so this is some 40,000 functions, far more than any site has.
MAX_ANSWER_BYTES = 2 * 1024 * 1024
#: Default deadline for one server's whole exchange (connect, ``status``, ``prioritystatus``).
DEFAULT_TIMEOUT = 3.0
#: Default number of functions kept per server (the busiest first); past it the rest are counted as dropped, so a
#: server that names a million functions cannot blow up every scrape's size.
DEFAULT_MAX_FUNCTIONS = 5000


@dataclass(frozen=True, slots=True)
class FunctionRow:
    """One function on one server: gearmand's ``status`` figures and, where it gave them, queued by priority."""

    function: str
    queued: int
    running: int
    workers: int
    high: int | None = None
    normal: int | None = None
    low: int | None = None

    @property
    def waiting(self) -> int:
        return max(self.queued - self.running, 0)

    @property
    def unserved(self) -> bool:
        """Jobs wait and no worker can take them: the failure this exporter exists to show."""
        return self.waiting > 0 and self.workers == 0


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    """One server's answer, or why there is none (``error``)."""

    server: str
    up: bool
    seconds: float
    functions: tuple[FunctionRow, ...] = ()
    #: Functions left out past ``max_functions``.
    dropped: int = 0
    error: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One round of questions to every server."""

    taken_at: float
    seconds: float
    servers: tuple[ServerSnapshot, ...]
    #: Dead letters per function from the worker's store, when the exporter was given a worker configuration.
    dead_letters: dict[str, int] | None = None
    dead_letters_error: str = ""
    dead_letters_path: str = ""


def rows(
    statuses: Sequence[FunctionStatus], priorities: Sequence[PriorityStatus], limit: int
) -> tuple[list[FunctionRow], int]:
    """Join ``status`` and ``prioritystatus`` by function; keep the ``limit`` busiest functions, count the rest."""
    by_function = {p.function: p for p in priorities}
    joined: list[FunctionRow] = []
    for status in statuses:
        priority = by_function.get(status.function)
        joined.append(
            FunctionRow(
                status.function,
                status.total,
                status.running,
                status.workers,
                *((priority.high, priority.normal, priority.low) if priority else ()),
            )
        )
    if len(joined) > limit:
        # the unserved first, then by queue length: what an operator must see is never the part dropped
        joined.sort(key=lambda row: (not row.unserved, -row.queued, -row.workers, row.function))
        dropped = len(joined) - limit
        joined = joined[:limit]
    else:
        dropped = 0
    joined.sort(key=lambda row: row.function)
    return joined, dropped


def ask(
    address: ServerAddress, timeout: float, max_functions: int, max_answer: int = MAX_ANSWER_BYTES
) -> ServerSnapshot:
    """One admin session with one server: ``status`` then ``prioritystatus``, all within ``timeout`` seconds."""
    started = time.monotonic()
    deadline = started + timeout
    statuses: list[FunctionStatus] = []
    priorities: list[PriorityStatus] = []
    try:
        with AdminClient(address, timeout=timeout, max_answer=max_answer, answer_timeout=timeout) as admin:
            admin.answer_timeout = max(deadline - time.monotonic(), 0.001)
            statuses = admin.status()
            admin.answer_timeout = max(deadline - time.monotonic(), 0.001)
            try:
                priorities = admin.priority_status()
            except IslandoraJobError:
                if time.monotonic() >= deadline:
                    raise
                priorities = []  # a gearmand without ``prioritystatus``: the totals still count
    except (IslandoraJobError, OSError, ValueError) as exc:
        took = time.monotonic() - started
        if isinstance(exc, ConnectionLost) and took >= timeout * 0.99:  # frozen, overloaded, or trickling bytes
            reason = f"no complete admin answer within the {timeout:g}s deadline"
        else:
            reason = str(exc) or type(exc).__name__
        return ServerSnapshot(str(address), False, took, error=reason)
    functions, dropped = rows(statuses, priorities, max_functions)
    return ServerSnapshot(str(address), True, time.monotonic() - started, tuple(functions), dropped)


class Scraper:
    """Asks every server in parallel; a round younger than ``min_interval`` seconds is served again as it is."""

    def __init__(
        self,
        servers: Sequence[ServerAddress],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_functions: int = DEFAULT_MAX_FUNCTIONS,
        min_interval: float = 0.5,
        dead_letters: Callable[[], dict[str, int]] | None = None,
        dead_letters_path: str = "",
    ) -> None:
        self.servers = tuple(servers)
        self.timeout = timeout
        self.max_functions = max_functions
        self.min_interval = min_interval
        self.dead_letters = dead_letters
        self.dead_letters_path = dead_letters_path
        self._lock = threading.Lock()
        self._last: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        with self._lock:  # callers that arrive during a round wait for it and share it
            last = self._last
            if last is not None and time.monotonic() - last.taken_at < self.min_interval:
                return last
            self._last = self._take()
            return self._last

    def _log_changes(self, servers: tuple[ServerSnapshot, ...]) -> None:
        """One journal line when a server goes down or comes back (not one per scrape)."""
        before = {s.server: s.up for s in self._last.servers} if self._last else {}
        for server in servers:
            if before.get(server.server, True) and not server.up:
                log.warning("gearmand %s: %s", server.server, server.error)
            elif before.get(server.server) is False and server.up:
                log.info("gearmand %s answers again", server.server)

    def _take(self) -> Snapshot:
        started = time.monotonic()
        results: dict[int, ServerSnapshot] = {}

        def one(index: int, address: ServerAddress) -> None:
            results[index] = ask(address, self.timeout, self.max_functions)

        threads = [
            threading.Thread(target=one, args=(i, a), name=f"scrape {a}", daemon=True)
            for i, a in enumerate(self.servers)
        ]
        for thread in threads:
            thread.start()
        deadline = started + self.timeout + 1.0  # each exchange ends itself by its deadline; this is a backstop
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        servers = tuple(
            results.get(i) or ServerSnapshot(str(a), False, self.timeout, error=f"no answer within {self.timeout:g}s")
            for i, a in enumerate(self.servers)
        )
        self._log_changes(servers)
        letters: dict[str, int] | None = None
        letters_error = ""
        if self.dead_letters is not None:
            try:
                letters = self.dead_letters()
            except IslandoraJobError as exc:
                letters_error = str(exc)
        return Snapshot(
            taken_at=time.monotonic(),
            seconds=time.monotonic() - started,
            servers=servers,
            dead_letters=letters,
            dead_letters_error=letters_error,
            dead_letters_path=self.dead_letters_path,
        )
