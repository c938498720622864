"""Entry point of one worker process, started by the pool supervisor: ``python -m islandora_job.worker.child``.

The supervisor writes the configuration (one JSON line) to the child's stdin and keeps that pipe open: end of file
on stdin means the supervisor is gone, and the child stops as on SIGTERM. The child reports to the supervisor on
the file descriptor given by ``--status-fd``, one JSON object per line: ``ready`` once registered on a server,
``busy`` when a job starts after an idle spell, ``stats`` (job totals for the metrics) and ``exit`` with the
reason it stopped. Stdout is redirected to stderr, so a job that prints cannot corrupt anything.

Signals: SIGTERM is a warm stop (finish the job in hand, answer it, exit 0), repeatable; SIGINT and SIGHUP are
ignored (the supervisor decides: a cold stop is its SIGKILL, a reload is a new child).

Death of the supervisor (``--supervisor-pid``): a SIGKILL of the supervisor runs none of its code, and with no
systemd (init-script mode, a container, a run by hand) nothing else would stop its children, which would go on
taking jobs, re-parented to PID 1. So the child asks the kernel for :data:`SUPERVISOR_GONE_SIGNAL` when its parent
dies (``PR_SET_PDEATHSIG``, kept across the exec that started us), and checks ``getppid()`` once after asking, for a
supervisor that died before that. The signal is a catchable one, not SIGKILL, because the child must kill the
process groups of its running commands first (each runs in its own session, so it would outlive us): the handler
calls :func:`islandora_job.worker.bridge.kill_command_groups` and exits at once, like a cold stop (gearmand requeues the
job in hand). A command's own ``PR_SET_PDEATHSIG`` would reach only its first process, not drush's php, and would
need a ``preexec_fn`` in a threaded process. The handler runs in the main thread between bytecodes, so a Python job
stuck in C code holding the GIL delays it; the end of file on stdin stays as a second, slower way to stop.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from islandora_job import exit_codes, logsetup
from islandora_job.errors import ConfigError
from islandora_job.worker import config as config_module
from islandora_job.worker import runtime
from islandora_job.worker.bridge import kill_command_groups
from islandora_job.worker.deadletters import DeadLetterStore
from islandora_job.worker.deadlines import DeadlineSlot
from islandora_job.worker.drupal_status import from_config as drupal_status_table
from islandora_job.worker.metrics import JobStats
from islandora_job.worker.persistent import start_runners
from islandora_job.worker.process import FailureRecorder, Worker
from islandora_job.worker.router import Assignment, Outcome

log = logging.getLogger("islandora_job.worker.child")

STATS_INTERVAL = 1.0
#: prctl(2): the signal the kernel sends us when the thread that forked us (the supervisor's main thread) ends.
PR_SET_PDEATHSIG = 1
SUPERVISOR_GONE_SIGNAL = signal.SIGUSR1


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


def _supervisor_gone(supervisor: int) -> None:
    """Kill our commands' process groups and exit now: the supervisor that would have cleaned up is dead."""
    killed = kill_command_groups()
    log.error(
        "supervisor %d is gone; killed %d running command(s) with their process groups and exiting now "
        "(gearmand requeues the job in hand)",
        supervisor,
        killed,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(exit_codes.SUPERVISOR_GONE)


def die_with_supervisor(supervisor: int) -> None:
    """Exit (with our commands' groups) when ``supervisor``, our parent, dies; see the module's docstring."""

    def on_signal(_signum: int, _frame: object) -> None:
        if os.getppid() != supervisor:  # re-parented: it is dead (else a stray SIGUSR1, ignored)
            _supervisor_gone(supervisor)

    signal.signal(SUPERVISOR_GONE_SIGNAL, on_signal)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(SUPERVISOR_GONE_SIGNAL), 0, 0, 0) != 0:
            log.warning("cannot ask for a signal on the supervisor's death: %s", os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError):  # not Linux: the end of file on stdin remains
        log.warning("cannot ask for a signal on the supervisor's death (no prctl)")
    if os.getppid() != supervisor:  # it died before we asked: no signal will come
        _supervisor_gone(supervisor)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="islandora_job.worker.child")
    parser.add_argument("--status-fd", type=int, default=None)
    parser.add_argument("--functions", default=None, help="JSON list: serve only these jobs or functions")
    parser.add_argument("--lifetime", type=float, default=None)
    parser.add_argument("--deadline-fd", type=int, default=None, help="memfd where the current job's deadline goes")
    parser.add_argument("--check", action="store_true", help="build the runtime, report errors, and exit")
    parser.add_argument("--supervisor-pid", type=int, default=None, help="exit, killing our commands, when it dies")
    args = parser.parse_args(argv)
    if args.supervisor_pid is not None:
        die_with_supervisor(args.supervisor_pid)

    line = sys.stdin.buffer.readline()
    os.dup2(2, 1)  # job output goes to the log, never to a pipe someone reads
    try:
        config = config_module.from_json(line.decode())
    except (ValueError, KeyError, ConfigError) as exc:
        print(f"islandora_job.worker.child: bad configuration from the supervisor: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    if args.check:
        try:
            runtime.build(config)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return exit_codes.USAGE
        return exit_codes.OK
    logsetup.configure(config.logging.level, config.logging.json)
    pipe = StatusPipe(args.status_fd, with_stats=bool(config.metrics.listen))
    try:
        built = runtime.build(config)
        functions = built.functions_for(None if args.functions is None else json.loads(args.functions))
    except ConfigError as exc:
        log.error("%s", exc)
        return exit_codes.USAGE
    start_runners(built.bridge)  # persistent PHP runners bootstrap before this process registers
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
        tracker=drupal_status_table(config.drupal, [(e.names, e.status_table) for e in config.command_jobs]),
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
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
