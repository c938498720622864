"""Move queued background jobs from one gearmand to another, losing none.

gearmand has no command to export its queue, so the mover plays both roles the protocol allows: a *worker* on the
source (``GRAB_JOB_UNIQ`` hands it function, unique key and payload) and a *client* of the target (a background
submission with the same function, unique key and payload). A job is completed on the source (``WORK_COMPLETE``,
which deletes it from the source's persistent store) only after the target answered ``JOB_CREATED`` for it, i.e.
after the target has stored it. If the mover dies at any point, gearmand requeues every job the mover held and had
not completed; a rerun moves them again. The target coalesces a resubmitted job with the same function and unique
key while it is still queued there, so a crash usually duplicates nothing; at worst it duplicates the jobs in
flight.

Priority: a worker is not told a job's priority, but gearmand hands out a function's waiting jobs highest priority
first, and the admin ``prioritystatus`` counts waiting jobs per priority (held jobs are not counted). So each batch
asks ``prioritystatus``, grabs at most as many jobs as the highest non-empty priority has, and submits them with
that priority. A job submitted to the source *during* a batch, with a higher priority than the batch's, may be
taken as the lower one; move from a source nobody submits to (the role's throw-away gearmand) to keep priorities
exact.

Jobs without a unique key: gearmand 1.1.20 stores them with an empty key, and its persistent queues delete by
(function, unique key), so completing one deletes the stored rows of *every* keyless job of that function. The
mover therefore completes keyless jobs on the source only once all of that function's keyless jobs are on the
target, and gives each a fresh unique key there, so that the target's store keeps one row per job.

Foreground jobs: a worker cannot tell one from a background job, but ``GET_STATUS_UNIQUE`` tells how many clients
wait on a unique key. A job someone waits for is not moved (its client's connection is to the source, and it
would get an empty result): the mover holds it until the function is done, then hands it back by reconnecting
(gearmand requeues a disconnected worker's jobs). gearmand 1.1.20 looks the key up across *all* functions and
answers for the job with that key added last, so the answer is trusted only when it must be about the held job:
it says "running" (the mover holds the job) and ``show unique jobs``, asked after the answers, lists the key once.
Otherwise nothing tells whether a client waits, and the job is held like a foreground one: at worst a background
job stays on the source (reported as left), never a waiting client told "success" with no data. Keyless jobs
cannot be asked about and are taken as background; libgearman (the ``gearman`` CLI, PHP) gives every job a key.

Throughput: within a batch every request is pipelined (all grabs sent at once, each submission sent as its job
arrives, each completion as its acknowledgement arrives); a batch ends with an ``ECHO`` round trip so that every
completion has been processed before the next ``prioritystatus``.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from islandora_job.address import ServerAddress
from islandora_job.admin import AdminClient, PriorityStatus
from islandora_job.codec import REQ_MAGIC, RES_MAGIC, Command, Packet, encode
from islandora_job.connection import ConnectFailed, Connection, describe_os_error
from islandora_job.errors import ConnectionLost, IslandoraJobError, ProtocolError, ServerUnavailable

PRIORITIES: Final = ("high", "normal", "low")
_SUBMIT: Final = {
    "high": Command.SUBMIT_JOB_HIGH_BG,
    "normal": Command.SUBMIT_JOB_BG,
    "low": Command.SUBMIT_JOB_LOW_BG,
}
#: Jobs requested per batch: enough to hide the round trips, few enough that a crash duplicates little.
DEFAULT_WINDOW: Final = 500
CLIENT_ID_PREFIX: Final = "islandora-job-queue-move"
#: ``show unique jobs`` lists every queued job's key (at most 64 bytes and a newline): room for 4 million jobs. It is
#: streamed, not kept, so this bounds time against a server that never ends its answer, not memory.
UNIQUE_ANSWER: Final = 256 * 1024 * 1024
#: A batch's payloads may all be in memory at once (waiting for the foreground question): batches shrink so that
#: their expected size, from the payloads seen so far, stays under this.
BATCH_BYTES: Final = 32 * 1024 * 1024


class MoveRefused(IslandoraJobError):
    """The move was not started: same server twice, workers racing the mover, a bad function name."""


class MoveFailed(IslandoraJobError):
    """The move stopped part way (the target refused a job, or spoke nonsense). Jobs not moved stay on the source."""


@dataclass(slots=True)
class FunctionMove:
    """What happened to one function's queue: jobs moved per priority, and jobs left on the source."""

    function: str
    expected: int
    moved: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 0))
    left: int = 0
    foreground: int = 0  # foreground jobs found waiting: left on the source, where their clients wait

    @property
    def total(self) -> int:
        return sum(self.moved.values())


