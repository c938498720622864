"""The client when servers misbehave: garbage, silence, restarts. Never a hang, never a lost submission."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from islandora_job.address import ServerAddress
from islandora_job.admin import AdminClient
from islandora_job.client import JobClient
from islandora_job.codec import RES_MAGIC, Command
from islandora_job.connection import Connection
from islandora_job.errors import ConnectionLost, ProtocolError, ServerUnavailable
from tests.integration.peers import cli_worker
from tests.support.gearmand import Gearmand


@contextlib.contextmanager
def fake_server(reply: Callable[[socket.socket], None]) -> Iterator[tuple[str, list[int]]]:
    """A TCP server on a free loopback port that answers every connection with ``reply``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    accepted: list[int] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    reply(conn)
                    # Hold the connection open until the client closes it (or we stop).
                    while not stop.is_set() and conn.recv(65536):
                        pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.parametrize(
    "garbage, reason",
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "bad magic"),
        (RES_MAGIC + struct.pack("!II", 4242, 0), "unknown packet type"),
        (RES_MAGIC + struct.pack("!II", Command.WORK_COMPLETE, 1 << 30), "exceeds the cap"),
    ],
)
def test_garbage_is_a_protocol_error_after_reconnecting(garbage: bytes, reason: str) -> None:
    with fake_server(lambda conn: conn.sendall(garbage)) as (address, accepted):
        started = time.monotonic()
        with JobClient([address]) as client, pytest.raises(ProtocolError, match=reason):
            client.submit_background("job")
        assert time.monotonic() - started < 10
    assert len(accepted) >= 2, "the client should drop the connection and try again on a fresh one"


def test_a_garbage_server_is_skipped_for_a_good_one(gearmand: Gearmand) -> None:
    with fake_server(lambda conn: conn.sendall(b"garbage!" * 4)) as (bad, _), JobClient([bad, gearmand.address]) as c:
        handles = [c.submit_background("job", i) for i in range(4)]
    assert all(h.startswith("H:") for h in handles)


def test_a_silent_server_is_given_up_on() -> None:
    with fake_server(lambda conn: None) as (address, _):
        started = time.monotonic()
        with JobClient([address], io_timeout=0.5, retry_window=0.5) as client, pytest.raises(ServerUnavailable) as info:
            client.submit_background("job")
        assert time.monotonic() - started < 10
    assert "no answer" in str(info.value)


@contextlib.contextmanager
def connected_to_a_mute_peer(io_timeout: float) -> Iterator[Connection]:
    """A Connection to a loopback peer that accepts and then neither reads nor writes."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        conn = Connection(ServerAddress("127.0.0.1", listener.getsockname()[1]), io_timeout=io_timeout)
        conn.connect()
        peer, _ = listener.accept()
        with peer:
            yield conn
        conn.close()


def test_a_connection_times_out_reading_from_a_silent_peer() -> None:
    """The I/O timeout is the kernel's (SO_RCVTIMEO); it must end a blocked read with a clear reason."""
    with connected_to_a_mute_peer(0.3) as conn:
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match="timed out"):
            conn.receive()
        waited = time.monotonic() - started
        assert not conn.connected, "a timed-out connection is closed, to be reconnected"
    assert 0.25 <= waited < 5, waited


def test_a_connection_times_out_writing_to_a_peer_that_never_reads() -> None:
    """SO_SNDTIMEO: a peer whose receive window stays full cannot block a sender for ever."""
    with connected_to_a_mute_peer(0.3) as conn:
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match="timed out"):
            conn.send(b"x" * (64 << 20))
        waited = time.monotonic() - started
    assert 0.25 <= waited < 5, waited


def test_background_jobs_survive_a_gearmand_restart(tmp_path: Path) -> None:
    """Every acknowledged background job is in the persistent queue, and one sent on a connection that the restart
    broke is re-sent, not lost. (Keyless jobs once shared one sqlite row per function: gearmand keys rows by
    unique key and function, so the client must never send an empty key.)"""
    queue = tmp_path / "queue.sqlite3"
    server = Gearmand(tmp_path, extra_args=["-q", "libsqlite3", f"--libsqlite3-db={queue}"])
    server.start()
    try:
        with JobClient([server.address]) as client:
            before = client.submit_batch([("persist", [i]) for i in range(50)], background=True)
            assert all(r.ok for r in before)
            server.restart()  # same port; the client's connection is now dead
            after = client.submit_background("persist", 50)
            assert after.startswith("H:")
        with AdminClient(server.address) as admin:
            assert {s.function: s.total for s in admin.status()}.get("persist") == 51
    finally:
        server.stop()


def test_submission_waits_for_a_restarting_server(gearmand: Gearmand) -> None:
    """The server is down for a moment while the client submits: the job goes through once it is back."""
    with JobClient([gearmand.address], retry_window=10) as client:
        client.submit_background("warmup")
        gearmand.stop()
        restarter = threading.Timer(0.5, gearmand.start)
        restarter.start()
        try:
            handle = client.submit_background("during_restart")
        finally:
            restarter.join()
    assert handle.startswith("H:")


def test_foreground_job_lost_with_its_server_is_reported(gearmand: Gearmand, tmp_path: Path) -> None:
    with cli_worker(gearmand.port, "slow", "sh", "-c", "sleep 30"), JobClient([gearmand.address]) as client:
        threading.Timer(0.5, gearmand.stop).start()
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match="may or may not have run"):
            client.submit("slow")
        assert time.monotonic() - started < 10
