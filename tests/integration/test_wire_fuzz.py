"""Wire fuzzing of a real worker: a fake gearmand answers GRAB_JOB_UNIQ with arbitrary bytes.

The packet reader alone is fuzzed in tests/unit/test_codec.py. Here the whole worker loop reads the fuzzed
stream: garbage, valid packets in any order (a JOB_ASSIGN_UNIQ with any handle, function or payload, an ERROR, a
NOOP, a packet type a worker never expects), and valid packets cut or corrupted, with or without a NO_JOB after
them. Whatever arrives, the worker must neither crash nor hang: it answers what it can, drops a connection it
cannot read, reconnects, and at the end still runs a job correctly.

A hang shows only if the server keeps the connection open (a closed one ends any wait), so after each stream the
fake server holds it open for ``HOLD`` seconds, sending a NOOP every ``NOOP_EVERY`` s of quiet as a live but useless
gearmand would, and requires the worker to come back in sync (PRE_SLEEP or a new grab) or to hang up. Budget:
``EXAMPLES`` streams; each costs at most one grab deadline (``GRAB_TIMEOUT``) and one reconnection.

The margins do not depend on the machine's load: the NOOPs come faster than the grab deadline (so a worker that
let them, or any trickle, extend it would hang every time, not when a race goes one way), and ``HOLD`` is 25 grab
deadlines. (With NOOPs every grab deadline exactly, a header declaring 4 GiB hung the old rule only when the fake
won the race to its timer, one stream in a few hundred under load.)
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from islandora_job.address import ServerAddress
from islandora_job.codec import FIELDS, Command, PacketReader, encode
from islandora_job.errors import ProtocolError
from islandora_job.worker.process import Worker
from islandora_job.worker.registry import JobSpec, Registry
from islandora_job.worker.router import Router

EXAMPLES = 120
FUNCTION = "fuzz_echo"
#: Seconds the fake server waits, connection open, for the worker to come back in sync or hang up.
HOLD = 5.0
#: The worker's deadline for an answer to its probe or grab, and the fake's NOOP cadence while it holds a connection.
GRAB_TIMEOUT = 0.2
NOOP_EVERY = GRAB_TIMEOUT / 2
NOOP = encode(Command.NOOP, response=True)
NO_JOB = encode(Command.NO_JOB, response=True)
no_nul = st.binary(max_size=24).filter(lambda b: b"\0" not in b)


@st.composite
def assignment(draw: st.DrawFn) -> bytes:
    """A JOB_ASSIGN_UNIQ for our function or another, with a good, bad or arbitrary payload."""
    handle = draw(st.sampled_from([b"H:fuzz:1", b"H:fuzz:2"]) | no_nul)
    function = draw(st.sampled_from([FUNCTION.encode(), b"other"]) | no_nul)
    data = draw(st.sampled_from([b'{"func":"echo","args":["x"]}', b"{}", b"not json"]) | st.binary(max_size=64))
    return encode(Command.JOB_ASSIGN_UNIQ, handle, function, draw(no_nul), data, response=True)


@st.composite
def any_packet(draw: st.DrawFn) -> bytes:
    """Any packet type with arbitrary arguments."""
    command = draw(st.sampled_from(list(Command)))
    names = FIELDS[command]
    args = [draw(no_nul) for _ in names[:-1]]
    if names:
        args.append(draw(st.binary(max_size=64)))
    return encode(command, *args, response=True)


server_packet = st.one_of(assignment(), any_packet())


def corrupt(data: bytes, position: int, value: int) -> bytes:
    if not data:
        return bytes([value])
    position %= len(data)
    return data[:position] + bytes([value]) + data[position + 1 :]


streams = st.one_of(
    st.just(NOOP),
    st.binary(min_size=1, max_size=200),
    st.lists(server_packet, min_size=1, max_size=4).map(b"".join),
    st.tuples(server_packet, st.integers(0, 200)).map(lambda t: t[0][: t[1] % max(len(t[0]), 1) + 1]),
    st.tuples(server_packet, st.integers(0, 400), st.integers(0, 255)).map(lambda t: corrupt(*t)),
)


class FakeServer(threading.Thread):
    """Accepts the worker, echoes its probe, waits for its GRAB_JOB_UNIQ, sends a script, watches what follows."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.scripts: list[tuple[bytes, bool]] = []
        self.lock = threading.Condition()
        self.connections = 0
        self.done_scripts = 0
        self.outcomes: list[str] = []
        self.answers: list[tuple[Command, dict[str, bytes]]] = []
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                self.connections += 1
                self.serve(conn)

    def packets(self, conn: socket.socket, reader: PacketReader, until: float) -> Iterator[Command | None]:
        """The worker's packets until ``until``; None every ``NOOP_EVERY`` s of quiet; ends when the worker hangs up."""
        while time.monotonic() < until:
            conn.settimeout(max(0.01, min(NOOP_EVERY, until - time.monotonic())))
            try:
                data = conn.recv(65536)
            except TimeoutError:
                yield None
                continue
            if not data:
                return
            reader.feed(data)
            while (packet := reader.next_packet()) is not None:
                if packet.command in (Command.WORK_COMPLETE, Command.WORK_FAIL, Command.WORK_EXCEPTION):
                    self.answers.append((packet.command, dict(packet.args)))
                if packet.command is Command.ECHO_REQ:
                    conn.sendall(encode(Command.ECHO_RES, packet["data"], response=True))
                yield packet.command
        raise TimeoutError

    def serve(self, conn: socket.socket) -> None:
        reader = PacketReader(expect="request")
        script: tuple[bytes, bool] | None = None
        outcome = "hung up"
        try:
            for command in self.packets(conn, reader, time.monotonic() + 5):
                if command is Command.GRAB_JOB_UNIQ:
                    break
            else:
                return
            with self.lock:
                script = self.scripts.pop(0) if self.scripts else None
            if script is None:
                conn.sendall(NO_JOB)
                for _ in self.packets(conn, reader, time.monotonic() + 0.5):
                    pass
                return
            stream, answered = script
            conn.sendall(stream + (NO_JOB if answered else b""))
            # Hold the connection open, alive but useless, until the worker is in sync again or hangs up.
            for command in self.packets(conn, reader, time.monotonic() + HOLD):
                if command in (Command.PRE_SLEEP, Command.GRAB_JOB_UNIQ):
                    outcome = "in sync"
                    break
                conn.sendall(NOOP)
        except TimeoutError:
            outcome = f"hung: neither in sync nor hung up within {HOLD}s"
        except (OSError, ProtocolError):
            pass
        finally:
            with self.lock:
                if script is not None:
                    self.outcomes.append(outcome)
                    self.done_scripts += 1
                self.lock.notify_all()

    def play(self, script: bytes, answered: bool, timeout: float = 15.0) -> str:
        with self.lock:
            target = self.done_scripts + 1
            self.scripts.append((script, answered))
            assert self.lock.wait_for(lambda: self.done_scripts >= target, timeout), "the worker never came back"
            return self.outcomes[-1]


