"""The worker's protocol state machine without sockets: each input whole, byte by byte, and with trailing bytes."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from islandora_job.codec import HEADER_SIZE, RES_MAGIC, Command, encode
from islandora_job.worker.protocol import (
    ECHO_TOKEN,
    HEAD_SIZE,
    TRANSITIONS,
    Echoed,
    JobAssigned,
    LocalProtocolError,
    NoJob,
    OversizeJob,
    Phase,
    RemoteProtocolError,
    ServerEvent,
    Woken,
    WorkerProtocol,
)

REGISTRATION = encode(Command.CAN_DO, "f")


def res(command: Command, *args: bytes | str) -> bytes:
    return encode(command, *args, response=True)


ECHO = res(Command.ECHO_RES, ECHO_TOKEN)
NOOP = res(Command.NOOP)
NO_JOB = res(Command.NO_JOB)
JOB = res(Command.JOB_ASSIGN_UNIQ, b"H:1", b"f", b"u1", b'{"x": "\x00 nul inside data"}')
ASSIGNED = JobAssigned(b"H:1", b"f", b"u1", b'{"x": "\x00 nul inside data"}')


def whole(data: bytes) -> list[bytes]:
    return [data]


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def halves(data: bytes) -> list[bytes]:
    return [data[: len(data) // 2], data[len(data) // 2 :]]


CHUNKINGS = [whole, byte_by_byte, halves]


def feed(proto: WorkerProtocol, data: bytes, chunking: Callable[[bytes], list[bytes]]) -> list[ServerEvent]:
    events: list[ServerEvent] = []
    for chunk in chunking(data):
        proto.receive_data(chunk)
        while (event := proto.next_event()) is not None:
            events.append(event)
    return events


def ready(chunking: Callable[[bytes], list[bytes]] = whole) -> WorkerProtocol:
    proto = WorkerProtocol(REGISTRATION)
    assert feed(proto, ECHO, chunking) == [Echoed()]
    assert proto.phase is Phase.READY
    return proto


def test_opening_is_the_registration_then_an_echo_probe() -> None:
    proto = WorkerProtocol(REGISTRATION)
    assert proto.opening() == REGISTRATION + encode(Command.ECHO_REQ, ECHO_TOKEN)
    assert proto.phase is Phase.PROBING and proto.awaiting_answer


@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_a_whole_conversation(chunking: Callable[[bytes], list[bytes]]) -> None:
    proto = ready(chunking)
    assert proto.grab() == encode(Command.GRAB_JOB_UNIQ)
    assert proto.awaiting_answer
    # a stale NOOP before the answer is no answer
    assert feed(proto, NOOP + JOB, chunking) == [Woken(), ASSIGNED]
    assert proto.phase is Phase.WORKING and not proto.awaiting_answer
    result = encode(Command.WORK_COMPLETE, b"H:1", b"ok")
    assert proto.answer(result) == result
    assert proto.phase is Phase.READY
    proto.grab()
    assert feed(proto, NO_JOB, chunking) == [NoJob()]
    assert proto.phase is Phase.EMPTY
    assert proto.sleep() == encode(Command.PRE_SLEEP)
    assert feed(proto, NOOP, chunking) == [Woken()]
    assert proto.phase is Phase.READY


@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_trailing_bytes_wait_for_the_rest_of_their_packet(chunking: Callable[[bytes], list[bytes]]) -> None:
    proto = ready()
    proto.grab()
    assert feed(proto, NO_JOB + NOOP[:7], chunking) == [NoJob()]
    proto.sleep()
    assert proto.next_event() is None
    assert not proto.mid_packet  # part of a NOOP is no answer in progress
    assert feed(proto, NOOP[7:] + JOB[:10], chunking) == [Woken()]
    proto.grab()
    assert proto.mid_packet
    assert feed(proto, JOB[10:], chunking) == [ASSIGNED]


def test_received_counts_the_bytes_that_came_not_the_size_declared() -> None:
    """The loop's deadline for an answer in progress grows with what arrived: a 4 GiB header earns nothing."""
    proto = ready()
    proto.grab()
    huge = RES_MAGIC + struct.pack("!II", int(Command.JOB_ASSIGN_UNIQ), 2**32 - 1)
    proto.receive_data(huge + NOOP)
    assert proto.next_event() is None
    assert proto.mid_packet and proto.received == len(huge + NOOP)
    small = WorkerProtocol(REGISTRATION, max_packet=64)  # an over-size job being skipped still counts its bytes
    small.receive_data(ECHO)
    assert small.next_event() == Echoed()
    small.grab()
    big = res(Command.JOB_ASSIGN_UNIQ, b"H:1", b"f", b"u", b"x" * 10_000)
    small.receive_data(big[:9000])
    assert small.next_event() is None  # its head is kept, the rest is being skipped
    assert small.mid_packet and small.received == 9000
    small.receive_data(big[9000:])
    assert isinstance(small.next_event(), OversizeJob)
    assert not small.mid_packet and small.received == 0


