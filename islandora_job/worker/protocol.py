"""The Gearman worker protocol of one connection, as a state machine: bytes in, events out, bytes back. No sockets.

Theory of operation
-------------------
Like h11, this module never touches a socket or a clock. The I/O loop (:mod:`.process`) feeds what it
received with :meth:`WorkerProtocol.receive_data`, takes whole events with :meth:`WorkerProtocol.next_event`, and
sends the bytes that the action methods (:meth:`~WorkerProtocol.grab`, :meth:`~WorkerProtocol.sleep`,
:meth:`~WorkerProtocol.answer`) return. Every phase change, whoever caused it, goes through :data:`TRANSITIONS`, the
one table of what may happen in which phase; anything else is an error and the phase becomes ``CLOSED``::

    PROBING ──ECHO_RES──▶ READY ──grab()──▶ GRABBING ──JOB_ASSIGN_UNIQ──▶ WORKING ──answer()──▶ READY
                            ▲                  │
                            │               NO_JOB
                            │                  ▼
                            └─NOOP or wake()── SLEEPING ◀──sleep()── EMPTY

* ``PROBING``: the registration (SET_CLIENT_ID, CAN_DO…) went out with an ECHO_REQ. A TCP connect alone proves
  nothing (the kernel of a frozen gearmand still accepts), so a server is asked for work only once it has echoed
  (and the loop resets its reconnection backoff only once it has answered a grab). Nobody waits for the echo: the
  other servers are served meanwhile.
* ``READY``: the server may have work; the loop asks the READY servers in turn, one GRAB at a time in the whole
  process (a worker never holds a job it cannot start).
* ``GRABBING``: the GRAB_JOB_UNIQ is out. The loop gives the server a short deadline to answer (NOOPs do not count
  as an answer) and drops the connection when it passes, so that gearmand requeues whatever it may have assigned.
* ``EMPTY``: NO_JOB; the loop sends PRE_SLEEP at once (``SLEEPING``), so that gearmand wakes this server's link with
  a NOOP when work arrives, whatever the other servers keep us busy with.
* ``WORKING``: a job is held; :meth:`WorkerProtocol.answer` carries its result and makes the server READY again.

NOOPs that arrive in any other phase are stale wake-ups and are ignored (they are read in bulk: a flood costs a
few microseconds per kilobyte). A job whose packet is over the size cap is not buffered: its handle, function and
unique key and the first :data:`HEAD_SIZE` bytes of its payload are kept, the rest is skipped, and it arrives as
:class:`OversizeJob`, to be answered with a failure that says why.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final, NoReturn

from islandora_job.codec import DEFAULT_MAX_PACKET, HEADER_SIZE, RES_MAGIC, Command, encode, parse_whole
from islandora_job.errors import IslandoraJobError, ProtocolError

#: Bytes of an over-size job's payload kept for its failure record.
HEAD_SIZE: Final = 4096
#: An over-size job's handle, function and unique key must fit in this many bytes (gearmand's are far shorter).
_PREFIX_LIMIT: Final = 4096
ECHO_TOKEN: Final = b"islandora-job"
_HEADER: Final = struct.Struct("!4sII")
_NOOP: Final = encode(Command.NOOP, response=True)
_KNOWN: Final = frozenset(int(command) for command in Command)
_ASSIGN: Final = int(Command.JOB_ASSIGN_UNIQ)


class Phase(enum.Enum):
    PROBING = "probing"
    READY = "ready"
    GRABBING = "grabbing"
    WORKING = "working"
    EMPTY = "empty"
    SLEEPING = "sleeping"
    CLOSED = "closed"

    # A member is its own identity, so the C identity hash serves, not Enum's Python-level one: the phase table is
    # looked up by phase three times per job.
    __hash__ = object.__hash__


class RemoteProtocolError(ProtocolError):
    """The server broke the protocol: the connection must be dropped (and may be reconnected)."""


class LocalProtocolError(IslandoraJobError):
    """We asked for an action the current phase does not allow: a bug in the caller, never the server's fault."""


# --- events: what the server said (frozen, validated once) and what we do -------------------------------------


@dataclass(frozen=True, slots=True)
class Echoed:
    """ECHO_RES: the server is alive and has read our registration."""


@dataclass(frozen=True, slots=True)
class Woken:
    """One or more NOOPs: the server has work for us (or a stale wake-up)."""


@dataclass(frozen=True, slots=True)
class NoJob:
    """NO_JOB in answer to our grab."""