def make_worker(port: int) -> Worker:
    registry = Registry()
    registry.add(JobSpec(name="echo", fn=lambda text: text, alias=FUNCTION, where="test_wire_fuzz"))
    return Worker(
        [ServerAddress.parse(f"127.0.0.1:{port}")],
        Router(registry, default_timeout=5),
        functions=[FUNCTION],
        idle_grab_interval=0.2,
        connect_timeout=1.0,
        grab_timeout=GRAB_TIMEOUT,
        reconnect_backoff_cap=0.3,
    )


def test_fuzzed_server_streams_never_crash_or_hang_the_worker() -> None:
    server = FakeServer()
    server.start()
    worker = make_worker(server.port)
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            crashed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    played = {"streams": 0}
    try:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(streams, st.booleans())
        @example(script=NOOP, answered=False)  # a grab never answered, on a live connection: the hang of issue 10
        @example(script=b"\0RES\0\0\0\x01", answered=False)  # a header completed by the NOOP trickle, never its body
        @example(script=b"\0RES\0\0\0\x1f\xff\xff\xff\xff", answered=False)  # a 4 GiB job declared, then NOOPs
        def check(script: bytes, answered: bool) -> None:
            outcome = server.play(script, answered)
            played["streams"] += 1
            assert thread.is_alive(), f"the worker died: {crashed}"
            assert not outcome.startswith("hung:"), (outcome, script, answered)

        check()
        assert played["streams"] >= EXAMPLES // 2
        # Still a working worker: a valid job is answered with its result on that handle.
        server.answers.clear()
        job = encode(
            Command.JOB_ASSIGN_UNIQ, b"H:fuzz:final", FUNCTION, b"", b'{"func":"echo","args":["alive"]}', response=True
        )
        server.play(job, answered=True)
        assert (Command.WORK_COMPLETE, {"job_handle": b"H:fuzz:final", "data": b"alive"}) in server.answers
        assert thread.is_alive() and not crashed
    finally:
        worker.stop()
        thread.join(10)
        server.stopping = True
        server.join(5)
        with contextlib.suppress(OSError):
            server.listener.close()
    assert not thread.is_alive(), "the worker did not stop"
