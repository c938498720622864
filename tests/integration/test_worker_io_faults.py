"""One bad server must not stall the worker: fake servers that misbehave, and a real gearmand frozen with SIGSTOP.

Each test runs a worker on two servers, a real gearmand and a bad one, and pings through the real one the whole
time: every ping must be answered within a bound far below the worker's ``io_timeout`` (30 s), which is what a
frozen or silent server cost each ping until the loop became event-driven. The deadlines are set short
(``grab_timeout``) so that the tests run in seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from islandora_job.address import ServerAddress
from islandora_job.client import JobClient
from islandora_job.codec import DEFAULT_MAX_PACKET, RES_MAGIC, Command, PacketReader, encode
from islandora_job.errors import JobFailed
from islandora_job.worker.deadletters import DeadLetterStore
from islandora_job.worker.process import Worker
from islandora_job.worker.registry import JobSpec, Registry
from islandora_job.worker.router import Router
from tests.support.gearmand import Gearmand
from tests.support.peers import PlainClient, wait_for
from tests.support.pool import running_pool

FUNCTION = "io.echo"
#: Settings that make the deadlines short, so a stall shows in seconds; a stall of the old loop lasted 30 s.
WORKER_SETTINGS = {"idle_grab_interval": 0.3, "connect_timeout": 0.5, "grab_timeout": 0.5}
#: A ping through the healthy server is answered within this, whatever the bad server does (grab_timeout + margin
#: for a loaded machine).
PING_BOUND = 2.0
NOOP = encode(Command.NOOP, response=True)

Behaviour = Callable[[socket.socket, threading.Event], None]


class FakeServer:
    """Accepts connections and hands each to ``behaviour`` in a thread; counts them."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.behaviour = behaviour
        self.connections = 0
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.behaviour(conn, self.stopping)

    def __enter__(self) -> FakeServer:
        self.acceptor.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.acceptor.join(5)
        for thread in self.threads:
            thread.join(5)
        self.listener.close()


def _requests(conn: socket.socket, reader: PacketReader, stopping: threading.Event) -> Iterator[Command | None]:
    """The commands the worker sends (None every 50 ms of quiet), until it hangs up or the test ends."""
    conn.settimeout(0.05)
    while not stopping.is_set():
        try:
            data = conn.recv(65536)
        except TimeoutError:
            yield None
            continue
        if not data:
            return
        reader.feed(data)
        while (packet := reader.next_packet()) is not None:
            yield packet.command


def silent(conn: socket.socket, stopping: threading.Event) -> None:
    """Accepts, reads, never says a word."""
    for _ in _requests(conn, PacketReader(expect="request"), stopping):
        pass


def echo_only(conn: socket.socket, stopping: threading.Event) -> None:
    """Answers the probe, then never says another word."""
    for command in _requests(conn, PacketReader(expect="request"), stopping):
        if command is Command.ECHO_REQ:
            conn.sendall(encode(Command.ECHO_RES, b"", response=True))


def trickle(conn: socket.socket, stopping: threading.Event) -> None:
    """Answers the probe, then sends a NOOP every 0.2 s and never answers a grab."""
    next_noop = time.monotonic()
    for command in _requests(conn, PacketReader(expect="request"), stopping):
        if command is Command.ECHO_REQ:
            conn.sendall(encode(Command.ECHO_RES, b"", response=True))
        if time.monotonic() >= next_noop:
            conn.sendall(NOOP)
            next_noop = time.monotonic() + 0.2


def flood(conn: socket.socket, stopping: threading.Event) -> None:
    """Answers the probe, then sends NOOPs as fast as it can and never answers a grab."""
    reader = PacketReader(expect="request")
    burst = NOOP * 5000
    conn.settimeout(0.05)
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            conn.sendall(burst)
        with contextlib.suppress(TimeoutError, BlockingIOError):
            conn.setblocking(False)
            data = conn.recv(65536)
            if not data:
                return
            reader.feed(data)
            while (packet := reader.next_packet()) is not None:
                if packet.command is Command.ECHO_REQ:
                    conn.setblocking(True)
                    conn.sendall(encode(Command.ECHO_RES, b"", response=True))
        conn.settimeout(0.05)


