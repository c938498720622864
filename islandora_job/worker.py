"""One worker process: connections to every server, one job at a time, a watchdog for the time limit.

Theory of operation
-------------------
The main thread owns every connection and runs the job in hand. Each server is a :class:`ServerLink` in one of
three states::

    DOWN ──connect, SET_CLIENT_ID, CAN_DO…──▶ IDLE ⇄ GRAB_JOB_UNIQ, then NO_JOB, or JOB_ASSIGN_UNIQ (job runs, answer)
      ▲                                        │
      └──── connection lost (from any state) ◀─┴── PRE_SLEEP ──▶ SLEEPING ──NOOP, or a defensive grab──▶ IDLE

The loop asks the servers for a job in turn, starting after the one that gave the last job (fair between servers),
with at most one GRAB outstanding, so a process never holds a job it cannot start (a worker grabbing more than it
runs starves the others). When every server says NO_JOB it sends PRE_SLEEP to all and blocks in ``select`` on the
sockets, the signal wake-up socket and the supervisor's pipe: no CPU while idle. A NOOP from any server starts a
new round; so does a timer every ``idle_grab_interval`` (a defensive grab, so a lost NOOP cannot strand jobs), and
a due reconnection.

Time limits: gearmand accepts WORK_FAIL only on the connection that holds the job, so whatever answers must outlive
a hung job. A :class:`Watchdog` thread is armed with the deadline of each attempt; if the job has not returned by
then, the watchdog sends the failure on the job's connection itself and ends the process (exit status
:data:`EXIT_HUNG_JOB`); the supervisor starts a fresh one at once. The job is answered, so gearmand does not run it
again. A job that returns in time disarms the watchdog before the main thread answers; a lock decides who answers.

Results of a job are queued on its link and sent together with the next GRAB_JOB_UNIQ on that link (one write per
job under load), but always before another job starts or the process sleeps. The job's log line and its report to
the supervisor are written after that GRAB_JOB_UNIQ has gone out, while gearmand answers it: they cost no time on
the way from one job to the next (at the default INFO level that was the largest cost of a no-op job).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import os
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple, Protocol

from islandora_job.address import ServerAddress
from islandora_job.backoff import Backoff
from islandora_job.bridge import kill_command_groups
from islandora_job.codec import Command, Packet, encode
from islandora_job.connection import ConnectFailed, Connection
from islandora_job.context import Reporter
from islandora_job.deadlines import DeadlineSlot
from islandora_job.errors import ConnectionLost, ProtocolError
from islandora_job.router import Assignment, Outcome, Prepared, Router

log = logging.getLogger(__name__)

#: Exit status of a process whose watchdog answered a hung job (the supervisor restarts it without delay).
EXIT_HUNG_JOB: Final = 70
#: How often a server that stays unreachable is logged (one line per window, not per attempt).
UNREACHABLE_LOG_WINDOW: Final = 60.0
RSS_CHECK_INTERVAL: Final = 1.0


class LinkState(enum.Enum):
    DOWN = "down"
    IDLE = "idle"
    SLEEPING = "sleeping"


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


FailureRecorder = Callable[[Assignment, str, Outcome], None]


class ServerLink:
    """One server as the worker sees it: a connection, its state, packets read ahead, reconnection timing."""

    def __init__(self, address: ServerAddress, *, connect_timeout: float, io_timeout: float) -> None:
        self.address = address
        self.conn = Connection(address, connect_timeout=connect_timeout, io_timeout=io_timeout)
        self.state = LinkState.DOWN
        self.inbox: collections.deque[Packet] = collections.deque()
        self.outbox = b""
        self.backoff = Backoff(initial=0.2, cap=10.0)
        self.retry_at = 0.0
        self.registered_fd = -1
        self.failures = 0
        self.last_logged = -UNREACHABLE_LOG_WINDOW

    def __repr__(self) -> str:
        return f"<ServerLink {self.address} {self.state.value}>"

    def send(self, data: bytes) -> None:
        """Send queued results first, then ``data``, in one write."""
        out, self.outbox = self.outbox + data, b""
        if out:
            self.conn.send(out)

    def read(self) -> Packet:
        """The next packet, blocking up to the connection's I/O timeout."""
        while not self.inbox:
            self.inbox.extend(self.conn.receive())
        return self.inbox.popleft()