#: progress(function, moved so far in this function, jobs it had waiting at the start, whether it is done)
Progress = Callable[[str, int, int, bool], None]


@dataclass(frozen=True, slots=True)
class MovePlan:
    """The functions to move, with their waiting jobs per priority, as ``prioritystatus`` showed them."""

    functions: tuple[PriorityStatus, ...]

    @property
    def total(self) -> int:
        return sum(p.high + p.normal + p.low for p in self.functions)


def plan_move(
    source: ServerAddress,
    target: ServerAddress,
    functions: Sequence[str] = (),
    *,
    allow_workers: bool = False,
    timeout: float = 5.0,
) -> MovePlan:
    """Check that the move makes sense and list what it would move; raise MoveRefused or ServerUnavailable.

    Refuses when a function to move has workers on the source: they would take jobs the mover counted, so the
    priorities it infers would be wrong (``allow_workers`` accepts that; nothing is lost either way).
    """
    if source == target:
        raise MoveRefused(f"--from and --to are the same server ({source})")
    for name in functions:
        if not name or any(c.isspace() or c == "\0" for c in name):
            raise MoveRefused(f"function name {name!r} must be non-empty, without white space or NUL")
    with AdminClient(target, timeout=timeout) as admin:
        admin.version()  # reachable, and a gearmand
    with AdminClient(source, timeout=timeout) as admin:
        statuses = {s.function: s for s in admin.status()}
        priorities = {p.function: p for p in admin.priority_status()}
    wanted = list(dict.fromkeys(functions)) or sorted(f for f, p in priorities.items() if p.high + p.normal + p.low)
    chosen = [priorities.get(f, PriorityStatus(f, 0, 0, 0, 0)) for f in wanted]
    busy = [f"{f} ({statuses[f].workers})" for f in wanted if f in statuses and statuses[f].workers > 0]
    if busy and not allow_workers:
        raise MoveRefused(
            f"{source} has workers registered for {', '.join(busy)}: they would race the mover and make it "
            "misjudge priorities. Stop them, or accept that with --allow-workers"
        )
    return MovePlan(tuple(chosen))


class _Batch:
    """The state of one batch: grabs not yet answered, submissions not yet acknowledged."""

    def __init__(self, priority: str, grabs: int) -> None:
        self.priority = priority
        self.grabs = grabs
        self.unacknowledged: deque[tuple[bytes, bool]] = deque()  # (source handle, had no unique key)
        self.exhausted = False
        self.moved = 0
        self.assigned = 0  # jobs the source handed out in this batch
        self.foreground = 0  # of those, jobs a client waits for: not moved
        self.probing: deque[Packet] = deque()  # jobs asked about (foreground?), not yet answered
        self.candidates: list[Packet] = []  # answered "no client waits": moved once their key is known unique
        self.to_probe: list[bytes] = []  # unique keys to ask about, not yet written
        self.failure: str | None = None  # why the target refused a job of this batch
        self.to_target: list[bytes] = []  # submissions not yet written
        self.to_source: list[bytes] = []  # completions not yet written