@dataclass(frozen=True, slots=True)
class JobAssigned:
    handle: bytes
    function: bytes
    unique: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class OversizeJob:
    """A JOB_ASSIGN_UNIQ over the size cap: assigned to us, but its payload was skipped, not buffered."""

    handle: bytes
    function: bytes
    unique: bytes
    size: int
    head: bytes


ServerEvent = Echoed | Woken | NoJob | JobAssigned | OversizeJob


class Grab:
    """Our GRAB_JOB_UNIQ."""


class Sleep:
    """Our PRE_SLEEP."""


class Wake:
    """A wake-up we decide on ourselves: the defensive grab while asleep, in case a NOOP was lost."""


class Answer:
    """The result of the job in hand (WORK_COMPLETE, WORK_FAIL…)."""


#: The whole state machine: phase → what happened → next phase. A pair that is missing is a protocol error.
TRANSITIONS: Final[dict[Phase, dict[type, Phase]]] = {
    Phase.PROBING: {Echoed: Phase.READY, Woken: Phase.PROBING},
    Phase.READY: {Grab: Phase.GRABBING, Woken: Phase.READY},
    Phase.GRABBING: {
        JobAssigned: Phase.WORKING,
        OversizeJob: Phase.WORKING,
        NoJob: Phase.EMPTY,
        Woken: Phase.GRABBING,
    },
    Phase.WORKING: {Answer: Phase.READY, Woken: Phase.WORKING},
    Phase.EMPTY: {Sleep: Phase.SLEEPING, Woken: Phase.EMPTY},
    Phase.SLEEPING: {Woken: Phase.READY, Wake: Phase.READY},
    Phase.CLOSED: {},
}

_GRAB: Final = encode(Command.GRAB_JOB_UNIQ)
_PRE_SLEEP: Final = encode(Command.PRE_SLEEP)