class Watchdog(threading.Thread):
    """Answers a job that overran its time limit, then ends the process.

    ``arm`` and ``disarm`` cost two uncontended lock operations per job; the thread is only woken when a new
    deadline is earlier than the one it waits for, so under load it sleeps through thousands of jobs (waking it
    for each job would cost a GIL hand-over per job).
    """

    def __init__(self, on_expiry: Callable[[object], None], slot: DeadlineSlot | None = None) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.lock = threading.Condition(threading.Lock())
        self._on_expiry = on_expiry
        self._slot = slot  # the supervisor's copy of the deadline: its backstop when this thread cannot run
        self._token: object | None = None
        self._deadline = float("inf")
        self._waiting_until = float("inf")
        self.fired = False

    def arm(self, token: object, seconds: float) -> None:
        with self.lock:
            self._token = token
            self._deadline = time.monotonic() + seconds
            if self._slot is not None:
                self._slot.publish(self._deadline)
            if self._deadline < self._waiting_until:
                self.lock.notify()

    def disarm(self) -> bool:
        """Stop the clock; False when the watchdog already fired (it answers the job, not the caller)."""
        with self.lock:
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

    __slots__ = ("assignment", "handle", "link", "name", "timeout")

    def __init__(self, link: ServerLink, handle: bytes, assignment: Assignment, name: str) -> None:
        self.link, self.handle, self.assignment, self.name = link, handle, assignment, name
        self.timeout = 0.0


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
                job.link.send(encode(command, job.handle, *args))
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
        deadline_slot: DeadlineSlot | None = None,
    ) -> None:
        if not servers:
            raise ValueError("a worker needs at least one server")
        self.router = router
        self.functions = list(functions if functions is not None else router.functions())
        if not self.functions:
            raise ValueError("no jobs to serve")
        self.client_id = client_id or f"{socket.gethostname()}:{os.getpid()}"
        self.links = [ServerLink(a, connect_timeout=connect_timeout, io_timeout=io_timeout) for a in servers]
        self.idle_grab_interval = idle_grab_interval
        self.max_jobs = max_jobs
        self.lifetime_end = None if lifetime is None else time.monotonic() + lifetime
        self.max_rss_mb = max_rss_mb
        self.events: Events = events or NoEvents()
        self.record_failure = record_failure
        self.send_exceptions = send_exceptions
        self.jobs_done = 0
        self.watchdog = Watchdog(self._expired, deadline_slot)
        self._job: _Job | None = None
        self._hooks = _Hooks(self)
        self._turn = 0
        self._stopping = False
        self._stop_reason = StopReason.STOPPED
        self._ready = False
        self._next_rss_check = 0.0
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._control_fd = control_fd
        if control_fd is not None:
            self._selector.register(control_fd, selectors.EVENT_READ, "control")
        self._registration = b"".join(
            [encode(Command.SET_CLIENT_ID, self.client_id)]
            + [encode(Command.CAN_DO, function) for function in self.functions]
        )

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
            self._flush_all()
            for link in self.links:
                self._drop(link, None)
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _loop(self) -> StopReason:
        done: _Done | None = None  # the last job, answered but not yet logged and reported
        try:
            while True:
                if self._stopping:
                    return self._stop_reason
                reason = self._recycle_reason()
                if reason is not None:
                    return reason
                self._reconnect_due()
                previous, done = done, None
                grabbed = self._grab_round(previous)
                if grabbed is not None:
                    done = self._work(*grabbed)
                    continue
                self._sleep()
        finally:
            if done is not None:
                self._report(done)

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

    def _grab_round(self, done: _Done | None) -> tuple[ServerLink, Packet] | None:
        """Ask each connected server once, in turn; the first job wins.

        ``done`` (the previous job) is logged and reported once the first GRAB_JOB_UNIQ, carrying its result, is on
        its way, or at the end if no server could be asked.
        """
        count = len(self.links)
        for offset in range(count):
            index = (self._turn + offset) % count
            link = self.links[index]
            if link.state is LinkState.DOWN or not self._request(link):
                continue
            if done is not None:
                self._report(done)
                done = None
            packet = self._reply(link)
            if packet is not None:
                self._turn = (index + 1) % count
                return link, packet
        if done is not None:
            self._report(done)
        return None

    def _request(self, link: ServerLink) -> bool:
        """Send GRAB_JOB_UNIQ (after every result still queued); False if the link was lost."""
        for other in self.links:
            if other is not link and other.outbox:
                self._safe_flush(other)
        try:
            link.send(GRAB)
        except (ConnectionLost, OSError) as exc:
            self._lost(link, exc)
            return False
        link.state = LinkState.IDLE
        return True

    def _reply(self, link: ServerLink) -> Packet | None:
        """The answer to our GRAB_JOB_UNIQ: a job, or None (NO_JOB, or the link was lost)."""
        try:
            while True:
                packet = link.read()
                command = packet.command
                if command is Command.JOB_ASSIGN_UNIQ:
                    return packet
                if command is Command.NO_JOB:
                    return None
                if command is Command.NOOP:
                    continue  # a wake-up from before this grab
                if command is Command.ERROR:
                    raise ProtocolError(f"server error {packet['error_code']!r}: {packet['error_text']!r}")
                raise ProtocolError(f"unexpected {command.name} in answer to GRAB_JOB_UNIQ")
        except (ConnectionLost, ProtocolError, OSError) as exc:
            self._lost(link, exc)
            return None

    def _sleep(self) -> None:
        self._flush_all()
        now = time.monotonic()
        timeout = self.idle_grab_interval
        for link in self.links:
            if link.state is LinkState.DOWN:
                timeout = min(timeout, max(0.0, link.retry_at - now))
            elif link.state is not LinkState.SLEEPING:
                try:
                    link.send(PRE_SLEEP)
                    link.state = LinkState.SLEEPING
                except (ConnectionLost, OSError) as exc:
                    self._lost(link, exc)
                    timeout = 0.0
        if self.lifetime_end is not None:
            timeout = min(timeout, max(0.0, self.lifetime_end - now))
        if self._stopping:
            return
        self.events.idle()
        for key, _ in self._selector.select(timeout):
            if key.data == "wake":
                self._drain_wakeups()
            elif key.data == "control":
                self._read_control()
            else:
                self._read_sleeping(key.data)

    def _read_sleeping(self, link: ServerLink) -> None:
        try:
            packets = link.conn.receive()
        except (ConnectionLost, ProtocolError) as exc:
            self._lost(link, exc)
            return
        for packet in packets:
            if packet.command is Command.NOOP:
                link.state = LinkState.IDLE
            else:
                log.warning("%s sent %s to a sleeping worker; ignored", link.address, packet.command.name)

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
            self._selector.unregister(self._control_fd)
            self._control_fd = None
            self._stop_reason = StopReason.PARENT_GONE
            self._stopping = True

    # --- jobs ---------------------------------------------------------------------------------------------------

    def _work(self, link: ServerLink, packet: Packet) -> _Done:
        """Run the job and queue its answer on ``link``; what is left to log and report is returned."""
        started = time.monotonic()
        handle = packet["job_handle"]
        assignment = Assignment(
            function=packet["task"].decode("utf-8", "replace"),
            handle=handle.decode("utf-8", "replace"),
            unique=packet["unique"].decode("utf-8", "replace"),
            data=packet["data"],
        )
        self.events.job_started()
        prepared = self.router.prepare(assignment)
        name = prepared.name if isinstance(prepared, Prepared) else assignment.function
        self._job = _Job(link, handle, assignment, name)
        try:
            outcome = prepared if isinstance(prepared, Outcome) else self.router.run(prepared, self._hooks)
        finally:
            answered_by_watchdog = not self.watchdog.disarm()
            self._job = None
        if answered_by_watchdog:  # pragma: no cover - the watchdog ends the process while holding the lock
            threading.Event().wait()
        self._answer(link, handle, outcome)
        self.jobs_done += 1
        if not outcome.ok and self.record_failure is not None:
            self._record(assignment, name, outcome)  # before the failure is sent: the record must not be lost
        return _Done(name, assignment, outcome, time.monotonic() - started)

    def _report(self, done: _Done) -> None:
        self._log_outcome(done)
        self.events.job_done(done.name, done.outcome.status, done.seconds)

    def _answer(self, link: ServerLink, handle: bytes, outcome: Outcome) -> None:
        if outcome.status == "complete":
            data = encode(Command.WORK_COMPLETE, handle, outcome.data)
        elif outcome.status == "fail":
            data = encode(Command.WORK_FAIL, handle)
        else:
            data = self._failure(handle, outcome.reason)
        link.outbox += data  # sent with the next packet on this link, before anything can wait

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
            log.info(
                "job %s handle=%s function=%s outcome=complete duration=%.3fs",
                name,
                assignment.handle,
                assignment.function,
                seconds,
            )
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
            )

    def _record(self, assignment: Assignment, name: str, outcome: Outcome) -> None:
        assert self.record_failure is not None
        try:
            self.record_failure(assignment, name, outcome)
        except Exception:
            log.exception("could not record the failure of job %s handle=%s", name, assignment.handle)

    def _expired(self, token: object) -> None:
        """Watchdog thread, holding the lock: answer the hung job, record it, and end this process."""
        assert isinstance(token, _Job)
        kill_command_groups()  # a command runs in its own session: its whole tree goes before this process does
        reason = f"job {token.name} timed out after {token.timeout:g}s"
        try:
            token.link.send(token.link.outbox + self._failure(token.handle, reason))
            answered = "answered"
        except (ConnectionLost, OSError) as exc:
            answered = f"could not answer ({exc}); gearmand will requeue it"
        log.error(
            "job %s handle=%s outcome=timeout limit=%gs: %s; replacing this worker process",
            token.name,
            token.handle.decode("utf-8", "replace"),
            token.timeout,
            answered,
        )
        if self.record_failure is not None:
            self._record(token.assignment, token.name, Outcome.failure(reason, 1))
        try:
            self.events.job_done(token.name, "timeout", token.timeout)
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            sys.stderr.flush()
            os._exit(EXIT_HUNG_JOB)

    # --- connections --------------------------------------------------------------------------------------------

    def _reconnect_due(self) -> None:
        now = time.monotonic()
        for link in self.links:
            if link.state is LinkState.DOWN and now >= link.retry_at:
                self._connect(link)

    def _connect(self, link: ServerLink) -> None:
        try:
            link.conn.connect()
            link.conn.send(self._registration)
        except (ConnectFailed, ConnectionLost) as exc:
            link.conn.close()
            link.failures += 1
            link.retry_at = time.monotonic() + link.backoff.next_delay()
            now = time.monotonic()
            if now - link.last_logged >= UNREACHABLE_LOG_WINDOW:
                link.last_logged = now
                log.warning(
                    "server %s unreachable (%d attempt(s)): %s; retrying with backoff",
                    link.address,
                    link.failures,
                    getattr(exc, "reason", exc),
                )
            return
        if link.failures:
            log.info("server %s reachable again after %d failed attempt(s)", link.address, link.failures)
        link.failures = 0
        link.last_logged = -UNREACHABLE_LOG_WINDOW
        link.backoff.reset()
        link.inbox.clear()
        link.outbox = b""
        link.state = LinkState.IDLE
        link.registered_fd = link.conn.fileno()
        self._selector.register(link.registered_fd, selectors.EVENT_READ, link)
        log.info("registered %d function(s) on %s", len(self.functions), link.address)
        if not self._ready:
            self._ready = True
            self.events.ready()

    def _lost(self, link: ServerLink, exc: BaseException) -> None:
        log.warning("lost server %s: %s; reconnecting", link.address, exc)
        self._drop(link, time.monotonic() + link.backoff.next_delay())

    def _drop(self, link: ServerLink, retry_at: float | None) -> None:
        if link.registered_fd != -1:
            self._selector.unregister(link.registered_fd)
            link.registered_fd = -1
        link.conn.close()
        link.state = LinkState.DOWN
        link.inbox.clear()
        if link.outbox:
            log.warning("server %s: a result was not delivered; gearmand requeues that job", link.address)
        link.outbox = b""
        if retry_at is not None:
            link.retry_at = retry_at

    def _flush_all(self) -> None:
        for link in self.links:
            if link.outbox:
                self._safe_flush(link)

    def _safe_flush(self, link: ServerLink) -> None:
        try:
            link.send(b"")
        except (ConnectionLost, OSError) as exc:
            self._lost(link, exc)

    def _servers(self) -> str:
        return ", ".join(str(link.address) for link in self.links)


GRAB: Final = encode(Command.GRAB_JOB_UNIQ)
PRE_SLEEP: Final = encode(Command.PRE_SLEEP)


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