GET_STATUS_UNIQUE: Final = 41
STATUS_RES_UNIQUE: Final = 42
_HEADER: Final = struct.Struct("!4sII")


class _ForegroundProbe:
    """Asks the source how many clients wait on a job (``GET_STATUS_UNIQUE``, gearmand >= 1.1): 0 = background.

    python-gearman's packet table lacks these two packet types, so this connection frames them itself; it
    carries nothing else. Answers come in the order of the questions.
    """

    def __init__(self, address: ServerAddress, *, connect_timeout: float, io_timeout: float) -> None:
        self.address = address
        self._connect_timeout = connect_timeout
        self._io_timeout = io_timeout
        self._sock: socket.socket | None = None
        self._buffer = bytearray()

    def connect(self) -> None:
        try:
            self._sock = socket.create_connection((self.address.host, self.address.port), self._connect_timeout)
        except OSError as exc:
            raise ServerUnavailable([(str(self.address), describe_os_error(exc))]) from exc
        self._sock.settimeout(self._io_timeout)

    def fileno(self) -> int:
        if self._sock is None:
            raise ValueError(f"probe connection to {self.address} is closed")
        return self._sock.fileno()

    def ask(self, uniques: Sequence[bytes]) -> None:
        if self._sock is None:
            raise ConnectionLost(str(self.address), "not connected")
        data = b"".join(_HEADER.pack(REQ_MAGIC, GET_STATUS_UNIQUE, len(u)) + u for u in uniques)
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise ConnectionLost(str(self.address), describe_os_error(exc)) from exc

    def receive(self) -> list[tuple[bool, int]]:
        """Read once; (running, waiting clients) of the answers completed, in order."""
        if self._sock is None:
            raise ConnectionLost(str(self.address), "not connected")
        try:
            chunk = self._sock.recv(65536)
        except OSError as exc:
            raise ConnectionLost(str(self.address), describe_os_error(exc)) from exc
        if not chunk:
            raise ConnectionLost(str(self.address), "closed by the server")
        self._buffer += chunk
        counts = []
        while len(self._buffer) >= _HEADER.size:
            magic, kind, length = _HEADER.unpack_from(self._buffer)
            if magic != RES_MAGIC or length > 4096:
                raise ProtocolError(f"{self.address}: malformed answer to GET_STATUS_UNIQUE")
            if len(self._buffer) < _HEADER.size + length:
                break
            body = bytes(self._buffer[_HEADER.size : _HEADER.size + length])
            del self._buffer[: _HEADER.size + length]
            fields = body.split(b"\0")
            if kind == Command.ERROR:
                raise MoveFailed(f"{self.address} cannot tell foreground jobs: {body!r}")
            if kind != STATUS_RES_UNIQUE or len(fields) != 6 or not fields[5].isdigit():
                raise ProtocolError(f"{self.address}: unexpected answer to GET_STATUS_UNIQUE: {kind} {body!r}")
            counts.append((fields[2] == b"1", int(fields[5])))
        return counts

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()


