"""The packet layer: every packet type round-trips, input split anywhere reassembles, garbage is refused."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from islandora_job.codec import FIELDS, REQ_MAGIC, RES_MAGIC, Command, Packet, PacketReader, encode
from islandora_job.errors import ProtocolError

no_nul = st.binary(max_size=40).filter(lambda b: b"\0" not in b)
any_bytes = st.binary(max_size=200)


@st.composite
def packets(draw: st.DrawFn) -> tuple[Command, tuple[bytes, ...]]:
    command = draw(st.sampled_from(list(Command)))
    names = FIELDS[command]
    args = tuple(draw(no_nul) for _ in names[:-1])
    if names:
        args += (draw(any_bytes),)
    return command, args


def read_all(data: bytes, *, expect: str = "response", chunk: int | None = None) -> list[Packet]:
    reader = PacketReader(expect=expect)
    out: list[Packet] = []
    step = chunk or max(len(data), 1)
    for start in range(0, len(data), step):
        reader.feed(data[start : start + step])
        while (packet := reader.next_packet()) is not None:
            out.append(packet)
    assert reader.buffered == 0
    return out


@settings(max_examples=400)
@given(packets(), st.booleans())
def test_every_packet_type_round_trips(packet: tuple[Command, tuple[bytes, ...]], response: bool) -> None:
    command, args = packet
    data = encode(command, *args, response=response)
    [parsed] = read_all(data, expect="response" if response else "request")
    assert parsed.command is command
    assert tuple(parsed.args[name] for name in FIELDS[command]) == args


@settings(max_examples=200)
@given(st.lists(packets(), min_size=1, max_size=8), st.integers(min_value=1, max_value=17))
def test_a_stream_split_anywhere_reassembles(stream: list[tuple[Command, tuple[bytes, ...]]], chunk: int) -> None:
    data = b"".join(encode(command, *args, response=True) for command, args in stream)
    whole = read_all(data)
    assert [(p.command, p.args) for p in read_all(data, chunk=chunk)] == [(p.command, p.args) for p in whole]
    assert [p.command for p in whole] == [command for command, _ in stream]


@settings(max_examples=600)
@given(
    st.sampled_from(list(Command)),
    st.lists(st.one_of(st.binary(max_size=12), st.text(max_size=6), st.sampled_from([b"\0", "a\0", b"x\0y"]))),
    st.booleans(),
)
def test_encoding_is_pygearmans_byte_for_byte(command: Command, args: list[bytes | str], response: bool) -> None:
    """Our struct packing against pygearman's ``pack_binary_command``, the definition of the format we keep
    (decision 0001): the same bytes for every packet type, and an error wherever pygearman refuses (a wrong
    number of arguments, a NUL outside the last one)."""
    from gearman import errors as gearman_errors
    from gearman import protocol as gp

    names = FIELDS[command]
    args = args[: len(names)] if len(args) > len(names) and len(args) % 3 else args
    try:
        theirs = gp.pack_binary_command(command.value, dict(zip(names, args, strict=True)), is_response=response)
    except (gearman_errors.ProtocolError, ValueError):
        with pytest.raises(ValueError):
            encode(command, *args, response=response)
        return
    assert encode(command, *args, response=response) == theirs


def test_encoding_refuses_what_is_neither_bytes_nor_text() -> None:
    with pytest.raises(ValueError, match=r"SUBMIT_JOB.*int"):
        encode(Command.SUBMIT_JOB, "f", "u", 5)  # type: ignore[arg-type]


def test_byte_at_a_time() -> None:
    data = encode(Command.JOB_ASSIGN_UNIQ, b"H:x:1", b"fn", b"u", b"payload\0with\0nuls", response=True)
    [packet] = read_all(data, chunk=1)
    assert packet["data"] == b"payload\0with\0nuls"
    assert packet["unique"] == b"u"


def test_trailing_partial_packet_waits() -> None:
    reader = PacketReader()
    data = encode(Command.NOOP, response=True) + encode(Command.NO_JOB, response=True)[:5]
    reader.feed(data)
    assert reader.next_packet() == Packet(Command.NOOP, {})
    assert reader.next_packet() is None
    assert reader.buffered == 5


def test_str_arguments_are_utf8() -> None:
    data = encode(Command.SUBMIT_JOB, "fünf", "", "ü")
    [packet] = read_all(data, expect="request")
    assert packet["task"] == "fünf".encode()


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\0RES" + struct.pack("!II", 9999, 0), "unknown packet type"),
        (b"\0RES" + struct.pack("!II", 77, 0), "unknown packet type"),
        (b"HTTP/1.1 400 Bad Request\r\n", "bad magic"),
        (REQ_MAGIC + struct.pack("!II", 6, 0), "bad magic"),
        (b"\0RE", None),  # a prefix of the magic is not an error yet
        (b"\0RX", "bad magic"),
        (RES_MAGIC + struct.pack("!II", 6, 3) + b"abc", "Expected no binary payload"),
        (RES_MAGIC + struct.pack("!II", 13, 5) + b"H:x:1", "argument"),
    ],
)
def test_garbage_is_a_protocol_error(data: bytes, reason: str | None) -> None:
    reader = PacketReader()
    reader.feed(data)
    if reason is None:
        assert reader.next_packet() is None
        return
    with pytest.raises(ProtocolError, match=reason):
        reader.next_packet()
    # A reader that lost its framing stays failed: the owner must reconnect.
    with pytest.raises(ProtocolError):
        reader.feed(encode(Command.NOOP, response=True))
    assert reader.buffered == 0


def test_oversized_packet_is_refused_from_its_header() -> None:
    reader = PacketReader(max_packet=1024)
    reader.feed(RES_MAGIC + struct.pack("!II", Command.WORK_COMPLETE, 10_000_000))
    with pytest.raises(ProtocolError, match="exceeds the cap"):
        reader.next_packet()


def test_encode_checks_argument_count_and_nuls() -> None:
    with pytest.raises(ValueError, match="takes 3 argument"):
        encode(Command.SUBMIT_JOB, b"fn")
    with pytest.raises(ValueError, match="NUL byte in 'task'"):
        encode(Command.SUBMIT_JOB, b"f\0n", b"", b"data")


@settings(max_examples=2000)
@given(st.binary(max_size=300), st.sampled_from(["response", "request"]))
def test_arbitrary_bytes_never_crash_or_hang(data: bytes, expect: str) -> None:
    """Whatever arrives, the reader returns packets, waits, or raises ProtocolError; nothing else."""
    reader = PacketReader(expect=expect, max_packet=4096)
    reader.feed(data)
    try:
        for _ in range(len(data) + 1):
            if reader.next_packet() is None:
                break
    except ProtocolError:
        pass
