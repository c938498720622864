"""One worker process: connections to every server, one job at a time, a watchdog for the time limit.

Theory of operation
-------------------
The main thread owns every connection and runs the job in hand. Each server is a :class:`ServerLink`
(:mod:`islandora_job.worker.link`: a non-blocking socket, a deadline, a backoff) whose Gearman state is a
socket-free :class:`~islandora_job.worker.protocol.WorkerProtocol` (that module's docstring has the state diagram).
The loop, :meth:`Worker._loop`, does three things in turn:

1. when no grab is outstanding, ask the next READY server for a job (in turn, starting after the one that gave the
   last job: fair between servers), or put the servers that said NO_JOB to sleep (PRE_SLEEP);
2. wait in one ``select`` on every socket, the signal wake-up socket and the supervisor's pipe, and handle what
   arrived: at most one ``recv`` per connection per wake-up, so no connection can monopolise the loop. A job
   assigned runs there and then; its answer is queued on its link;
3. close the connections whose deadline passed (a connect, or an answer owed to the probe or to a grab, after
   ``grab_timeout``: the server is treated as down, gearmand requeues what it may have assigned), and start the
   reconnections that are due.

At most one GRAB is outstanding in the whole process, so a process never holds a job it cannot start (a worker
grabbing more than it runs starves the others), and no server can hold the loop longer than ``grab_timeout``.
No CPU while idle; a timer every ``idle_grab_interval`` wakes the sleeping servers for a defensive grab (so a lost
NOOP cannot strand jobs).

Time limits: gearmand accepts WORK_FAIL only on the connection that holds the job, so whatever answers must outlive
a hung job. A :class:`Watchdog` thread is armed with the deadline of each attempt; if the job has not returned by
then, the watchdog sends the failure on the job's connection itself and ends the process (exit status
:data:`islandora_job.exit_codes.HUNG_JOB`); the supervisor starts a fresh one at once. The job is answered, so
gearmand does not run it again. A job that returns in time disarms the watchdog before the main thread answers; a
lock decides who answers.

Results of a job are queued on its link and sent together with the next GRAB_JOB_UNIQ on that link (one write per
job under load), but always before another job starts or the process sleeps. The job's log line and its report to
the supervisor are written after that GRAB_JOB_UNIQ has gone out, while gearmand answers it: they cost no time on
the way from one job to the next (at the default INFO level that was the largest cost of a no-op job).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, Protocol

from islandora_job import exit_codes, logsetup
from islandora_job.address import ServerAddress
from islandora_job.codec import DEFAULT_MAX_PACKET, Command, encode
from islandora_job.connection import describe_os_error
from islandora_job.errors import ConnectionLost, ProtocolError
from islandora_job.worker.bridge import kill_command_groups
from islandora_job.worker.config import PoolConfig
from islandora_job.worker.context import Reporter
from islandora_job.worker.deadlines import DeadlineSlot
from islandora_job.worker.link import NEVER, ServerLink
from islandora_job.worker.protocol import Echoed, JobAssigned, NoJob, OversizeJob, Phase, ServerEvent
from islandora_job.worker.router import Assignment, Outcome, Prepared, Router

log = logging.getLogger(__name__)

#: Seconds a server has to answer a grab (or the probe after connecting) before it is treated as down.
DEFAULT_GRAB_TIMEOUT: Final = PoolConfig().grab_timeout
RSS_CHECK_INTERVAL: Final = 1.0
#: The slowest transfer of an answer (a large job) accepted before its server is treated as down: bytes per second.
MIN_ANSWER_RATE: Final = 10 * 1024 * 1024
READABLE: Final = select.POLLIN | select.POLLPRI
FAILED: Final = select.POLLERR | select.POLLHUP | select.POLLNVAL
#: The INFO line of a completed job (its name, handle, function and duration).
_COMPLETE: Final = "job %s handle=%s function=%s outcome=complete duration=%.3fs"


class StopReason(enum.Enum):
    STOPPED = "stopped"
    MAX_JOBS = "max_jobs"
    LIFETIME = "max_lifetime"
    RSS = "max_rss_mb"
    PARENT_GONE = "parent gone"


class Events(Protocol):
    """What the worker tells its supervisor (or a test): all optional conveniences, none on the job path."""

    def ready(self) -> None: ...

    def job_started(self) -> None: ...

    def job_done(self, name: str, status: str, seconds: float) -> None: ...

    def idle(self) -> None: ...


class NoEvents:
    def ready(self) -> None:
        pass

    def job_started(self) -> None:
        pass

    def job_done(self, name: str, status: str, seconds: float) -> None:
        pass

    def idle(self) -> None:
        pass


#: Records a final failure: the job, its name, the outcome and the payload's real size (an over-size job's data is
#: only its head).
FailureRecorder = Callable[[Assignment, str, Outcome, int], None]


class JobTracker(Protocol):
    """Told when a job starts and how it ended (the Drupal status table); never raises, bounded in time."""

    def begin(self, assignment: Assignment, prepared: Prepared | Outcome) -> object | None: ...

    def end(self, token: Any, ok: bool, *, last: bool = False) -> None:
        """``last``: the process ends right after (a timed-out job): nothing may be left to a background thread."""


class Watchdog(threading.Thread):
    """Answers a job that overran its time limit, then ends the process.

    ``arm`` and ``disarm`` cost two uncontended lock operations per job; the thread is only woken when a new
    deadline is earlier than the one it waits for, so under load it sleeps through thousands of jobs (waking it
    for each job would cost a GIL hand-over per job).
    """

    def __init__(self, on_expiry: Callable[[object], None], slot: DeadlineSlot | None = None) -> None:
        super().__init__(name="watchdog", daemon=True)
        # arm and disarm take the bare lock (a C-level ``with``); the Condition's own ``with`` is two Python calls.
        self._mutex = threading.Lock()
        self.lock = threading.Condition(self._mutex)
        self._on_expiry = on_expiry
        self._slot = slot  # the supervisor's copy of the deadline: its backstop when this thread cannot run
        self._token: object | None = None
        self._deadline = float("inf")
        self._waiting_until = float("inf")
        self.fired = False

    def arm(self, token: object, seconds: float) -> None:
        with self._mutex:
            self._token = token
            self._deadline = time.monotonic() + seconds
            if self._slot is not None:
                self._slot.publish(self._deadline)
            if self._deadline < self._waiting_until:
                self.lock.notify()

    def disarm(self) -> bool:
        """Stop the clock; False when the watchdog already fired (it answers the job, not the caller)."""
        with self._mutex:
            self._token = None
            if self._slot is not None:
                self._slot.publish(0.0)
            return not self.fired

    def run(self) -> None:
        with self.lock:
            while True:
                now = time.monotonic()
                if self._token is None:
                    # Idle: keep waiting until the last job's deadline, so that the next job (whose deadline is
                    # usually later) does not have to wake this thread; only then wait without a timeout.
                    self._waiting_until = self._deadline if self._deadline > now else float("inf")
                    self.lock.wait(None if self._waiting_until == float("inf") else self._waiting_until - now)
                    continue
                remaining = self._deadline - now
                if remaining > 0:
                    self._waiting_until = self._deadline
                    self.lock.wait(remaining)
                    continue
                self.fired = True
                self._on_expiry(self._token)  # answers and ends the process; keeps the lock meanwhile
                return


class _Job:
    """The job in hand, as the watchdog and the progress reporter see it."""

    __slots__ = ("assignment", "handle", "link", "name", "timeout", "tracked")

    def __init__(self, link: ServerLink, handle: bytes, assignment: Assignment, name: str) -> None:
        self.link, self.handle, self.assignment, self.name = link, handle, assignment, name
        self.timeout = 0.0
        self.tracked: object | None = None  # the tracker's token (a status-table row), ended on a timeout too


class _Done(NamedTuple):
    """A job answered (its result queued or sent) whose log line and report to the supervisor are still due."""

    name: str
    assignment: Assignment
    outcome: Outcome
    seconds: float


class _Progress:
    """Progress packets of the job in hand, sent under the watchdog's lock so they cannot interleave with it."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def _send(self, command: Command, *args: bytes | str) -> None:
        job = self._worker._job
        if job is None:
            return
        with self._worker.watchdog.lock:
            if self._worker.watchdog.fired:
                return
            try:
                job.link.send_blocking(encode(command, job.handle, *args), self._worker.io_timeout)
            except (ConnectionLost, OSError) as exc:
                log.debug("progress for %s not sent: %s", job.handle, exc)

    def status(self, numerator: int, denominator: int) -> None:
        self._send(Command.WORK_STATUS, str(numerator), str(denominator))

    def data(self, chunk: bytes) -> None:
        self._send(Command.WORK_DATA, chunk)

    def warning(self, chunk: bytes) -> None:
        self._send(Command.WORK_WARNING, chunk)


