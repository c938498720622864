"""Job metrics across a pool of processes, without prometheus-client's multiprocess files.

prometheus-client's multiprocess mode keeps one set of mmap files per process in a directory that has to be
cleaned by hand; a recycling pool leaves one set per child ever started (Archivematica's workers piled them up in
/tmp). Here each child keeps plain in-memory totals (:class:`JobStats`) and sends a snapshot of them to the
supervisor over its status pipe, at most once a second while busy and whenever it goes idle or exits. The
supervisor (:class:`PoolMetrics`) keeps the latest snapshot of each live child and folds a child's last snapshot
into a "retired" total when the child exits, so counters never go backwards across recycling and no file is ever
written. A child that crashes loses at most its last second of counts.

``prometheus-client`` is optional (the ``metrics`` extra): only :func:`serve` imports it.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from islandora_job.address import ServerAddress
from islandora_job.errors import ConfigError

log = logging.getLogger(__name__)


class DeadLetterCounts(Protocol):
    """What the metrics need of the dead-letter store (:class:`~islandora_job.worker.deadletters.DeadLetterStore`,
    which imports this module and so is not imported here)."""

    path: str

    def counts(self) -> Mapping[str, int]: ...


class CountsWhenChanged:
    """A store's counts, read again only when its file or its write-ahead log changed (a stat per call): a scrape
    does not scan a large store for nothing, and a new letter shows at the next scrape. Read errors propagate."""

    def __init__(self, store: DeadLetterCounts) -> None:
        self.store = store
        self._last: tuple[tuple[tuple[int, int], ...], Mapping[str, int]] | None = None

    def __call__(self) -> dict[str, int]:
        seen = tuple(_stamp(self.store.path + suffix) for suffix in ("", "-wal"))
        if self._last is None or self._last[0] != seen:
            self._last = None
            self._last = (seen, dict(self.store.counts()))
        return dict(self._last[1])


def _stamp(path: str) -> tuple[int, int]:
    """(modification time, size) of a file, zeros when absent: changes whenever sqlite writes it."""
    try:
        stat = os.stat(path)
    except OSError:
        return (0, 0)
    return (stat.st_mtime_ns, stat.st_size)


#: Events counted anywhere in this process (:func:`count_event`), e.g. a dead letter that could not be written.
#: A child sends them with every snapshot of its :class:`JobStats`, so they reach the supervisor's endpoint.
_PROCESS_EVENTS: dict[str, int] = {}
#: Prometheus name and help of each event; an event not listed here is exported as ``islandora_job_<event>``.
EVENTS: Final = {
    "dead_letters_unrecorded": "Final failures that could not be written to the dead-letter store (logged at ERROR)",
    "dead_letters_pruned": "Dead letters deleted by the store's retention or size cap",
    "drupal_status_errors": "Drupal status table updates skipped: database unreachable, slow or failing (logged)",
    "drupal_status_rows_missing": "Jobs with no WAITING row in the Drupal status table (batches, other clients)",
}


def count_event(name: str, n: int = 1) -> None:
    """Count an event of this process; it is reported with the process's next snapshot of job totals."""
    _PROCESS_EVENTS[name] = _PROCESS_EVENTS.get(name, 0) + n


def process_events() -> dict[str, int]:
    """A copy of this process's event counts."""
    return dict(_PROCESS_EVENTS)


BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)