class QueueMover:
    """One move from ``source`` to ``target``. Use as a context manager, or call :meth:`close`.

    Closing (or dying) while holding grabbed jobs makes gearmand requeue them on the source: that is the
    "never lose" half. Every job completed on the source was acknowledged by the target first.
    """

    def __init__(
        self,
        source: ServerAddress,
        target: ServerAddress,
        *,
        window: int = DEFAULT_WINDOW,
        io_timeout: float = 60.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.source = source
        self.target = target
        self.window = window
        self.client_id = f"{CLIENT_ID_PREFIX}-{uuid.uuid4().hex[:12]}"
        self._timeout = connect_timeout
        self._worker = Connection(source, connect_timeout=connect_timeout, io_timeout=io_timeout)
        self._client = Connection(target, connect_timeout=connect_timeout, io_timeout=io_timeout)
        self._admin = AdminClient(source, timeout=io_timeout, max_answer=UNIQUE_ANSWER)
        self._probe = _ForegroundProbe(source, connect_timeout=connect_timeout, io_timeout=io_timeout)
        self._selector = selectors.DefaultSelector()
        self._deferred: list[bytes] = []
        self._seen_jobs = 0  # jobs grabbed so far, and their bytes: the payload size that sizes batches
        self._seen_bytes = 0

    def __enter__(self) -> QueueMover:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._selector.close()
        self._worker.close()
        self._client.close()
        self._admin.close()
        self._probe.close()

    def connect(self) -> None:
        """Open both connections, and refuse if they reach the same gearmand under two addresses."""
        try:
            self._client.connect()
        except ConnectFailed as exc:
            raise ServerUnavailable([(str(exc.address), exc.reason)]) from exc
        self._open_worker()
        self._probe.connect()
        with AdminClient(self.target, timeout=self._timeout) as admin:
            if any(w.client_id == self.client_id for w in admin.workers()):
                raise MoveRefused(f"{self.source} and {self.target} are the same gearmand")
        self._selector.register(self._client.fileno(), selectors.EVENT_READ, self._client)
        self._selector.register(self._probe.fileno(), selectors.EVENT_READ, self._probe)

    def _open_worker(self) -> None:
        try:
            self._worker.connect()
        except ConnectFailed as exc:
            raise ServerUnavailable([(str(exc.address), exc.reason)]) from exc
        self._worker.send_packet(Command.SET_CLIENT_ID, self.client_id)
        self._echo(self._worker)
        self._selector.register(self._worker.fileno(), selectors.EVENT_READ, self._worker)

    def _release_held(self) -> None:
        """Hand the foreground jobs held back to the source: closing a worker's connection requeues its jobs."""
        self._selector.unregister(self._worker.fileno())
        self._worker.close()
        self._open_worker()

    def move(self, plan: MovePlan, progress: Progress | None = None) -> list[FunctionMove]:
        return [self.move_function(p, progress) for p in plan.functions]

    def move_function(self, status: PriorityStatus, progress: Progress | None = None) -> FunctionMove:
        function = status.function
        result = FunctionMove(function, status.high + status.normal + status.low)
        self._worker.send_packet(Command.RESET_ABILITIES)
        self._worker.send_packet(Command.CAN_DO, function)
        if progress:
            progress(function, 0, result.expected, False)
        # jobs gearmand counts but will not hand out (scheduled for later, or another worker's): per priority
        stuck = dict.fromkeys(PRIORITIES, 0)
        while True:
            waiting = self._waiting(function)
            priority = next((p for p in PRIORITIES if waiting[p] > stuck[p]), None)
            if priority is None:
                break
            batch = _Batch(priority, min(waiting[priority], self._window()))
            self._worker.send(b"".join(_encoded_grab for _ in range(batch.grabs)))
            self._run(batch, function)
            if batch.failure:
                self._echo(self._worker)  # the completions before the refusal are processed
                raise MoveFailed(batch.failure)
            self._echo(self._worker)  # every WORK_COMPLETE of the batch has been processed (and the row deleted)
            result.moved[priority] += batch.moved
            if progress:
                progress(function, result.total, result.expected, False)
            result.foreground += batch.foreground
            if batch.exhausted:  # NO_JOB: what is still counted at this priority cannot be grabbed; go lower
                stuck[priority] = self._waiting(function)[priority]
        self._complete_deferred()
        if result.foreground:
            self._release_held()
        else:
            self._worker.send_packet(Command.RESET_ABILITIES)
        # left behind: waiting jobs the mover could not grab, and jobs other workers hold (status counts those)
        result.left = next((s.total for s in self._admin.status() if s.function == function), 0)
        if progress:
            progress(function, result.total, result.expected, True)
        return result

    # -- one batch ---------------------------------------------------------------------------------------------

    def _run(self, batch: _Batch, function: str) -> None:
        submit = _SUBMIT[batch.priority]
        while batch.grabs or batch.unacknowledged or batch.probing:
            events = self._selector.select(timeout=self._worker.io_timeout)
            if not events:
                raise MoveFailed(f"no answer from {self.source} or {self.target} for {self._worker.io_timeout:g}s")
            try:
                for key, _ in events:
                    if key.data is self._probe:
                        for running, clients in self._probe.receive():
                            self._probed(batch, running, clients)
                        continue
                    connection: Connection = key.data
                    for packet in connection.receive():
                        if connection is self._worker:
                            self._from_source(packet, batch, function, submit)
                        else:
                            self._from_target(packet, batch)
            except BaseException:
                self._complete_acknowledged(batch)
                raise
            if batch.candidates and not batch.grabs and not batch.probing and not batch.failure:
                self._submit_unambiguous(batch, submit)
            # one write per connection for everything these packets called for, not one per job
            if batch.to_probe:
                self._probe.ask(batch.to_probe)
                batch.to_probe.clear()
            if batch.to_target:
                self._client.send(b"".join(batch.to_target))
                batch.to_target.clear()
            if batch.to_source:
                self._worker.send(b"".join(batch.to_source))
                batch.to_source.clear()

    def _from_source(self, packet: Packet, batch: _Batch, function: str, submit: Command) -> None:
        if packet.command is Command.JOB_ASSIGN_UNIQ:
            batch.grabs -= 1
            if packet["task"].decode("utf-8", "replace") != function:
                raise ProtocolError(f"{self.source} handed out a job of {packet['task']!r}, asked for {function!r}")
            batch.assigned += 1
            self._seen_jobs += 1
            self._seen_bytes += len(packet["data"]) + len(packet["unique"])
            if batch.failure:
                return  # held until the mover closes the connection: gearmand then requeues it
            if packet["unique"]:  # is a client waiting for it? (a keyless job cannot be asked about)
                batch.probing.append(packet)
                batch.to_probe.append(packet["unique"])
            else:
                self._submit(batch, packet, submit)
        elif packet.command is Command.NO_JOB:
            batch.grabs -= 1
            batch.exhausted = True
        elif packet.command is Command.ERROR:
            raise MoveFailed(f"{self.source} answered ERROR {_error_text(packet)}")
        elif packet.command is not Command.NOOP:
            raise ProtocolError(f"{self.source} sent an unexpected {packet.command.name}")

    def _probed(self, batch: _Batch, running: bool, clients: int) -> None:
        if not batch.probing:
            raise ProtocolError(f"{self.source} answered GET_STATUS_UNIQUE for nothing asked")
        packet = batch.probing.popleft()
        # The mover holds the job, so an answer about it says "running". "Not running" is an answer about another
        # function's job with the same key (gearmand looks keys up across functions): hold this one, unknown.
        if clients > 0 or not running:
            batch.foreground += 1  # a client (may) wait on the source; held, then handed back
        else:
            batch.candidates.append(packet)

    def _submit_unambiguous(self, batch: _Batch, submit: Command) -> None:
        """Move the candidates whose key no other job on the source has; hold the others as foreground.

        Asked after the answers to GET_STATUS_UNIQUE: a key listed once is the held job's own, so the answer was
        about it. A key listed more than once may have been answered for another function's job: nothing tells
        whether a client waits on this one, so it stays on the source (reported as left), never completed there.
        """
        counts = self._admin.count_unique({p["unique"] for p in batch.candidates})
        for packet in batch.candidates:
            if counts[packet["unique"]] == 1:
                self._submit(batch, packet, submit)
            else:
                batch.foreground += 1
        batch.candidates.clear()

    def _submit(self, batch: _Batch, packet: Packet, submit: Command) -> None:
        unique = packet["unique"]
        keyless = not unique
        if keyless:
            unique = uuid.uuid4().hex.encode()
        batch.to_target.append(encode(submit, packet["task"], unique, packet["data"]))
        batch.unacknowledged.append((packet["job_handle"], keyless))

    def _from_target(self, packet: Packet, batch: _Batch) -> None:
        if not batch.unacknowledged:
            raise ProtocolError(f"{self.target} sent {packet.command.name} for nothing submitted")
        if packet.command is Command.JOB_CREATED:
            handle, keyless = batch.unacknowledged.popleft()
            if keyless:
                self._deferred.append(handle)
            else:
                batch.to_source.append(_encode_complete(handle))
            batch.moved += 1
        elif packet.command is Command.ERROR:
            # keep reading the answers to the submissions still in flight, completing those the target took,
            # so that only the refused jobs (and the ones not submitted) stay on the source
            batch.unacknowledged.popleft()
            batch.failure = batch.failure or f"{self.target} refused a job: {_error_text(packet)}"
        else:
            raise ProtocolError(f"{self.target} answered a submission with {packet.command.name}")

    def _complete_acknowledged(self, batch: _Batch) -> None:
        """On the way out after an error: complete what the target did acknowledge, so it is not moved twice.

        Best effort: if the source is gone too, those jobs are requeued there and a rerun merges them on the
        target by their unique key.
        """
        if batch.to_source and self._worker.connected:
            with contextlib.suppress(IslandoraJobError, OSError):
                self._worker.send(b"".join(batch.to_source))
                batch.to_source.clear()
                self._echo(self._worker)

    def _complete_deferred(self) -> None:
        """Complete the keyless jobs, now that all of them are on the target (see the module's docstring)."""
        if self._deferred:
            self._worker.send(b"".join(_encode_complete(handle) for handle in self._deferred))
            self._deferred.clear()
            self._echo(self._worker)

    # -- helpers -----------------------------------------------------------------------------------------------

    def _window(self) -> int:
        """Jobs to request in the next batch: ``window``, fewer when payloads are large (see BATCH_BYTES)."""
        if not self._seen_jobs:
            return min(self.window, 16)  # the first batch of a move learns the payload size
        average = max(self._seen_bytes // self._seen_jobs, 1)
        return max(1, min(self.window, BATCH_BYTES // average))

    def _waiting(self, function: str) -> dict[str, int]:
        for p in self._admin.priority_status():
            if p.function == function:
                return {"high": p.high, "normal": p.normal, "low": p.low}
        return dict.fromkeys(PRIORITIES, 0)

    def _echo(self, connection: Connection) -> None:
        """Round trip on one connection: gearmand answers in order, so everything sent before has been handled."""
        token = uuid.uuid4().hex.encode()
        connection.send_packet(Command.ECHO_REQ, token)
        while True:
            for packet in connection.receive():
                if packet.command is Command.ECHO_RES and packet["data"] == token:
                    return
                if packet.command is Command.ERROR:
                    raise MoveFailed(f"{connection.address} answered ERROR {_error_text(packet)}")


def _error_text(packet: Packet) -> str:
    return f"{packet['error_code'].decode(errors='replace')} {packet['error_text'].decode(errors='replace')}".strip()


def _encode_complete(handle: bytes) -> bytes:
    return encode(Command.WORK_COMPLETE, handle, b"")


_encoded_grab: Final = encode(Command.GRAB_JOB_UNIQ)


def move_queue(
    source: ServerAddress,
    target: ServerAddress,
    functions: Sequence[str] = (),
    *,
    allow_workers: bool = False,
    window: int = DEFAULT_WINDOW,
    progress: Progress | None = None,
) -> list[FunctionMove]:
    """Plan and run a whole move; the one call the CLI (and anything else) needs."""
    plan = plan_move(source, target, functions, allow_workers=allow_workers)
    with QueueMover(source, target, window=window) as mover:
        mover.connect()
        return mover.move(plan, progress)