class _Hooks:
    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self.reporter: Reporter = _Progress(worker)

    def arm(self, seconds: float) -> None:
        job = self._worker._job
        if job is not None:
            job.timeout = seconds
            self._worker.watchdog.arm(job, seconds)

    def sleep(self, seconds: float) -> None:
        """Wait between attempts with the clock stopped (the next attempt re-arms it)."""
        if not self._worker.watchdog.disarm():  # pragma: no cover - it fired: it is ending the process
            threading.Event().wait()
        time.sleep(seconds)


class Worker:
    def __init__(
        self,
        servers: Sequence[ServerAddress],
        router: Router,
        *,
        functions: Sequence[str] | None = None,
        client_id: str | None = None,
        idle_grab_interval: float = 15.0,
        max_jobs: int = 0,
        lifetime: float | None = None,
        max_rss_mb: int = 0,
        events: Events | None = None,
        record_failure: FailureRecorder | None = None,
        control_fd: int | None = None,
        send_exceptions: bool = False,
        connect_timeout: float = 3.0,
        io_timeout: float = 30.0,
        grab_timeout: float = DEFAULT_GRAB_TIMEOUT,
        max_packet: int = DEFAULT_MAX_PACKET,
        reconnect_backoff_cap: float = 10.0,
        deadline_slot: DeadlineSlot | None = None,
        tracker: JobTracker | None = None,
    ) -> None:
        if not servers:
            raise ValueError("a worker needs at least one server")
        self.router = router
        self.functions = list(functions if functions is not None else router.functions())
        if not self.functions:
            raise ValueError("no jobs to serve")
        self.client_id = client_id or f"{socket.gethostname()}:{os.getpid()}"
        registration = b"".join(
            [encode(Command.SET_CLIENT_ID, self.client_id)]
            + [encode(Command.CAN_DO, function) for function in self.functions]
        )
        self.links = [
            ServerLink(address, registration, max_packet=max_packet, backoff_cap=reconnect_backoff_cap)
            for address in servers
        ]
        self.idle_grab_interval = idle_grab_interval
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.grab_timeout = grab_timeout
        self.max_packet = max_packet
        self.max_jobs = max_jobs
        self.lifetime_end = None if lifetime is None else time.monotonic() + lifetime
        self.max_rss_mb = max_rss_mb
        self.events: Events = events or NoEvents()
        self.record_failure = record_failure
        self.tracker = tracker
        self.send_exceptions = send_exceptions
        self.jobs_done = 0
        self.watchdog = Watchdog(self._expired, deadline_slot)
        self._job: _Job | None = None
        self._hooks = _Hooks(self)
        self._turn = 0
        self._grabbing: ServerLink | None = None  # the one link with a GRAB outstanding
        self._fresh_grab = False  # that GRAB has just gone out: nothing of its answer has been waited for yet
        self._single = len(self.links) == 1  # one server: its answer is waited for by a blocking read, no poll
        self._done: _Done | None = None  # the last job, answered but not yet logged and reported
        self._backlog: list[ServerLink] = []  # links with events buffered after a job, handled after the next grab
        self._wake_all_at = NEVER  # the next defensive grab, while idle
        self._earliest = 0.0  # the earliest deadline or reconnection the last wait was computed for
        self._stopping = False
        self._stop_reason = StopReason.STOPPED
        self._ready = False
        self._next_rss_check = 0.0
        # select.poll, not the selectors module: one wait per job, and the module's wrapping cost ~5 µs of it.
        self._poll = select.poll()
        self._handlers: dict[int, ServerLink | str] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._watch(self._wake_r.fileno(), READABLE, "wake")
        self._control_fd = control_fd
        if control_fd is not None:
            self._watch(control_fd, READABLE, "control")

    # --- control from outside (signal handlers, tests) ----------------------------------------------------------

    @property
    def wakeup_fd(self) -> int:
        """A socket to pass to ``signal.set_wakeup_fd`` so a signal interrupts the idle wait."""
        return self._wake_w.fileno()

    def stop(self) -> None:
        """Warm stop: finish the job in hand (if any), answer it, then return from :meth:`run`. Signal-safe."""
        self._stopping = True
        with contextlib.suppress(OSError):  # a full wake-up socket means a wake-up is pending anyway
            self._wake_w.send(b"\0")

    # --- the loop -----------------------------------------------------------------------------------------------

    def run(self) -> StopReason:
        self.watchdog.start()
        log.info("worker %s serving %d function(s) on %s", self.client_id, len(self.functions), self._servers())
        try:
            return self._loop()
        finally:
            if self._done is not None:
                self._report(self._done)
            for link in self.links:
                if link.unsent and link.is_open:
                    with contextlib.suppress(ConnectionLost, OSError):
                        link.send_blocking(b"", min(self.io_timeout, 5.0))
                self._drop(link, None)
            self._wake_r.close()
            self._wake_w.close()

    def _loop(self) -> StopReason:
        """Ask for work when nothing is outstanding, then wait on every connection at once, then check deadlines."""
        while True:
            if self._grabbing is None:
                if self._stopping:
                    return self._stop_reason
                reason = self._recycle_reason()
                if reason is not None:
                    return reason
                self._ask()
            self._wait()
            if self._earliest <= (now := time.monotonic()):
                self._check_deadlines(now)
                self._reconnect_due(now)

    def _ask(self) -> None:
        """GRAB from the next READY server in turn (fair between servers); with none, put the EMPTY ones to sleep."""
        count = len(self.links)
        for offset in range(count):
            index = (self._turn + offset) % count
            link = self.links[index]
            if link.is_open and link.proto.phase is Phase.READY:
                for other in self.links:  # results of other servers go out before this grab can bring a job
                    if other is not link and other.unsent:
                        self._safe_flush(other)
                if self._send(link, link.proto.grab()):
                    link.asked_at = time.monotonic()
                    link.due = link.asked_at + self.grab_timeout
                    self._grabbing = link
                    self._fresh_grab = True
                    self._turn = (index + 1) % count
                    self._report_done()
                    return
        self._report_done()
        for link in self.links:
            if link.is_open and link.proto.phase is Phase.EMPTY:
                self._send(link, link.proto.sleep())
        if self._wake_all_at == NEVER:
            self._wake_all_at = time.monotonic() + self.idle_grab_interval
        self.events.idle()

    def _report_done(self) -> None:
        if self._done is not None:
            done, self._done = self._done, None
            self._report(done)

    def _timeout_ms(self) -> int:
        """Milliseconds until the next deadline (rounded up, so a deadline is never polled for in a spin); -1: none."""
        if self._backlog or (self._stopping and self._grabbing is None):
            return 0
        deadline = self._wake_all_at if self._grabbing is None else NEVER
        for link in self.links:
            due = link.due if link.sock is not None else link.retry_at
            if due < deadline:
                deadline = due
        if self.lifetime_end is not None and self.lifetime_end < deadline:
            deadline = self.lifetime_end
        self._earliest = deadline
        if deadline == NEVER:
            return -1
        return max(0, math.ceil((deadline - time.monotonic()) * 1000))

    def _wait(self) -> None:
        if self._fresh_grab:
            self._fresh_grab = False
            link = self._grabbing
            if self._single and link is not None and not link.outbuf and not self._backlog:
                self._wait_for_answer(link)
                return
        ready = self._poll.poll(self._timeout_ms())
        backlog, self._backlog = self._backlog, []
        for fd, mask in ready:
            handler = self._handlers.get(fd)
            if isinstance(handler, ServerLink):
                self._on_ready(handler, mask)
            elif handler == "wake":
                self._drain_wakeups()
            elif handler == "control":
                self._read_control()
        for link in backlog:
            if link.is_open:
                try:
                    self._drain(link)
                except (ConnectionLost, ProtocolError, OSError) as exc:
                    self._lost(link, exc)
        if self._wake_all_at != NEVER and self._grabbing is None and self._wake_all_at <= time.monotonic():
            self._wake_all_at = NEVER
            for link in self.links:  # a defensive grab, in case a NOOP was lost
                if link.is_open and link.proto.phase is Phase.SLEEPING:
                    link.proto.wake()

    def _wait_for_answer(self, link: ServerLink) -> None:
        """The one server's answer to the grab just sent, by one blocking read that the kernel ends at the grab's
        deadline (SO_RCVTIMEO is ``grab_timeout``), instead of a poll and a read: the usual path of a process with
        one server. Nothing else can need the loop meanwhile: there is no other server, the grab cannot be
        abandoned, and a stop (the wake-up socket) or the supervisor's pipe is acted on only once no grab is
        outstanding, as on the poll path. A read that brings only part of the answer (or NOOPs) leaves the rest to
        the poll path, deadline and all."""
        try:
            if link.receive(wait=True):
                self._drain(link)
                if link.proto.awaiting_answer and link.proto.mid_packet:
                    self._answering(link)
        except (ConnectionLost, ProtocolError, OSError) as exc:
            self._lost(link, exc)
        self._earliest = link.due if link.is_open else 0.0

    def _on_ready(self, link: ServerLink, mask: int) -> None:
        if link.sock is None:
            return
        if link.connecting:
            try:
                link.finish_connect(time.monotonic(), self.grab_timeout)
            except OSError as exc:
                self._failed(link, describe_os_error(exc), connecting=True)
                return
        try:
            if mask & select.POLLOUT:
                link.flush()
            if mask & (READABLE | FAILED) and link.is_open:
                link.receive()
                self._drain(link)
                if link.proto.awaiting_answer and link.proto.mid_packet:
                    self._answering(link)
        except (ConnectionLost, ProtocolError, OSError) as exc:
            self._lost(link, exc)
            return
        if link.outbuf or link.mask != READABLE:
            self._update(link)

    def _answering(self, link: ServerLink) -> None:
        """Part of the answer is in: it may take longer than ``grab_timeout``, but only by what its bytes earned:
        each byte received earns 1/:data:`MIN_ANSWER_RATE` of a second. A large job arriving at that rate or faster is
        waited for; a trickle earns nothing, whatever size its header declares, and the server is dropped at
        ``grab_timeout`` as a silent one is. (The deadline once moved on with every byte, up to the time the
        declared size needed: a header declaring 4 GiB followed by a NOOP's worth of bytes every 0.2 s held the
        process's one grab, and so every server, for minutes.)"""
        link.due = link.asked_at + self.grab_timeout + link.proto.received / MIN_ANSWER_RATE

    def _drain(self, link: ServerLink) -> None:
        """Handle the link's buffered events. After a job, what follows it belongs to the next exchange: it waits
        (in the backlog) until the job's answer and the next grab are out."""
        while (event := link.proto.next_event()) is not None:
            self._on_event(link, event)
            if self._done is not None:
                if link.proto.buffered:
                    self._backlog.append(link)
                return

    def _on_event(self, link: ServerLink, event: ServerEvent) -> None:
        if isinstance(event, JobAssigned | OversizeJob):
            self._answered(link)
            self._done = self._work(link, event)
        elif isinstance(event, NoJob):
            self._answered(link)
        elif isinstance(event, Echoed):
            link.due = NEVER
            self._registered(link)
        if link.proto.phase is Phase.READY:
            self._wake_all_at = NEVER

    def _answered(self, link: ServerLink) -> None:
        """The server answered a grab: a successful exchange, the only thing that resets its backoff."""
        link.due = NEVER
        self._grabbing = None
        if link.failures:
            log.info("server %s reachable again after %d failed attempt(s)", link.address, link.failures)
            link.failures = 0
            link.backoff.reset()
            link.throttle.reset()

    def _check_deadlines(self, now: float) -> None:
        for link in self.links:
            if link.sock is None or now < link.due:
                continue
            if not link.connecting:
                self._on_ready(link, READABLE)  # first read what came meanwhile (during a job, say)
                if link.sock is None or not link.proto.awaiting_answer or time.monotonic() < link.due:
                    continue
            if link.connecting:
                self._failed(link, f"connect timed out after {self.connect_timeout:g}s", connecting=True)
            else:
                waited = "probe" if link.proto.phase is Phase.PROBING else "grab"
                self._failed(link, f"no answer to our {waited} within {self.grab_timeout:g}s; treating it as down")

    def _recycle_reason(self) -> StopReason | None:
        if self.max_jobs and self.jobs_done >= self.max_jobs:
            return StopReason.MAX_JOBS
        now = time.monotonic()
        if self.lifetime_end is not None and now >= self.lifetime_end:
            return StopReason.LIFETIME
        if self.max_rss_mb and self.jobs_done and now >= self._next_rss_check:
            self._next_rss_check = now + RSS_CHECK_INTERVAL
            if rss_mb() > self.max_rss_mb:
                return StopReason.RSS
        return None

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def _read_control(self) -> None:
        assert self._control_fd is not None
        try:
            data = os.read(self._control_fd, 512)
        except OSError:
            data = b""
        if not data:  # the supervisor is gone: finish like a warm stop
            log.warning("supervisor gone; stopping")
            self._unwatch(self._control_fd)
            self._control_fd = None
            self._stop_reason = StopReason.PARENT_GONE
            self._stopping = True

    # --- jobs ---------------------------------------------------------------------------------------------------

    def _work(self, link: ServerLink, job: JobAssigned | OversizeJob) -> _Done:
        """Run the job and queue its answer on ``link``; what is left to log and report is returned."""
        started = time.monotonic()
        assignment = Assignment(
            function=job.function.decode("utf-8", "replace"),
            handle=job.handle.decode("utf-8", "replace"),
            unique=job.unique.decode("utf-8", "replace"),
            data=job.data if isinstance(job, JobAssigned) else job.head,
        )
        self.events.job_started()
        if isinstance(job, OversizeJob):
            reason = f"job of {job.size} bytes exceeds the cap of {self.max_packet} bytes; its payload was not read"
            prepared: Prepared | Outcome = Outcome.failure(reason, 0)
        else:
            prepared = self.router.prepare(assignment)
        name = prepared.name if isinstance(prepared, Prepared) else assignment.function
        self._job = _Job(link, job.handle, assignment, name)
        tracked = self._job.tracked = self.tracker.begin(assignment, prepared) if self.tracker is not None else None
        try:
            outcome = prepared if isinstance(prepared, Outcome) else self.router.run(prepared, self._hooks)
        finally:
            answered_by_watchdog = not self.watchdog.disarm()
            self._job = None
        if answered_by_watchdog:  # pragma: no cover - the watchdog ends the process while holding the lock
            threading.Event().wait()
        if tracked is not None and self.tracker is not None:  # before the answer, as the drush router did
            self.tracker.end(tracked, outcome.ok)
        if not outcome.ok and self.record_failure is not None:
            # An over-size job's data is only its head: its real size is the packet's less the other arguments + NULs.
            size = job.size - len(job.handle + job.function + job.unique) - 3 if isinstance(job, OversizeJob) else None
            self._record(assignment, name, outcome, size)  # before the failure is sent: the record must not be lost
        link.results += link.proto.answer(self._answer(job.handle, outcome))  # sent with the next packet
        self.jobs_done += 1
        return _Done(name, assignment, outcome, time.monotonic() - started)

    def _report(self, done: _Done) -> None:
        self._log_outcome(done)
        self.events.job_done(done.name, done.outcome.status, done.seconds)

    def _answer(self, handle: bytes, outcome: Outcome) -> bytes:
        if outcome.status == "complete":
            return encode(Command.WORK_COMPLETE, handle, outcome.data)
        if outcome.status == "fail":
            return encode(Command.WORK_FAIL, handle)
        return self._failure(handle, outcome.reason)

    def _failure(self, handle: bytes, reason: str) -> bytes:
        """The packets of a failure with a reason: WORK_EXCEPTION, or WORK_WARNING + WORK_FAIL.

        gearmand 1.1.20 turns WORK_EXCEPTION into WORK_FAIL for clients that did not ask for exceptions, but
        with a NUL after the handle; clients that did not ask (the ``gearman`` CLI, pygearman) then never match
        it and wait forever. So by default (``send_exceptions = false``) the reason goes in a WORK_WARNING and
        the job ends with a plain WORK_FAIL that every client understands; ``send_exceptions = true`` sends
        WORK_EXCEPTION, for fleets whose clients all ask for exceptions (PHP's extension, islandora_job's).
        """
        if self.send_exceptions:
            return encode(Command.WORK_EXCEPTION, handle, reason)
        return encode(Command.WORK_WARNING, handle, reason) + encode(Command.WORK_FAIL, handle)

    def _log_outcome(self, done: _Done) -> None:
        name, assignment, outcome, seconds = done
        if outcome.ok:
            if not log.isEnabledFor(logging.INFO):
                return  # a pool logging at WARNING: the fields below would be built for nothing, on every job
            args = (name, assignment.handle, assignment.function, seconds)
            if logsetup.info_line(log, _COMPLETE % args):
                return  # written as the plain format writes it; otherwise logging's path, with the facts
        facts = logsetup.fields(
            f"job {outcome.status}",
            job=name,
            function=assignment.function,
            handle=assignment.handle,
            unique=assignment.unique,
            outcome=outcome.status,
            duration=round(seconds, 6),
            attempts=outcome.attempts,
            **({} if outcome.ok else {"reason": outcome.reason}),
        )
        if outcome.ok:
            log.info(_COMPLETE, *args, extra=facts)
        else:
            log.warning(
                "job %s handle=%s function=%s outcome=%s duration=%.3fs attempts=%d reason=%s",
                name,
                assignment.handle,
                assignment.function,
                outcome.status,
                seconds,
                outcome.attempts,
                outcome.reason,
                extra=facts,
            )

    def _record(self, assignment: Assignment, name: str, outcome: Outcome, size: int | None = None) -> None:
        assert self.record_failure is not None
        try:
            self.record_failure(assignment, name, outcome, len(assignment.data) if size is None else size)
        except Exception:
            log.exception("could not record the failure of job %s handle=%s", name, assignment.handle)

    def _expired(self, token: object) -> None:
        """Watchdog thread, holding the lock: answer the hung job, record it, and end this process."""
        assert isinstance(token, _Job)
        kill_command_groups()  # a command runs in its own session: its whole tree goes before this process does
        reason = f"job {token.name} timed out after {token.timeout:g}s"
        try:
            token.link.send_blocking(self._failure(token.handle, reason), self.io_timeout)
            answered = "answered"
        except (ConnectionLost, OSError) as exc:
            answered = f"could not answer ({exc}); gearmand will requeue it"
        log.error(
            "job %s handle=%s outcome=timeout limit=%gs: %s; replacing this worker process",
            token.name,
            token.handle.decode("utf-8", "replace"),
            token.timeout,
            answered,
            extra=logsetup.fields(
                "job timeout",
                job=token.name,
                function=token.assignment.function,
                handle=token.assignment.handle,
                unique=token.assignment.unique,
                outcome="timeout",
                duration=token.timeout,
                attempts=1,
                reason=f"{reason}; {answered}",
            ),
        )
        if self.record_failure is not None:
            self._record(token.assignment, token.name, Outcome.failure(reason, 1))
        if token.tracked is not None and self.tracker is not None:
            self.tracker.end(token.tracked, False, last=True)
        try:
            self.events.job_done(token.name, "timeout", token.timeout)
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stderr.flush()
            os._exit(exit_codes.HUNG_JOB)

    # --- connections --------------------------------------------------------------------------------------------

    def _reconnect_due(self, now: float) -> None:
        for link in self.links:
            if link.sock is None and now >= link.retry_at:
                try:
                    link.start_connect(now, self.connect_timeout)
                except OSError as exc:
                    link.close()
                    self._failed(link, describe_os_error(exc), connecting=True)
                    continue
                self._update(link)

    def _registered(self, link: ServerLink) -> None:
        """The server echoed our probe, so it has read our registration. Its backoff is reset only once it answers
        a grab as well: a TCP connect, or an echo, from a server that then never answers a grab proves nothing."""
        log.info("registered %d function(s) on %s", len(self.functions), link.address)
        if not self._ready:
            self._ready = True
            self.events.ready()

    def _lost(self, link: ServerLink, exc: BaseException) -> None:
        self._failed(link, f"lost: {getattr(exc, 'reason', None) or exc}")

    def _failed(self, link: ServerLink, reason: str, *, connecting: bool = False) -> None:
        """A connect, probe, grab or read failed: drop the link, back off, and log at most once a window."""
        link.failures += 1
        now = time.monotonic()
        self._drop(link, now + link.backoff.next_delay())
        held = link.throttle.allow(now)
        if held is not None:
            state = "unreachable" if connecting else "down"
            more = f" ({held} more line(s) held back)" if held else ""
            log.warning(
                "server %s %s (%d attempt(s)): %s; retrying with backoff%s",
                link.address,
                state,
                link.failures,
                reason,
                more,
            )

    def _drop(self, link: ServerLink, retry_at: float | None) -> None:
        if self._grabbing is link:
            self._grabbing = None  # gearmand requeues whatever it may have assigned on this connection
        if link.unsent and link.is_open:
            log.warning(
                "server %s: %d byte(s) not delivered; gearmand requeues a job in hand", link.address, link.unsent
            )
        if link.mask:
            self._unwatch(link.fileno())
            link.mask = 0
        link.close()
        if retry_at is not None:
            link.retry_at = retry_at

    def _update(self, link: ServerLink) -> None:
        """Register the events the link waits for: writable while connecting or with output pending, else readable."""
        wanted = link.wanted_mask(READABLE, select.POLLOUT)
        if wanted == link.mask:
            return
        if not link.mask:
            self._watch(link.fileno(), wanted, link)
        elif not wanted:
            self._unwatch(link.fileno())
        else:
            self._poll.modify(link.fileno(), wanted)
        link.mask = wanted

    def _watch(self, fd: int, mask: int, handler: ServerLink | str) -> None:
        self._poll.register(fd, mask)
        self._handlers[fd] = handler

    def _unwatch(self, fd: int) -> None:
        self._poll.unregister(fd)
        del self._handlers[fd]

    def _send(self, link: ServerLink, data: bytes) -> bool:
        try:
            link.write(data)
        except (ConnectionLost, OSError) as exc:
            self._lost(link, exc)
            return False
        if link.outbuf or link.mask != READABLE:
            self._update(link)
        return True

    def _safe_flush(self, link: ServerLink) -> None:
        self._send(link, b"")

    def _servers(self) -> str:
        return ", ".join(str(link.address) for link in self.links)


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