class WorkerProtocol:
    """One worker connection's protocol state. Create one per TCP connection; send :meth:`opening` first."""

    def __init__(self, registration: bytes, *, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self.phase = Phase.PROBING
        self._registration = registration
        self._max_packet = max_packet
        self._buffer = bytearray()
        self._skip = 0  # bytes of an over-size job still to discard
        self._skip_total = 0
        self._oversize: OversizeJob | None = None
        self._error: RemoteProtocolError | None = None

    def __repr__(self) -> str:
        return f"<WorkerProtocol {self.phase.value}>"

    # --- the phase table ----------------------------------------------------------------------------------------

    def _move(self, event: type) -> None:
        next_phase = TRANSITIONS[self.phase].get(event)
        if next_phase is None:
            if event in (Grab, Sleep, Wake, Answer):
                raise LocalProtocolError(f"cannot {event.__name__.lower()} in phase {self.phase.value}")
            self._fail(f"unexpected {_WIRE_NAMES[event]} in phase {self.phase.value}")
        self.phase = next_phase

    def _fail(self, reason: str) -> NoReturn:
        self.phase = Phase.CLOSED
        self._buffer.clear()
        self._error = RemoteProtocolError(reason)
        raise self._error

    # --- our side -----------------------------------------------------------------------------------------------

    def opening(self) -> bytes:
        """The first bytes on a new connection: registration and the liveness probe."""
        return self._registration + encode(Command.ECHO_REQ, ECHO_TOKEN)

    def grab(self) -> bytes:
        self._move(Grab)
        return _GRAB

    def sleep(self) -> bytes:
        self._move(Sleep)
        return _PRE_SLEEP

    def wake(self) -> None:
        self._move(Wake)

    def answer(self, packets: bytes) -> bytes:
        """Finish the job in hand with ``packets`` (its encoded result)."""
        self._move(Answer)
        return packets

    @property
    def awaiting_answer(self) -> bool:
        """True while the server owes us an answer (to the probe or to a grab): the loop keeps a deadline."""
        return self.phase in (Phase.PROBING, Phase.GRABBING)

    @property
    def buffered(self) -> bool:
        """True when bytes received are not yet returned as events."""
        return bool(self._buffer) or self._oversize is not None

    @property
    def received(self) -> int:
        """Bytes of the packet being received that have arrived so far (its declared length is no evidence of
        anything: a server can declare 4 GiB and send nothing more)."""
        if self._skip:
            return int(HEADER_SIZE + self._skip_total - self._skip)
        return len(self._buffer)

    @property
    def mid_packet(self) -> bool:
        """True while part of a packet other than a NOOP has arrived: the server is answering, slowly."""
        return self._skip > 0 or (len(self._buffer) > 0 and not _NOOP.startswith(bytes(self._buffer[:HEADER_SIZE])))

    # --- their side ---------------------------------------------------------------------------------------------

    def receive_data(self, data: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        if self._skip:
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
        self._buffer += data

    def next_event(self) -> ServerEvent | None:
        """The next whole event from the server, or ``None`` until more bytes arrive."""
        if self._error is not None:
            raise self._error
        if self._skip:
            return None
        if self._oversize is not None:
            event: ServerEvent = self._oversize
            self._oversize = None
            self._move(OversizeJob)
            return event
        buffer = self._buffer
        if buffer.startswith(_NOOP):
            end = HEADER_SIZE
            while buffer.startswith(_NOOP, end):
                end += HEADER_SIZE
            del buffer[:end]
            self._move(Woken)
            return Woken()
        if len(buffer) < HEADER_SIZE:
            if buffer and not RES_MAGIC.startswith(bytes(buffer[:4])):
                self._fail(f"malformed Gearman packet: bad magic {bytes(buffer[:4])!r}")
            return None
        magic, command, length = _HEADER.unpack_from(buffer)
        if magic != RES_MAGIC:
            self._fail(f"malformed Gearman packet: bad magic {magic!r}")
        if command not in _KNOWN:
            self._fail(f"malformed Gearman packet: unknown packet type {command}")
        if length > self._max_packet:
            if command == Command.JOB_ASSIGN_UNIQ:
                return self._oversize_job(length)
            self._fail(f"malformed Gearman packet: {length} bytes exceeds the cap of {self._max_packet}")
        end = HEADER_SIZE + length
        if len(buffer) < end:
            return None
        with memoryview(buffer) as view:
            if command == _ASSIGN:  # the packet of every job: split here (one copy), not through the codec's tables
                parts = view[HEADER_SIZE:end].tobytes().split(b"\0", 3)
            else:
                packet_bytes = view[:end].tobytes()
        del buffer[:end]
        if command == _ASSIGN:
            if len(parts) != 4:
                self._fail(f"malformed Gearman packet: JOB_ASSIGN_UNIQ with {len(parts)} argument(s), expecting 4")
            self._move(JobAssigned)
            return JobAssigned(*parts)
        try:  # the codec parses (and checks) the arguments
            packet = parse_whole(packet_bytes, response=True)
        except ProtocolError as exc:
            self._fail(str(exc))
        return self._event(packet.command, packet.args)

    def _event(self, command: Command, args: dict[str, bytes]) -> ServerEvent:
        event: ServerEvent
        if command is Command.JOB_ASSIGN_UNIQ:
            event = JobAssigned(args["job_handle"], args["task"], args["unique"], args["data"])
        elif command is Command.NO_JOB:
            event = NoJob()
        elif command is Command.ECHO_RES:
            event = Echoed()
        elif command is Command.ERROR:
            self._fail(f"server error {args['error_code']!r}: {args['error_text']!r}")
        else:
            self._fail(f"unexpected {command.name} in phase {self.phase.value}")
        self._move(type(event))
        return event

    def _oversize_job(self, length: int) -> ServerEvent | None:
        """Keep the arguments and the payload's head of an over-size job; skip the rest of it."""
        if self.phase is not Phase.GRABBING:
            self._fail(f"unexpected JOB_ASSIGN_UNIQ in phase {self.phase.value}")
        wanted = HEADER_SIZE + min(length, _PREFIX_LIMIT + HEAD_SIZE)
        if len(self._buffer) < wanted:
            return None
        body = bytes(self._buffer[HEADER_SIZE:wanted])
        parts = body.split(b"\0", 3)
        if len(parts) < 4 or len(parts[0]) + len(parts[1]) + len(parts[2]) > _PREFIX_LIMIT:
            self._fail("over-size JOB_ASSIGN_UNIQ without handle, function and unique key")
        handle, function, unique, data = parts
        self._oversize = OversizeJob(handle, function, unique, length, data[:HEAD_SIZE])
        total = HEADER_SIZE + length
        if len(self._buffer) >= total:
            del self._buffer[:total]
        else:
            self._skip = total - len(self._buffer)
            self._skip_total = length
            self._buffer.clear()
        return self.next_event()


_WIRE_NAMES: Final[dict[type, str]] = {
    Echoed: "ECHO_RES",
    Woken: "NOOP",
    NoJob: "NO_JOB",
    JobAssigned: "JOB_ASSIGN_UNIQ",
    OversizeJob: "JOB_ASSIGN_UNIQ",
}
