"""Submit islandora_job jobs to gearmand: one at a time, in the background, or many at once.

The three public submission calls are one engine, :meth:`JobClient.submit_batch`: a single job is a batch of one.
The engine pipelines: it writes up to ``max_in_flight`` submissions per connection before it reads, matches each
JOB_CREATED to the oldest unanswered submission on that connection (gearmand answers in order), and then follows
each foreground job by its handle until WORK_COMPLETE, WORK_FAIL or WORK_EXCEPTION.

Which server gets a job: one with a unique key goes to the server chosen by a hash of that key, so that gearmand
can coalesce duplicates (libgearman does the same); others rotate over the servers. A server that is down is skipped
for a jittered, growing interval and the next one in turn is used.

What is retried, and what is not (the rule that keeps jobs from being lost or silently doubled):
* a submission that no server acknowledged yet (no JOB_CREATED) is sent again, to the next server, because the
  connection broke before gearmand said it had it;
* a background job that was acknowledged is done as far as the client is concerned (gearmand owns it);
* a foreground job that was acknowledged and then lost its connection is reported as failed with
  :class:`ConnectionLost`: the job may or may not have run, and running it again is the caller's decision.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from islandora_job.address import ServerAddress, servers_from_environment
from islandora_job.backoff import Backoff
from islandora_job.codec import DEFAULT_MAX_PACKET, Command, Packet, encode
from islandora_job.connection import ConnectFailed, Connection
from islandora_job.errors import (
    ConnectionLost,
    IslandoraJobError,
    JobError,
    JobException,
    JobFailed,
    JobTimeout,
    ProtocolError,
    ServerUnavailable,
)
from islandora_job.payload import Payload, PayloadError, check_unique, dedupe_key, function_name

Priority = Literal["high", "normal", "low"]
log = logging.getLogger(__name__)

_SUBMIT: dict[tuple[bool, str], Command] = {
    (False, "high"): Command.SUBMIT_JOB_HIGH,
    (False, "normal"): Command.SUBMIT_JOB,
    (False, "low"): Command.SUBMIT_JOB_LOW,
    (True, "high"): Command.SUBMIT_JOB_HIGH_BG,
    (True, "normal"): Command.SUBMIT_JOB_BG,
    (True, "low"): Command.SUBMIT_JOB_LOW_BG,
}
PRIORITIES: tuple[str, ...] = ("high", "normal", "low")
#: How often one submission may be re-sent after connections broke before gearmand acknowledged it.
_MAX_SEND_ATTEMPTS = 3
#: Seconds after which a server whose host stopped answering TCP (power loss, a dropped route) is declared dead,
#: by TCP keepalive, while a foreground job waits on it. A live server that is frozen still answers TCP and is
#: waited on for as long as the job may run, unless the caller gives a timeout.
DEAD_PEER_TIMEOUT = 90.0
#: The longest single wait in a selector (epoll's timeout is a 32-bit count of milliseconds).
_MAX_WAIT = 3600.0
#: The most a client keeps of one job's WORK_DATA, and of its WORK_WARNING packets, in bytes (each packet counted
#: with _PACKET_COST more, so that a flood of empty ones is bounded too): a worker that streams without end, a
#: buggy one or one we did not write, cannot grow the client until it dies of MemoryError. Data past the cap is
#: dropped; the oldest warnings go first (the last one is a failure's reason). ``JobResult.dropped`` counts it.
MAX_KEPT = 16 * 1024 * 1024
_PACKET_COST = 64


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job to submit. ``site``/``uid`` default to the client's; ``dedupe`` derives the unique key.

    ``raw`` sends those bytes as the workload instead of an islandora_job payload built from ``args``: for
    ``payload="raw"`` jobs and for re-submitting a stored workload (a dead letter) exactly as it was.
    """

    name: str
    args: Sequence[Any] = ()
    priority: Priority = "normal"
    unique: str | None = None
    dedupe: bool = False
    alias: str | None = None
    site: str | None = None
    uid: int | str | None = None
    raw: bytes | None = None