def test_a_noop_flood_is_one_event() -> None:
    proto = ready()
    proto.grab()
    proto.receive_data(NOOP * 20_000 + NO_JOB)
    assert proto.next_event() == Woken()
    assert proto.next_event() == NoJob()
    assert proto.next_event() is None


def test_actions_out_of_phase_are_our_bug_not_the_servers() -> None:
    proto = WorkerProtocol(REGISTRATION)
    with pytest.raises(LocalProtocolError, match="cannot grab in phase probing"):
        proto.grab()
    with pytest.raises(LocalProtocolError, match="cannot answer in phase probing"):
        proto.answer(b"")
    assert proto.phase is Phase.PROBING  # still usable


@pytest.mark.parametrize(
    ("phase_setup", "data", "message"),
    [
        ("probing", JOB, "unexpected JOB_ASSIGN_UNIQ in phase probing"),
        ("ready", NO_JOB, "unexpected NO_JOB in phase ready"),
        ("ready", ECHO, "unexpected ECHO_RES in phase ready"),
        ("grabbing", res(Command.JOB_CREATED, b"H:1"), "unexpected JOB_CREATED in phase grabbing"),
        ("grabbing", res(Command.ERROR, b"E1", b"boom"), "server error b'E1': b'boom'"),
        ("grabbing", b"GARBAGE!" * 4, "bad magic"),
        ("grabbing", b"\0RES" + struct.pack("!II", 9999, 0), "unknown packet type 9999"),
        ("grabbing", b"\0RES" + struct.pack("!II", 31, 3) + b"H\0f", "JOB_ASSIGN_UNIQ with 2 argument"),
        ("grabbing", b"\0RES" + struct.pack("!II", 31, 0), "JOB_ASSIGN_UNIQ with 1 argument"),
    ],
)
def test_remote_errors_close_the_protocol(phase_setup: str, data: bytes, message: str) -> None:
    proto = WorkerProtocol(REGISTRATION) if phase_setup == "probing" else ready()
    if phase_setup == "grabbing":
        proto.grab()
    proto.receive_data(data)
    with pytest.raises(RemoteProtocolError, match=message):
        proto.next_event()
    assert proto.phase is Phase.CLOSED
    with pytest.raises(RemoteProtocolError):  # poisoned: framing is lost for good
        proto.receive_data(NOOP)


def test_a_4_gib_header_fails_at_once_without_waiting_for_the_body() -> None:
    proto = ready()
    proto.grab()
    proto.receive_data(RES_MAGIC + struct.pack("!II", int(Command.NO_JOB), 2**32 - 1))
    with pytest.raises(RemoteProtocolError, match="4294967295 bytes exceeds the cap"):
        proto.next_event()


@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_an_oversize_job_is_skipped_not_buffered(chunking: Callable[[bytes], list[bytes]]) -> None:
    proto = WorkerProtocol(REGISTRATION, max_packet=100)
    assert feed(proto, ECHO, whole) == [Echoed()]
    proto.grab()
    payload = b"P" * (HEAD_SIZE + 5000)
    big = res(Command.JOB_ASSIGN_UNIQ, b"H:big", b"f", b"u", payload)
    events = feed(proto, big + NOOP, chunking)
    assert events == [OversizeJob(b"H:big", b"f", b"u", len(big) - HEADER_SIZE, payload[:HEAD_SIZE]), Woken()]
    assert proto.phase is Phase.WORKING
    assert len(proto._buffer) == 0  # nothing of the payload was kept beyond the head
    proto.answer(b"")
    assert proto.phase is Phase.READY


def test_an_oversize_job_outside_a_grab_is_an_error() -> None:
    proto = WorkerProtocol(REGISTRATION, max_packet=10)
    proto.receive_data(JOB)
    with pytest.raises(RemoteProtocolError, match="unexpected JOB_ASSIGN_UNIQ in phase probing"):
        proto.next_event()


def test_every_phase_is_in_the_table_and_only_closed_is_a_dead_end() -> None:
    assert set(TRANSITIONS) == set(Phase)
    assert [phase for phase, moves in TRANSITIONS.items() if not moves] == [Phase.CLOSED]
