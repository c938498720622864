"""Entry point of one worker process, started by the pool supervisor: ``python -m islandora_job.child``.

The supervisor writes the configuration (one JSON line) to the child's stdin and keeps that pipe open: end of file
on stdin means the supervisor is gone, and the child stops as on SIGTERM. The child reports to the supervisor on
the file descriptor given by ``--status-fd``, one JSON object per line: ``ready`` once registered on a server,
``busy`` when a job starts after an idle spell, ``stats`` (job totals for the metrics) and ``exit`` with the
reason it stopped. Stdout is redirected to stderr, so a job that prints cannot corrupt anything.

Signals: SIGTERM is a warm stop (finish the job in hand, answer it, exit 0), repeatable; SIGINT and SIGHUP are
ignored (the supervisor decides: a cold stop is its SIGKILL, a reload is a new child).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from islandora_job import config as config_module
from islandora_job import logsetup, runtime
from islandora_job.deadletters import DeadLetterStore
from islandora_job.deadlines import DeadlineSlot
from islandora_job.errors import ConfigError
from islandora_job.metrics import JobStats
from islandora_job.router import Assignment, Outcome
from islandora_job.worker import FailureRecorder, Worker

log = logging.getLogger("islandora_job.child")

EXIT_CONFIG = 2
STATS_INTERVAL = 1.0


class StatusPipe:
    """The child's side of the status pipe; implements :class:`islandora_job.worker.Events`."""

    def __init__(self, fd: int | None, with_stats: bool) -> None:
        self.fd = fd
        self.with_stats = with_stats
        self.stats = JobStats()
        self._busy = False
        self._next_stats = 0.0

    def send(self, message: dict[str, Any]) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, json.dumps(message, separators=(",", ":")).encode() + b"\n")
        except OSError:
            self.fd = None  # the supervisor is gone; stdin's end of file stops us

    def ready(self) -> None:
        self.send({"event": "ready"})

    def job_started(self) -> None:
        if not self._busy:
            self._busy = True
            self.send({"event": "busy"})

    def job_done(self, name: str, status: str, seconds: float) -> None:
        if not self.with_stats:
            return
        self.stats.observe(name, status, seconds)
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + STATS_INTERVAL
            self.send({"event": "stats", "busy": True, "stats": self.stats.to_json()})

    def idle(self) -> None:
        if self._busy:
            self._busy = False
            message: dict[str, Any] = {"event": "idle"}
            if self.with_stats:
                message["stats"] = self.stats.to_json()
            self.send(message)


def _recorder(store: DeadLetterStore) -> FailureRecorder:
    def record(assignment: Assignment, name: str, outcome: Outcome, size: int) -> None:
        store.record(
            function=assignment.function,
            name=name,
            handle=assignment.handle,
            unique=assignment.unique,
            payload=assignment.data,
            error=outcome.reason or outcome.status,
            attempts=outcome.attempts,
            payload_size=size,
        )

    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="islandora_job.child")
    parser.add_argument("--status-fd", type=int, default=None)
    parser.add_argument("--functions", default=None, help="JSON list: serve only these jobs or functions")
    parser.add_argument("--lifetime", type=float, default=None)
    parser.add_argument("--deadline-fd", type=int, default=None, help="memfd where the current job's deadline goes")
    parser.add_argument("--check", action="store_true", help="build the runtime, report errors, and exit")
    args = parser.parse_args(argv)

    line = sys.stdin.buffer.readline()
    os.dup2(2, 1)  # job output goes to the log, never to a pipe someone reads
    try:
        config = config_module.from_json(line.decode())
    except (ValueError, KeyError, ConfigError) as exc:
        print(f"islandora_job.child: bad configuration from the supervisor: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.check:
        try:
            runtime.build(config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONFIG
        return 0
    logsetup.configure(config.logging.level, config.logging.json)
    pipe = StatusPipe(args.status_fd, with_stats=bool(config.metrics.listen))
    try:
        built = runtime.build(config)
        functions = built.functions_for(None if args.functions is None else json.loads(args.functions))
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    store = DeadLetterStore.from_config(config.dead_letters) if config.dead_letters.path else None
    worker = Worker(
        config.servers,
        built.router,
        functions=functions,
        idle_grab_interval=config.pool.idle_grab_interval,
        grab_timeout=config.pool.grab_timeout,
        max_jobs=config.pool.max_jobs,
        lifetime=args.lifetime,
        max_rss_mb=config.pool.max_rss_mb,
        events=pipe,
        record_failure=_recorder(store) if store is not None else None,
        control_fd=sys.stdin.fileno(),
        send_exceptions=config.send_exceptions,
        deadline_slot=None if args.deadline_fd is None else DeadlineSlot(args.deadline_fd),
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: worker.stop())
    signal.set_wakeup_fd(worker.wakeup_fd, warn_on_full_buffer=False)
    reason = worker.run()
    log.info("worker process exiting after %d job(s): %s", worker.jobs_done, reason.value)
    message: dict[str, Any] = {"event": "exit", "reason": reason.value}
    if pipe.with_stats:
        message["stats"] = pipe.stats.to_json()
    pipe.send(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