@dataclass(slots=True)
class JobResult:
    """What became of one job of a batch. ``error`` is set when it did not complete.

    ``data`` is the job's whole output as libgearman clients (PHP's ``doNormal``, ``runTasks``, the ``gearman``
    CLI) give it: every WORK_DATA chunk (``partial``), then the data of WORK_COMPLETE.
    """

    request: JobRequest
    function: str = ""
    handle: str | None = None
    data: bytes | None = None
    error: IslandoraJobError | None = None
    status: tuple[int, int] | None = None
    partial: list[bytes] = field(default_factory=list)
    warnings: list[bytes] = field(default_factory=list)
    #: Bytes of WORK_DATA and WORK_WARNING not kept in ``partial`` and ``warnings``: over :data:`MAX_KEPT`.
    dropped: int = 0
    _data_kept: int = field(default=0, init=False, repr=False)
    _warnings_kept: int = field(default=0, init=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def keep(self, command: Command, data: bytes) -> None:
        """Keep a WORK_DATA or WORK_WARNING packet's data within :data:`MAX_KEPT`; say so once when it drops."""
        dropped = self.dropped
        cost = len(data) + _PACKET_COST
        if command is not Command.WORK_WARNING:
            if self._data_kept + cost > MAX_KEPT:
                self.dropped += len(data)
            else:
                self.partial.append(data)
                self._data_kept += cost
        else:
            self.warnings.append(data)
            self._warnings_kept += cost
            if self._warnings_kept > MAX_KEPT:  # the oldest go, down to half the cap (amortised); never the last
                drop = 0
                while drop < len(self.warnings) - 1 and self._warnings_kept > MAX_KEPT // 2:
                    self._warnings_kept -= len(self.warnings[drop]) + _PACKET_COST
                    self.dropped += len(self.warnings[drop])
                    drop += 1
                del self.warnings[:drop]
        if self.dropped and not dropped:
            log.warning(
                "job %r (%s) sends more than %d bytes of WORK_DATA or WORK_WARNING: the client keeps that much of each",
                self.function,
                self.handle,
                MAX_KEPT,
            )

    def result(self) -> bytes:
        """The job's output, or its error raised."""
        if self.error is not None:
            raise self.error
        return self.data or b""


@dataclass(frozen=True, slots=True)
class JobStatus:
    """GET_STATUS of a job handle: known to the server, running, and the worker's last progress report."""

    handle: str
    known: bool
    running: bool
    numerator: int
    denominator: int


@dataclass(slots=True)
class _Prepared:
    index: int
    command: Command
    function: str
    unique: str
    data: bytes
    #: The caller chose the unique key (or dedupe derived it): route by it so that duplicates meet.
    keyed: bool = True
    attempts: int = 0
    retry_until: float = 0.0


class _OptionRequest:
    """The OPTION_REQ "exceptions" a connection sends when it opens: the first request it awaits an answer to."""

    __slots__ = ()


_OPTION_REQUEST: Final = _OptionRequest()


@dataclass(slots=True)
class _ConnState:
    """A connection's share of one batch: requests awaiting their answer, in order, then foreground jobs by handle.

    gearmand answers a connection's requests in the order they were sent, so ``awaiting`` is a queue: the option
    request (when the connection is new) and then the submissions, each answered by JOB_CREATED or ERROR.
    """

    awaiting: deque[_Prepared | _OptionRequest] = field(default_factory=deque)
    handles: dict[bytes, int] = field(default_factory=dict)
    #: When a server that owes us an answer to a submission is declared dead (it is alive if it says anything).
    answer_by: float = 0.0

    def submissions(self) -> Iterator[_Prepared]:
        """The jobs sent on this connection that gearmand has not acknowledged yet."""
        return (entry for entry in self.awaiting if isinstance(entry, _Prepared))

    def answered(self, packet: Packet) -> _Prepared | _OptionRequest:
        """The request that ``packet`` (the next answer, JOB_CREATED or ERROR) answers."""
        if self.awaiting:
            return self.awaiting.popleft()
        if packet.command is Command.JOB_CREATED:
            raise ProtocolError("JOB_CREATED for no submission")
        raise ProtocolError(f"unexpected ERROR from server: {packet.args}")


class _ServerSet:
    """The client's servers: which to try for a job, their connections, and which are resting after a failure.

    A connection is opened on first use and kept. A server that fails is closed and rests for a jittered, growing
    interval (its :class:`Backoff`); it is still tried, last, when every other server fails too.
    """

    def __init__(self, addresses: Sequence[ServerAddress], **connection_options: Any) -> None:
        self.addresses = list(addresses)
        self._connections = {address: Connection(address, **connection_options) for address in self.addresses}
        self._backoff = {address: Backoff(initial=0.5, cap=30.0) for address in self.addresses}
        self._down_until = dict.fromkeys(self.addresses, 0.0)
        self._option_pending: set[Connection] = set()
        self._rotation = 0

    def order(self, unique: str | None) -> list[ServerAddress]:
        """Servers in the order to try for one job: hashed by its chosen unique key, else the next in rotation."""
        count = len(self.addresses)
        if unique:
            start = zlib.crc32(unique.encode()) % count
        else:
            start = self._rotation % count
            self._rotation += 1
        return [self.addresses[(start + offset) % count] for offset in range(count)]

    def open(self, order: Sequence[ServerAddress], attempts: list[tuple[str, str]]) -> Connection | None:
        """The first server of ``order`` that is connected or connects; servers in back-off are tried last.

        Each failure is added to ``attempts`` (address, reason). A new connection asks for WORK_EXCEPTION packets
        at once; :meth:`take_option` hands the answer still owed to whoever reads the connection next.
        """
        now = time.monotonic()
        ready = [a for a in order if self._down_until[a] <= now or self._connections[a].connected]
        resting = [a for a in order if a not in ready]
        for address in ready + resting:
            connection = self._connections[address]
            if connection.connected:
                return connection
            try:
                connection.connect()
                connection.send_packet(Command.OPTION_REQ, "exceptions")
            except (ConnectFailed, ConnectionLost) as exc:
                self.mark_down(address)
                attempts.append((str(address), exc.reason))
                continue
            self._option_pending.add(connection)
            self._backoff[address].reset()
            self._down_until[address] = 0.0
            return connection
        return None

    def mark_down(self, address: ServerAddress) -> None:
        """Close the server's connection and rest it for its next back-off interval."""
        self._connections[address].close()
        self._option_pending.discard(self._connections[address])
        self._down_until[address] = time.monotonic() + self._backoff[address].next_delay()

    def take_option(self, connection: Connection) -> bool:
        """Consume the unanswered OPTION_REQ of a connection, if it has one: the caller now awaits its answer."""
        if connection in self._option_pending:
            self._option_pending.discard(connection)
            return True
        return False

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()


class JobClient:
    """A Gearman client for islandora_job payloads. Not thread-safe: give each thread its own."""

    def __init__(
        self,
        servers: Iterable[str | ServerAddress] | None = None,
        *,
        site: str | None = None,
        uid: int | str | None = None,
        multisite: str | None = None,
        connect_timeout: float = 5.0,
        io_timeout: float = 30.0,
        max_in_flight: int = 1000,
        max_packet: int = DEFAULT_MAX_PACKET,
        retry_window: float = 5.0,
        dead_peer: float = DEAD_PEER_TIMEOUT,
    ) -> None:
        if servers is None:
            addresses = servers_from_environment()
        else:
            addresses = [s if isinstance(s, ServerAddress) else ServerAddress.parse(s) for s in servers]
        if not addresses:
            raise ServerUnavailable([])
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._servers = _ServerSet(
            list(dict.fromkeys(addresses)),
            connect_timeout=connect_timeout,
            io_timeout=io_timeout,
            max_packet=max_packet,
            dead_peer=dead_peer,
        )
        self.servers: list[ServerAddress] = self._servers.addresses
        self.site = site
        self.uid = uid
        self.multisite = multisite
        self.max_in_flight = max_in_flight
        self.retry_window = retry_window
        self.io_timeout = io_timeout

    # -- public API -------------------------------------------------------------------------------------------

    def submit(
        self,
        name: str,
        *args: Any,
        priority: Priority = "normal",
        unique: str | None = None,
        dedupe: bool = False,
        alias: str | None = None,
        timeout: float | None = None,
        on_status: Callable[[int, int], None] | None = None,
    ) -> bytes:
        """Run a job and return its output (its WORK_DATA chunks and its result, joined, as libgearman does).
        ``on_status(numerator, denominator)`` is called with each progress report (WORK_STATUS) as it arrives.
        Raises JobFailed, JobException, JobTimeout or ServerUnavailable."""
        request = JobRequest(name, args, priority, unique, dedupe, alias)
        progress = None if on_status is None else (lambda _index, num, den: on_status(num, den))
        [result] = self.submit_batch([request], timeout=timeout, raise_unavailable=True, on_status=progress)
        return result.result()

    def submit_background(
        self,
        name: str,
        *args: Any,
        priority: Priority = "normal",
        unique: str | None = None,
        dedupe: bool = False,
        alias: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Queue a job and return its handle once gearmand has acknowledged it."""
        request = JobRequest(name, args, priority, unique, dedupe, alias)
        [result] = self.submit_batch([request], background=True, timeout=timeout, raise_unavailable=True)
        if result.error is not None:
            raise result.error
        assert result.handle is not None
        return result.handle

    def submit_batch(
        self,
        jobs: Iterable[JobRequest | tuple[str, Sequence[Any]]],
        *,
        background: bool = False,
        timeout: float | None = None,
        raise_unavailable: bool = False,
        on_status: Callable[[int, int, int], None] | None = None,
    ) -> list[JobResult]:
        """Submit many jobs at once; results come back in submission order, failures reported per job.

        Like ``islandora_job_submit_batch`` (addTask + runTasks): all jobs are in flight together over the open
        connections. With ``background=True`` each result has the handle and no data. ``on_status(index,
        numerator, denominator)`` is called with each progress report as it arrives (``index`` in ``jobs``).
        """
        requests = [job if isinstance(job, JobRequest) else JobRequest(job[0], tuple(job[1])) for job in jobs]
        results = [JobResult(request) for request in requests]
        prepared: deque[_Prepared] = deque()
        for index, request in enumerate(requests):
            try:
                prepared.append(self._prepare(index, request, background))
                results[index].function = prepared[-1].function
            except PayloadError as exc:
                if raise_unavailable:
                    raise
                results[index].error = JobFailed(f"job {request.name!r} not submitted: {exc}")
        deadline = None if timeout is None else time.monotonic() + timeout
        limits = _Limits(self.max_in_flight, self.io_timeout, self.retry_window)
        _Batch(self._servers, limits, prepared, results, background, raise_unavailable, on_status).run(deadline)
        return results

    def get_status(self, handle: str, timeout: float = 5.0) -> JobStatus:
        """Ask the servers about a job handle; the first that knows it answers (handles are per server)."""
        unknown = JobStatus(handle, False, False, 0, 0)
        attempts: list[tuple[str, str]] = []
        for address in self.servers:
            connection = self._servers.open([address], attempts)
            if connection is None:
                continue
            try:
                connection.send_packet(Command.GET_STATUS, handle)
                status = self._await_status(connection, handle.encode(), time.monotonic() + timeout)
            except (ConnectionLost, ProtocolError, TimeoutError) as exc:
                self._servers.mark_down(address)
                attempts.append((str(address), str(exc)))
                continue
            if status.known:
                return status
        if len(attempts) == len(self.servers):
            raise ServerUnavailable(attempts)
        return unknown

    def close(self) -> None:
        self._servers.close()

    def __enter__(self) -> JobClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- preparing submissions ----------------------------------------------------------------------------------

    def _prepare(self, index: int, request: JobRequest, background: bool) -> _Prepared:
        if request.priority not in PRIORITIES:
            raise PayloadError(f"priority must be one of {', '.join(PRIORITIES)}, not {request.priority!r}")
        if request.raw is not None:
            if request.args:
                raise PayloadError(f"job {request.name!r}: give either args or a raw workload, not both")
            data = request.raw
        else:
            site = request.site if request.site is not None else self.site
            uid = request.uid if request.uid is not None else self.uid
            data = Payload(request.name, tuple(request.args), site, uid).encode()
        function = function_name(request.name, request.alias, self.multisite)
        if request.unique is not None and request.dedupe:
            raise PayloadError("give either a unique key or dedupe, not both")
        if request.dedupe:
            unique = dedupe_key(function, data)
        elif request.unique is not None:
            unique = check_unique(request.unique)
        else:
            # Never an empty key: gearmand 1.1.20's persistent queues store background jobs keyed by
            # (unique, function), so every keyless job of a function would share one row and a restart would
            # replay only the last of them. libgearman (PHP, the gearman CLI) sends a UUID; so do we.
            unique = uuid.uuid4().hex
        keyed = request.dedupe or request.unique is not None
        return _Prepared(index, _SUBMIT[(background, request.priority)], function, unique, data, keyed)

    # -- job status ----------------------------------------------------------------------------------------------

    def _await_status(self, connection: Connection, handle: bytes, deadline: float) -> JobStatus:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("no STATUS_RES")
            for packet in connection.receive():
                if packet.command is Command.STATUS_RES and packet["job_handle"] == handle:
                    return JobStatus(
                        handle.decode("utf-8", "replace"),
                        packet["known"] == b"1",
                        packet["running"] == b"1",
                        _to_int(packet["numerator"]),
                        _to_int(packet["denominator"]),
                    )
                if packet.command is Command.ERROR and not self._servers.take_option(connection):
                    raise ProtocolError(f"server answered GET_STATUS with ERROR {packet.args}")
                if packet.command is Command.OPTION_RES:
                    self._servers.take_option(connection)


@dataclass(frozen=True, slots=True)
class _Limits:
    """The client's settings that one batch works within (see :class:`JobClient`)."""

    max_in_flight: int
    io_timeout: float
    retry_window: float


class _Batch:
    """One call of submit_batch: the jobs still to send, and each connection's unanswered requests."""

    def __init__(
        self,
        servers: _ServerSet,
        limits: _Limits,
        pending: deque[_Prepared],
        results: list[JobResult],
        background: bool,
        raise_unavailable: bool,
        on_status: Callable[[int, int, int], None] | None = None,
    ) -> None:
        self.servers = servers
        self.on_status = on_status
        self.limits = limits
        self.pending = pending
        self.results = results
        self.background = background
        self.raise_unavailable = raise_unavailable
        self.states: dict[Connection, _ConnState] = {}
        self.attempts: list[tuple[str, str]] = []

    def run(self, deadline: float | None) -> None:
        """Send, then read answers, until every job is answered or failed, or the deadline passes."""
        with selectors.DefaultSelector() as selector:
            while True:
                self.send_pending(selector)
                outstanding = any(state.awaiting or state.handles for state in self.states.values())
                if not outstanding and not self.pending:
                    return
                now = time.monotonic()
                if deadline is not None and deadline <= now:
                    self.expire()
                    return
                if not outstanding:
                    # Everything left waits for a server to come back (a restart in progress): poll gently.
                    time.sleep(0.1 if deadline is None else min(0.1, deadline - now))
                elif not self.drop_silent(selector, now):  # else re-send what the silent server held first
                    self.read(selector, now, deadline)

    def read(self, selector: selectors.BaseSelector, now: float, deadline: float | None) -> None:
        """Wait for answers until the deadline or the next answer due, and handle what arrived."""
        wake = min([t for t in (deadline, self.next_answer_due()) if t is not None], default=None)
        for key, _ in selector.select(_MAX_WAIT if wake is None else min(max(wake - now, 0), _MAX_WAIT)):
            connection: Connection = key.data
            try:
                packets = connection.receive()
            except (ConnectionLost, ProtocolError) as exc:
                self.lost(selector, connection, exc)
                continue
            state = self.states[connection]
            state.answer_by = time.monotonic() + self.limits.io_timeout
            for packet in packets:
                command = packet.command
                # Answers to the connection's requests come in the order they were sent; the rest is news of
                # jobs, by handle.
                if command is Command.JOB_CREATED or command is Command.OPTION_RES or command is Command.ERROR:
                    self.answer(packet, state)
                else:
                    self.follow(packet, state)

    def next_answer_due(self) -> float | None:
        return min((state.answer_by for state in self.states.values() if state.awaiting), default=None)

    def drop_silent(self, selector: selectors.BaseSelector, now: float) -> bool:
        """A server that accepted our bytes but answers none of our submissions is as good as gone."""
        silent = [c for c, state in self.states.items() if state.awaiting and state.answer_by <= now]
        for connection in silent:
            reason = f"no answer to a submission within {self.limits.io_timeout:g}s"
            self.lost(selector, connection, ConnectionLost(str(connection.address), reason))
        return bool(silent)

    def send_pending(self, selector: selectors.BaseSelector) -> None:
        """Write queued submissions, at most ``max_in_flight`` unacknowledged per connection, one write each."""
        limits = self.limits
        outgoing: dict[Connection, bytearray] = {}
        held: deque[_Prepared] = deque()
        while self.pending:
            job = self.pending.popleft()
            connection = self.servers.open(self.servers.order(job.unique if job.keyed else None), self.attempts)
            if connection is None:
                if job.retry_until and time.monotonic() < job.retry_until:
                    held.append(job)
                    continue
                error = ServerUnavailable(self.attempts)
                if self.raise_unavailable:
                    raise error
                self.results[job.index].error = error
                continue
            state = self.states.get(connection)
            if state is None:
                state = self.states[connection] = _ConnState(answer_by=time.monotonic() + limits.io_timeout)
                selector.register(connection, selectors.EVENT_READ, connection)
                if self.servers.take_option(connection):
                    state.awaiting.append(_OPTION_REQUEST)
            if len(state.awaiting) >= limits.max_in_flight:
                held.append(job)
                continue
            buffer = outgoing.setdefault(connection, bytearray())
            buffer += encode(job.command, job.function, job.unique, job.data)
            job.attempts += 1
            if not state.awaiting:
                state.answer_by = time.monotonic() + limits.io_timeout
            state.awaiting.append(job)
        self.pending.extend(held)
        for connection, buffer in outgoing.items():
            try:
                connection.send(bytes(buffer))
            except ConnectionLost as exc:
                self.lost(selector, connection, exc)

    def answer(self, packet: Packet, state: _ConnState) -> None:
        """The answer to the oldest request of the connection: OPTION_RES, JOB_CREATED or ERROR."""
        command = packet.command
        if command is Command.OPTION_RES:
            if state.awaiting and state.awaiting[0] is _OPTION_REQUEST:
                state.awaiting.popleft()
            return
        request = state.answered(packet)
        if not isinstance(request, _Prepared):
            if command is Command.ERROR:
                return  # a server without the exceptions option still serves jobs
            raise ProtocolError(f"{command.name} in answer to OPTION_REQ")
        result = self.results[request.index]
        if command is Command.JOB_CREATED:
            handle = packet["job_handle"]
            result.handle = handle.decode("utf-8", "replace")
            if not self.background:
                state.handles[handle] = request.index
        else:
            code = packet["error_code"].decode("utf-8", "replace")
            text = packet["error_text"].decode("utf-8", "replace")
            result.error = JobFailed(f"server refused the submission: {code} {text}".strip())

    def follow(self, packet: Packet, state: _ConnState) -> None:
        """News of a foreground job this batch follows by its handle (anything else, like NOOP, is ignored)."""
        handle = packet.args.get("job_handle", b"")
        index = state.handles.get(handle)
        if index is None:
            return
        command = packet.command
        result = self.results[index]
        if command is Command.WORK_COMPLETE:
            del state.handles[handle]
            result.data = b"".join([*result.partial, packet["data"]])
        elif command is Command.WORK_FAIL:
            del state.handles[handle]
            # Our workers send the reason as a WORK_WARNING just before a WORK_FAIL (which carries no text).
            reason = f": {result.warnings[-1].decode('utf-8', 'replace')}" if result.warnings else ""
            result.error = JobFailed(f"job {result.function!r} failed{reason}", result.handle)
        elif command is Command.WORK_EXCEPTION:
            del state.handles[handle]
            result.error = JobException(packet["data"].decode("utf-8", "replace"), result.handle)
        elif command is Command.WORK_STATUS:
            result.status = (_to_int(packet["numerator"]), _to_int(packet["denominator"]))
            if self.on_status is not None:
                self.on_status(index, *result.status)
        elif command is Command.WORK_DATA or command is Command.WORK_WARNING:
            result.keep(command, packet["data"])

    def lost(self, selector: selectors.BaseSelector, connection: Connection, exc: IslandoraJobError) -> None:
        """A connection broke mid-batch: re-queue what it had not acknowledged, fail what it was running."""
        state = self.states.pop(connection, None)
        if state is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(connection)
        self.servers.mark_down(connection.address)
        self.attempts.append((str(connection.address), str(exc)))
        retry_until = time.monotonic() + self.limits.retry_window
        for job in state.submissions():
            if job.attempts >= _MAX_SEND_ATTEMPTS:
                # A server that keeps speaking nonsense is reported as such; anything else as unavailability.
                failure = exc if isinstance(exc, ProtocolError) else ServerUnavailable(self.attempts)
                self.results[job.index].error = failure
            else:
                job.retry_until = job.retry_until or retry_until
                self.pending.append(job)
        for index in state.handles.values():
            self.results[index].error = ConnectionLost(
                str(connection.address), f"{exc}; job {self.results[index].handle} may or may not have run"
            )

    def expire(self) -> None:
        """The deadline passed: everything unfinished times out. Connections with unanswered requests are
        dropped, so that late answers can never be matched to a later request."""
        for job in self.pending:
            self.results[job.index].error = JobTimeout("timed out before the job was submitted")
        for connection, state in self.states.items():
            for index in [*(job.index for job in state.submissions()), *state.handles.values()]:
                result = self.results[index]
                result.error = JobTimeout(f"timed out waiting for job {result.function!r}", result.handle)
            if state.awaiting or state.handles:
                connection.close()


def _to_int(value: bytes) -> int:
    try:
        return int(value or b"0")
    except ValueError:
        return 0


__all__ = ["JobClient", "JobError", "JobRequest", "JobResult", "JobStatus", "Priority"]
