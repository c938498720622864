"""The ``islandora-job`` command under hostile input and failing peers: exit codes, one-line errors, no traceback.

Real processes: the command as an operator runs it, a real gearmand (killed, frozen with SIGSTOP, or cut off by a
DROP rule, as a host that died), and fake servers where gearmand cannot misbehave (an endless admin answer, one
with no newline, a trickle, a hostile job exception text).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from islandora_job.admin import AdminClient
from islandora_job.codec import Command, PacketReader, encode
from islandora_job.errors import IslandoraJobError
from tests.integration.peers import cli_worker
from tests.integration.test_cli_jobs import CLI, run
from tests.support.gearmand import Gearmand, admin

#: The notice a foreground submit gives before it waits for a function no worker serves: said, not an error.
NO_WORKER_NOTICE = "islandora-job: no worker serves function "


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith(("usage:", NO_WORKER_NOTICE))]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], result.stderr


# -- usage errors: exit 2, one line, before anything is submitted ---------------------------------------------------


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        (["--uid", "²"], "--uid"),  # int() takes it; it is no uid
        (["--uid=--5"], "--uid"),
        (["--uid", "9" * 5000], "--uid"),
        (["--timeout", "inf"], "--timeout"),  # was queued, then the client crashed
        (["--timeout", "nan"], "--timeout"),
        (["--timeout", "1e300"], "--timeout"),
        (["[" * 5000 + "]" * 5000], "nested deeper"),
        (["[" * 60000 + "]" * 60000], "nested deeper"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(gearmand: Gearmand, option: list[str], needle: str) -> None:
    result = run("submit", "never_queued", *option, "--server", gearmand.address)
    assert_one_line(result, 2, needle)
    assert "never_queued" not in admin(gearmand.port, "status")  # nothing was submitted


def test_a_json_argument_100000_levels_deep_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from islandora_job.cli.main import main

    assert main(["submit", "never_queued", "[" * 100_000 + "]" * 100_000, "--server", "127.0.0.1:1"]) == 2
    assert "nested deeper" in capsys.readouterr().err


# -- the job completed, its output could not be written: exit 5 ----------------------------------------------------


def test_a_closed_or_full_stdout_after_the_job_completed(gearmand: Gearmand) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}
    argv = [CLI, "submit", "echo", "done", "--server", gearmand.address]
    with cli_worker(gearmand.port, "echo", "cat"):
        closed = subprocess.run(
            ["/bin/sh", "-c", 'exec "$@" >&-', "sh", *argv], stderr=subprocess.PIPE, text=True, timeout=30, env=env
        )
        with open("/dev/full", "w") as full:
            filled = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True, timeout=30, env=env)
        reader, writer = os.pipe()
        os.close(reader)  # a reader that went away: EPIPE
        with os.fdopen(writer, "w") as broken:
            piped = subprocess.run(argv, stdout=broken, stderr=subprocess.PIPE, text=True, timeout=30, env=env)
    for result, needle in ((closed, "closed"), (filled, "No space left"), (piped, "Broken pipe")):
        assert_one_line(result, 5, "stdout", needle)


# -- a lost connection after the server accepted the job: exit 4, not 3 ---------------------------------------------


def _wait_queued(port: int, function: str, timeout: float = 10.0) -> None:
    """Wait until gearmand has queued the job, and then a moment for its JOB_CREATED to reach the client: gearmand
    lists the job before its I/O thread has sent the answer, and a job the client never saw acknowledged is one
    it rightly re-sends (exit 3 when no server takes it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in admin(port, "status").splitlines():
            if line.split("\t")[0] == function:
                time.sleep(0.5)
                return
        time.sleep(0.02)
    raise AssertionError(f"{function} was never queued")


def _submit(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}
    return subprocess.Popen([CLI, "submit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(process: subprocess.Popen[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_connection_lost_after_the_job_was_accepted_is_outcome_unknown(gearmand: Gearmand) -> None:
    client = _submit("accepted_then_lost", "--server", gearmand.address)
    _wait_queued(gearmand.port, "accepted_then_lost")
    gearmand.stop(signal.SIGKILL)
    result = _finish(client, 30)
    assert_one_line(result, 4, "outcome unknown", "may or may not have run")


@contextlib.contextmanager
def dropped(port: int) -> Iterator[None]:
    """Every packet to and from a loopback port dropped: to its peers, the host behind it has died."""
    if os.geteuid() != 0:
        raise AssertionError("iptables needs root: run the tests as root, as CI does")
    rules = [["INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
             ["INPUT", "-p", "tcp", "--sport", str(port), "-j", "DROP"]]  # fmt: skip
    for rule in rules:
        subprocess.run(["iptables", "-w", "-I", *rule], check=True)
    try:
        yield
    finally:
        for rule in rules:
            subprocess.run(["iptables", "-w", "-D", *rule], check=True)


def test_a_server_whose_host_died_is_detected_without_a_timeout(gearmand: Gearmand) -> None:
    """No --timeout, the server's host gone silent: keepalive ends the wait (here set to 3 s; 90 s by default)."""
    client = _submit("host_dies", "--server", gearmand.address, "--dead-peer-timeout", "3")
    _wait_queued(gearmand.port, "host_dies")
    with dropped(gearmand.port):
        started = time.monotonic()
        result = _finish(client, 60)
        waited = time.monotonic() - started
    assert_one_line(result, 4, "outcome unknown")
    assert waited < 30, waited  # 3 s of keepalive, with a wide margin for a loaded machine


def test_a_frozen_server_is_waited_on_until_the_timeout(gearmand: Gearmand) -> None:
    """A SIGSTOPped gearmand still answers TCP (the kernel does): only --timeout ends the wait, as documented."""
    assert gearmand.process is not None
    client = _submit("frozen", "--server", gearmand.address, "--dead-peer-timeout", "1", "--timeout", "6")
    _wait_queued(gearmand.port, "frozen")
    gearmand.process.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3.5)  # three times the dead-peer time
        assert client.poll() is None, "a live but frozen server was declared dead"
        result = _finish(client, 60)
    finally:
        gearmand.process.send_signal(signal.SIGCONT)
    assert_one_line(result, 1, "timed out")


# -- admin answers from a hostile server: bounded in size and time --------------------------------------------------


@contextlib.contextmanager
def fake_server(serve: Callable[[socket.socket], None]) -> Iterator[tuple[str, list[int]]]:
    """A server on a free loopback port; ``serve`` gets each accepted connection. Yields its address and a list
    that receives the number of bytes each connection got out before the peer left."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()
    sent: list[int] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                counter = _Counting(conn, stop)
                # OSError: the peer left; ProtocolError: not a Gearman packet (the admin "status" a foreground
                # submit asks first): either way the next connection is served
                with contextlib.suppress(OSError, IslandoraJobError):
                    serve(counter)  # type: ignore[arg-type]
                sent.append(counter.sent)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}", sent
    finally:
        stop.set()
        thread.join(15)
        listener.close()


class _Counting:
    def __init__(self, conn: socket.socket, stop: threading.Event) -> None:
        self.conn, self.stop, self.sent = conn, stop, 0

    def recv(self, size: int) -> bytes:
        return self.conn.recv(size)

    def sendall(self, data: bytes) -> None:
        if self.stop.is_set():
            raise OSError("test over")
        self.conn.sendall(data)
        self.sent += len(data)


def _endless_list(conn: socket.socket) -> None:
    conn.recv(100)
    line = b"f\t1\t0\t0\n" * 8192
    while True:
        conn.sendall(line)


def _no_newline(conn: socket.socket) -> None:
    conn.recv(100)
    chunk = b"x" * 65536
    while True:
        conn.sendall(chunk)


def _trickle(conn: socket.socket) -> None:
    conn.recv(100)
    while True:
        conn.sendall(b"f\t1\t0\t0\n")
        time.sleep(0.1)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize("serve", [_endless_list, _no_newline], ids=["endless-list", "no-newline"])
def test_status_against_an_endless_answer_is_bounded(serve: Callable[[socket.socket], None]) -> None:
    """700 MB in 15 s before; now a clear error at 200,000 lines or 16 MiB, in a process capped at 1 GiB."""
    with fake_server(serve) as (address, sent):
        env = {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}
        result = subprocess.run(
            [CLI, "status", "--server", address],
            capture_output=True, text=True, timeout=120, env=env, preexec_fn=_limit_memory,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not sent and time.monotonic() < deadline:
            time.sleep(0.05)
    assert result.returncode == 3, result.stderr
    assert "admin answer exceeds" in result.stderr and "Traceback" not in result.stderr
    assert sent and sent[0] < 32 * 1024 * 1024, sent  # read no further than the cap (and the kernel's buffers)


def test_a_trickling_admin_answer_ends_at_the_answer_deadline() -> None:
    with fake_server(_trickle) as (address, _sent), AdminClient(address, answer_timeout=1.5) as client:
        started = time.monotonic()
        with pytest.raises(IslandoraJobError, match=r"no complete admin answer within 1\.5s"):
            client.status()
        assert time.monotonic() - started < 15


# -- terminal injection: what the network says reaches the terminal escaped -----------------------------------------

HOSTILE = "boom\x1b]0;owned\x07\x1b[2J\nislandora-job: forged line\x9b31m"


def _hostile_server(conn: socket.socket) -> None:
    """A 'gearmand' that accepts the job and reports a WORK_EXCEPTION whose text drives a terminal."""
    reader = PacketReader(expect="request")
    while data := conn.recv(65536):
        reader.feed(data)
        while (packet := reader.next_packet()) is not None:
            if packet.command is Command.OPTION_REQ:
                conn.sendall(encode(Command.OPTION_RES, "exceptions", response=True))
            elif packet.command is Command.SUBMIT_JOB:
                conn.sendall(encode(Command.JOB_CREATED, "H:x:1", response=True))
                conn.sendall(encode(Command.WORK_EXCEPTION, "H:x:1", HOSTILE, response=True))


def test_a_job_exception_text_reaches_the_terminal_escaped() -> None:
    with fake_server(_hostile_server) as (address, _sent):
        result = run("submit", "hostile", "--server", address)
        env = {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}
        with open("/dev/full", "w") as full:  # a full stderr does not turn "the job failed" into another code
            quiet = subprocess.run([CLI, "submit", "hostile", "--server", address], stderr=full, timeout=30, env=env)
    assert quiet.returncode == 1
    assert_one_line(result, 1, "boom\\u001b]0;owned\\u0007\\u001b[2J\\nislandora-job: forged line\\u009b31m")
    assert "\x1b" not in result.stderr and "\x9b" not in result.stderr


def test_function_names_and_client_ids_reach_the_terminal_escaped(gearmand: Gearmand) -> None:
    with socket.create_connection(("127.0.0.1", gearmand.port)) as worker:
        worker.sendall(encode(Command.SET_CLIENT_ID, "id\x1b[2Jx") + encode(Command.CAN_DO, "fn\x1b]0;t\x07"))
        deadline = time.monotonic() + 10
        while "fn" not in admin(gearmand.port, "status") and time.monotonic() < deadline:
            time.sleep(0.02)
        workers = run("workers", "--server", gearmand.address)
        status = run("status", "--server", gearmand.address)
    for result in (workers, status):
        assert result.returncode == 0, result.stderr
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout
        assert "fn\\u001b]0;t\\u0007" in result.stdout, result.stdout
    assert "id\\u001b[2Jx" in workers.stdout


def test_the_client_takes_an_infinite_timeout(gearmand: Gearmand) -> None:
    """The API's timeout=inf (or 1e300) means no deadline: the selector's wait is capped, not overflowed."""
    from islandora_job.client import JobClient

    with cli_worker(gearmand.port, "echo", "cat"), JobClient([gearmand.address]) as client:
        assert b'"args":["x"]' in client.submit("echo", "x", timeout=float("inf"))
        assert b'"args":["y"]' in client.submit("echo", "y", timeout=1e300)


def test_a_job_output_is_escaped_on_a_terminal_and_raw_in_a_pipe(gearmand: Gearmand) -> None:
    """``script`` gives the command a real terminal; a pipe gets the job's bytes unchanged."""
    with cli_worker(gearmand.port, "raw", "printf", "\\033[31mX\\tY\\n"):
        tty = subprocess.run(
            ["script", "-qec", f"{CLI} submit raw --server {gearmand.address}", "/dev/null"],
            capture_output=True, timeout=30,
        )  # fmt: skip
        piped = run("submit", "raw", "--server", gearmand.address)
    assert tty.returncode == 0 and tty.stdout.replace(b"\r\n", b"\n") == b"\\u001b[31mX\tY\n", tty.stdout
    assert piped.returncode == 0 and piped.stdout == "\x1b[31mX\tY\n"