def trickled_answer(conn: socket.socket, stopping: threading.Event) -> None:
    """Answers the probe, then answers each grab with a header declaring a 4 GiB job and one byte every 50 ms."""
    answering = False
    for command in _requests(conn, PacketReader(expect="request"), stopping):
        if command is Command.ECHO_REQ:
            conn.sendall(encode(Command.ECHO_RES, b"", response=True))
        elif command is Command.GRAB_JOB_UNIQ:
            conn.sendall(RES_MAGIC + struct.pack("!II", int(Command.JOB_ASSIGN_UNIQ), 2**32 - 1))
            answering = True
        elif command is None and answering:
            conn.sendall(b"x")


def garbage(conn: socket.socket, stopping: threading.Event) -> None:
    """Sends bytes that are not Gearman right after the accept, then keeps the connection open."""
    conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
    silent(conn, stopping)


def huge_header(conn: socket.socket, stopping: threading.Event) -> None:
    """Declares a 4 GiB packet right after the accept, then keeps the connection open."""
    conn.sendall(RES_MAGIC + struct.pack("!II", int(Command.NO_JOB), 2**32 - 1))
    silent(conn, stopping)


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def worker_on(addresses: list[str], **settings: float) -> Iterator[Captured]:
    """An in-process worker serving ``io.echo`` on ``addresses``; yields its captured log lines."""
    registry = Registry()
    registry.add(JobSpec(name=FUNCTION, fn=lambda text: text, where="test_worker_io_faults"), "test")
    worker = Worker(
        [ServerAddress.parse(a, check_host=False) for a in addresses],  # as the worker loads its servers
        Router(registry, default_timeout=5),
        **{**WORKER_SETTINGS, **settings},  # type: ignore[arg-type]
    )
    captured = Captured()
    worker_log = logging.getLogger("islandora_job.worker.process")
    previous = worker_log.level
    worker_log.setLevel(logging.INFO)
    worker_log.addHandler(captured)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield captured
        assert thread.is_alive(), "the worker died"
    finally:
        worker.stop()
        thread.join(10)
        worker_log.removeHandler(captured)
        worker_log.setLevel(previous)
    assert not thread.is_alive(), "the worker did not stop"


def ping_for(address: str, seconds: float, bound: float, pause: float = 0.1) -> list[float]:
    """Ping through ``address`` for ``seconds``; each round trip must stay under ``bound``. Returns them all."""
    times: list[float] = []
    end = time.monotonic() + seconds
    with PlainClient(address, timeout=bound + 10) as client:
        while time.monotonic() < end:
            text = f"ping {len(times)}"
            started = time.monotonic()
            answer = client.call(FUNCTION, text)
            elapsed = time.monotonic() - started
            assert answer.ok and answer.data == text.encode(), answer
            assert elapsed < bound, f"ping {len(times)} took {elapsed:.2f}s (bound {bound}s); all: {times}"
            times.append(elapsed)
            time.sleep(pause)
    return times


@pytest.mark.parametrize("behaviour", [silent, trickle, flood, trickled_answer], ids=lambda b: b.__name__)
def test_a_bad_server_does_not_stall_the_good_one(gearmand: Gearmand, behaviour: Behaviour) -> None:
    with FakeServer(behaviour) as bad, worker_on([f"127.0.0.1:{bad.port}", gearmand.address]):
        wait_for(lambda: bad.connections >= 1, message="the worker to connect to the bad server")
        times = ping_for(gearmand.address, 3.0, PING_BOUND)
    assert len(times) >= 5


@pytest.mark.parametrize("behaviour", [echo_only, trickle, trickled_answer], ids=lambda b: b.__name__)
def test_a_sole_server_that_never_answers_a_grab_is_dropped_and_a_stop_still_ends_the_worker(
    behaviour: Behaviour,
) -> None:
    """With one server the worker waits for a grab's answer in one blocking read, not in poll: the kernel must end
    that read at the grab deadline (the server is dropped, and reconnected with backoff), and a stop asked for
    meanwhile must end the worker within that deadline too."""
    with FakeServer(behaviour) as bad:
        with worker_on([f"127.0.0.1:{bad.port}"]) as log_lines:
            wait_for(lambda: bad.connections >= 3, message="reconnections after grab deadlines")
            asked = time.monotonic()
        stopped_in = time.monotonic() - asked
    assert stopped_in < PING_BOUND, stopped_in
    grab_timeout = WORKER_SETTINGS["grab_timeout"]
    assert any(f"no answer to our grab within {grab_timeout:g}s" in line for line in log_lines.lines), log_lines.lines