@dataclass(slots=True)
class JobStats:
    """Totals of one process: jobs by (name, outcome), and a duration histogram by name."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    #: name → [count per bucket (last = +Inf)], and the sum of durations.
    buckets: dict[str, list[int]] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)
    #: event → count (see :func:`count_event`).
    events: dict[str, int] = field(default_factory=dict)

    def observe(self, name: str, outcome: str, seconds: float) -> None:
        key = (name, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1
        buckets = self.buckets.get(name)
        if buckets is None:
            buckets = self.buckets[name] = [0] * (len(BUCKETS) + 1)
        buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sums[name] = self.sums.get(name, 0.0) + seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": [[name, outcome, n] for (name, outcome), n in self.counts.items()],
            "buckets": self.buckets,
            "sums": self.sums,
            # This process's events: a JobStats is a process's snapshot, and events happen outside jobs too.
            "events": {**self.events, **process_events()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobStats:
        stats = cls()
        for name, outcome, n in data.get("counts", []):
            stats.counts[(str(name), str(outcome))] = int(n)
        for name, buckets in data.get("buckets", {}).items():
            if isinstance(buckets, list) and len(buckets) == len(BUCKETS) + 1:
                stats.buckets[str(name)] = [int(b) for b in buckets]
        for name, total in data.get("sums", {}).items():
            stats.sums[str(name)] = float(total)
        for name, n in data.get("events", {}).items():
            stats.events[str(name)] = int(n)
        return stats

    def add(self, other: JobStats) -> None:
        for key, n in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + n
        for name, buckets in other.buckets.items():
            mine = self.buckets.setdefault(name, [0] * (len(BUCKETS) + 1))
            for index, n in enumerate(buckets):
                mine[index] += n
        for name, total in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + total
        for name, n in other.events.items():
            self.events[name] = self.events.get(name, 0) + n


class PoolMetrics:
    """The supervisor's view: retired totals plus the latest snapshot and state of each live child."""

    def __init__(self, dead_letters: DeadLetterCounts | None = None) -> None:
        self._lock = threading.Lock()  # the HTTP server thread reads while the supervisor loop writes
        self._retired = JobStats()
        self._live: dict[int, JobStats] = {}
        self._busy: dict[int, bool] = {}
        self.restarts: dict[str, int] = {}
        #: This host's dead-letter store (each worker host has its own), counted for ``islandora_job_dead_letters``.
        self._dead_letters = None if dead_letters is None else CountsWhenChanged(dead_letters)

    def dead_letters(self) -> Mapping[str, int] | None:
        """Dead letters per function; None without a store or when it cannot be read (logged)."""
        if self._dead_letters is None:
            return None
        try:
            return self._dead_letters()
        except Exception as exc:  # a corrupt or unreadable store must not break the whole endpoint
            log.warning("metrics: cannot count dead letters: %s", exc)
            return None

    def update(self, pid: int, stats: JobStats, busy: bool) -> None:
        with self._lock:
            self._live[pid] = stats
            self._busy[pid] = busy

    def set_busy(self, pid: int, busy: bool) -> None:
        with self._lock:
            self._busy[pid] = busy

    def retire(self, pid: int, reason: str) -> None:
        with self._lock:
            stats = self._live.pop(pid, None)
            self._busy.pop(pid, None)
            if stats is not None:
                self._retired.add(stats)
            self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def totals(self) -> JobStats:
        with self._lock:
            total = JobStats()
            total.add(self._retired)
            for stats in self._live.values():
                total.add(stats)
            return total

    def workers(self) -> tuple[int, int]:
        """(busy, idle) live worker processes."""
        with self._lock:
            busy = sum(1 for value in self._busy.values() if value)
            return busy, len(self._busy) - busy

    def collect(self) -> Iterator[Any]:
        """prometheus-client collector protocol."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        totals = self.totals()
        jobs = CounterMetricFamily("islandora_job_jobs", "Jobs finished, by job and outcome", labels=["job", "outcome"])
        for (name, outcome), n in sorted(totals.counts.items()):
            jobs.add_metric([name, outcome], n)
        yield jobs
        duration = HistogramMetricFamily(
            "islandora_job_job_duration_seconds", "Time from grab to answer, by job", labels=["job"]
        )
        for name, buckets in sorted(totals.buckets.items()):
            cumulative, running = [], 0
            for bound, n in zip([*(str(b) for b in BUCKETS), "+Inf"], buckets, strict=True):
                running += n
                cumulative.append((bound, running))
            duration.add_metric([name], cumulative, totals.sums.get(name, 0.0))
        yield duration
        busy, idle = self.workers()
        workers = GaugeMetricFamily("islandora_job_workers", "Worker processes by state", labels=["state"])
        workers.add_metric(["busy"], busy)
        workers.add_metric(["idle"], idle)
        yield workers
        restarts = CounterMetricFamily(
            "islandora_job_worker_exits", "Worker processes that exited, by reason", labels=["reason"]
        )
        with self._lock:
            for reason, n in sorted(self.restarts.items()):
                restarts.add_metric([reason], n)
        yield restarts
        letters = self.dead_letters()
        if letters is not None:
            dead = GaugeMetricFamily(
                "islandora_job_dead_letters",
                "Dead letters in this host's store, not requeued, by function",
                labels=["function"],
            )
            for function, n in sorted(letters.items()):
                dead.add_metric([function], n)
            yield dead
        for event, description in sorted({**dict.fromkeys(totals.events, ""), **EVENTS}.items()):
            counter = CounterMetricFamily(f"islandora_job_{event}", description or f"Events {event}")
            counter.add_metric([], totals.events.get(event, 0))
            yield counter


def serve(metrics: PoolMetrics, listen: str) -> Any:
    """Start the Prometheus endpoint on ``HOST:PORT`` in a thread; returns the server (``shutdown()`` stops it)."""
    try:
        from prometheus_client import start_http_server
        from prometheus_client.core import CollectorRegistry
    except ImportError as exc:
        raise ConfigError(
            "metrics.listen is set but prometheus-client is not installed (pip install 'islandora-job[metrics]')"
        ) from exc
    address = ServerAddress.parse(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    server, _thread = start_http_server(address.port, addr=address.host, registry=registry)
    return server