@pytest.mark.parametrize("behaviour", [garbage, huge_header], ids=lambda b: b.__name__)
def test_a_server_that_talks_nonsense_is_retried_with_growing_backoff_and_few_log_lines(
    gearmand: Gearmand, behaviour: Behaviour
) -> None:
    """A TCP connect is no success: the backoff (0.2 s doubling, full jitter down to a tenth) keeps growing, and
    the healthy server is served meanwhile."""
    with FakeServer(behaviour) as bad, worker_on([f"127.0.0.1:{bad.port}", gearmand.address]) as log_lines:
        wait_for(lambda: bad.connections >= 1, message="the first connection")
        ping_for(gearmand.address, 4.0, PING_BOUND)
        connections = bad.connections
    # The old loop reset its backoff on every connect: one connection every ~0.3 s (13+ in 4 s), two lines each.
    assert connections <= 9, connections
    failures = [line for line in log_lines.lines if f"127.0.0.1:{bad.port}" in line]
    assert 1 <= len(failures) <= 2, failures


def test_a_gearmand_frozen_with_sigstop_does_not_stall_the_other(tmp_path: Path, gearmand: Gearmand) -> None:
    """The issue's goal, with the defaults of a real pool: a job through the healthy server within 3 s, every time."""
    frozen = Gearmand(tmp_path)
    frozen.start()
    try:
        with running_pool(
            tmp_path,
            [frozen.address, gearmand.address],
            concurrency=1,
            env={"ISLANDORA_JOB_POOL_IDLE_GRAB_INTERVAL": "0.5"},  # grabs from the frozen server often
        ) as pool:
            pool.wait_registered(gearmand.port, "islandora_job.ping")
            pool.wait_registered(frozen.port, "islandora_job.ping")
            assert frozen.process is not None
            os.kill(frozen.process.pid, signal.SIGSTOP)
            try:
                times: list[float] = []
                end = time.monotonic() + 6.0
                with PlainClient(gearmand.address, timeout=40) as client:
                    while time.monotonic() < end:
                        started = time.monotonic()
                        assert client.call("islandora_job.ping").data == b"pong"
                        times.append(time.monotonic() - started)
                        time.sleep(0.05)
                assert max(times) < 3.0, times
                pool.wait_log(f"server {frozen.address} down")
            finally:
                os.kill(frozen.process.pid, signal.SIGCONT)
            # and once thawed, it is served again
            pool.wait_registered(frozen.port, "islandora_job.ping", timeout=15)
            with PlainClient(frozen.address, timeout=20) as client:
                assert client.call("islandora_job.ping").data == b"pong"
    finally:
        frozen.stop()


def test_an_oversize_job_fails_with_a_reason_and_a_dead_letter(tmp_path: Path, gearmand: Gearmand) -> None:
    """Over the packet cap the payload is skipped, not buffered, and the job is answered with why, and recorded."""
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "islandora_job_demo.echo")
        with JobClient([gearmand.address]) as client:
            with pytest.raises(JobFailed, match="exceeds the cap of 67108864 bytes"):
                client.submit("islandora_job_demo.echo", "x" * DEFAULT_MAX_PACKET, timeout=60)
            assert client.submit("islandora_job_demo.add", 1, 2, timeout=10) == b"3"  # the process still serves
        pool.wait_log("exceeds the cap")
    letters = DeadLetterStore(str(pool.dead_letters)).list()
    assert [letter.function for letter in letters] == ["islandora_job_demo.echo"]
    assert "exceeds the cap" in letters[0].error
    assert letters[0].payload.startswith(b'{"func":') and len(letters[0].payload) <= 4096
