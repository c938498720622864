"""The default sqlite queue in WAL mode (issue 15): as durable as the rollback journal, proven with kill -9.

gearmand is started with the gearman_server role's rendered options (PARAMS, as in test_gearmand_queues.py), on
a queue file the role's own tool (files/gearman-server-sqlite-wal) created in WAL mode, as the role does before
any gearmand opens it. The rollback-journal file gearmand creates by itself (what the role deployed before) runs
the same tests side by side. A job counts as acknowledged when its JOB_CREATED
arrived; gearmand sends it after the job's row was committed.

* acknowledged background jobs, then SIGKILL, then a restart: every job is replayed;
* SIGKILL in the middle of a pipelined burst: every acknowledged job is replayed;
* jobs a worker completed before the SIGKILL do not come back.

The tool itself: creates a missing file in WAL mode, converts an existing queue (jobs kept, a second run changes
nothing), refuses a locked file with a clear error, and its --verify (what the role runs after the restart)
checks that gearmand opened the file in WAL mode, with -wal and -shm owned like the file; gearmand started as
root with --user=gearman (the init-script mode) is checked the same way.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ansible.helpers import GEARMAND, ROLES, run, system_binary, wait_port
from tests.ansible.test_gearmand_queues import Server, render, set_option
from tests.support.gearmand import admin, free_port

WAL_TOOL = ROLES / "gearman_server" / "files" / "gearman-server-sqlite-wal"
HEADER = struct.Struct("!4sII")
SUBMIT_JOB_BG, JOB_CREATED, CAN_DO, GRAB_JOB_UNIQ, JOB_ASSIGN_UNIQ, WORK_COMPLETE, ERROR = 18, 8, 1, 30, 31, 13, 19
MODES = ["wal", "rollback"]


def packet(command: int, *args: bytes) -> bytes:
    body = b"\0".join(args)
    return HEADER.pack(b"\0REQ", command, len(body)) + body


class Connection:
    """A raw Gearman connection: packets out, (command, arguments) in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def read(self) -> tuple[int, list[bytes]]:
        while True:
            if len(self.buffer) >= 12:
                _, command, length = HEADER.unpack_from(self.buffer)
                if len(self.buffer) >= 12 + length:
                    body = self.buffer[12 : 12 + length]
                    self.buffer = self.buffer[12 + length :]
                    return command, body.split(b"\0")
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("gearmand closed the connection")
            self.buffer += chunk


class Burst:
    """Pipelined SUBMIT_JOB_BG of ``keys`` (window in flight); ``acked`` grows as JOB_CREATED arrive in order.

    gearmand answers the packets of a connection in order, so the n-th JOB_CREATED acknowledges the n-th key.
    """

    def __init__(self, port: int, function: str, keys: list[str], window: int = 100) -> None:
        self.port, self.function, self.keys, self.window = port, function.encode(), keys, window
        self.acked = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        conn = Connection(self.port)
        sent = 0
        try:
            while self.acked < len(self.keys):
                burst = min(self.window - (sent - self.acked), len(self.keys) - sent)
                if burst > 0:
                    conn.sock.sendall(
                        b"".join(
                            packet(SUBMIT_JOB_BG, self.function, key.encode(), b"payload of " + key.encode())
                            for key in self.keys[sent : sent + burst]
                        )
                    )
                    sent += burst
                command, _ = conn.read()
                assert command == JOB_CREATED, command
                self.acked += 1
        except (OSError, ConnectionError) as exc:
            self.error = exc
        finally:
            conn.close()

    @property
    def acknowledged(self) -> set[str]:
        return set(self.keys[: self.acked])


def complete(port: int, function: str, count: int) -> set[str]:
    """A raw worker: grab and complete ``count`` jobs; their unique keys."""
    conn = Connection(port)
    done = set()
    try:
        conn.sock.sendall(packet(CAN_DO, function.encode()))
        while len(done) < count:
            conn.sock.sendall(packet(GRAB_JOB_UNIQ))
            command, args = conn.read()
            assert command == JOB_ASSIGN_UNIQ, f"expected a job, got packet {command}"
            handle, _, unique = args[0], args[1], args[2]
            conn.sock.sendall(packet(WORK_COMPLETE, handle, b"done"))
            done.add(unique.decode())
    finally:
        conn.close()
    return done


def replayed(port: int) -> set[str]:
    """Unique keys of every job gearmand holds (admin 'show unique jobs')."""
    return {line for line in admin(port, "show unique jobs", timeout=30).splitlines() if line and line != "."}


def wal_tool(*args: str) -> tuple[int, str]:
    result = run(["python3", str(WAL_TOOL), *args], timeout=60)
    return result.returncode, result.stdout.strip()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The role's defaults rendered once (sqlite queue); each test points it at its own queue file."""
    tmp = tmp_path_factory.mktemp("durability")
    return render(tmp, {"sqlite": {"gearman_server_queue_type": "sqlite"}})["sqlite"]


def role_files(rendered: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the rendered files whose queue is tmp_path/queue.sqlite3; (files, queue file)."""
    files = tmp_path / "files"
    shutil.copytree(rendered, files)
    db = tmp_path / "queue.sqlite3"
    set_option(files, "--libsqlite3-db", str(db))
    return files, db


@pytest.fixture
def server(rendered: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """gearmand with the role's options on a fresh queue file: created by the role's tool (wal), or by gearmand
    itself (rollback, as before issue 15)."""
    mode = request.param
    files, db = role_files(rendered, tmp_path)
    if mode == "wal":
        assert wal_tool(str(db), "--create") == (0, "created")
    srv = Server(files, tmp_path)
    srv.start()
    assert wal_tool(str(db)) == (0, mode), "the queue file is not in the journal mode this test is about"
    if mode == "wal":
        assert wal_tool(str(db), "--verify") == (0, "ok")
    try:
        yield srv
    finally:
        srv.stop()


def kill9_and_restart(srv: Server) -> None:
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait(10)
    srv.start()


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_acknowledged_jobs_survive_kill_9(server: Server) -> None:
    keys = [f"ack-{n}" for n in range(400)]
    burst = Burst(server.port, "ij_durable", keys)
    burst.run()
    assert burst.error is None and burst.acked == len(keys)
    kill9_and_restart(server)
    back = replayed(server.port)
    assert back == set(keys), f"lost {len(set(keys) - back)} acknowledged job(s), {len(back - set(keys))} unknown"


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_kill_9_in_the_middle_of_a_burst_loses_nothing_acknowledged(server: Server) -> None:
    keys = [f"burst-{n}" for n in range(20_000)]
    burst = Burst(server.port, "ij_burst", keys, window=200)
    thread = threading.Thread(target=burst.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while burst.acked < 500 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)  # submissions still in flight
    server.proc.wait(10)
    thread.join(30)
    assert not thread.is_alive()
    assert burst.acked >= 500 and burst.acked < len(keys), f"not a crash in the middle: {burst.acked} acknowledged"
    assert burst.error is not None, "the client did not see gearmand die"
    server.start()
    back = replayed(server.port)
    lost = burst.acknowledged - back
    assert not lost, f"{len(lost)} of {burst.acked} acknowledged jobs lost, e.g. {sorted(lost)[:5]}"
    assert back <= set(keys), "jobs nobody submitted came back"
    # committed but not yet acknowledged when gearmand died: at most the window in flight
    assert len(back) - burst.acked <= 200
    print(f"{burst.acked} acknowledged, {len(back)} replayed")


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_completed_jobs_do_not_come_back_after_kill_9(server: Server) -> None:
    keys = [f"done-{n}" for n in range(300)]
    burst = Burst(server.port, "ij_done", keys)
    burst.run()
    assert burst.acked == len(keys)
    done = complete(server.port, "ij_done", 120)
    deadline = time.monotonic() + 30
    while len(replayed(server.port)) != len(keys) - len(done) and time.monotonic() < deadline:
        time.sleep(0.02)
    kill9_and_restart(server)
    back = replayed(server.port)
    assert not back & done, f"{len(back & done)} completed job(s) came back"
    assert back == set(keys) - done


@pytest.mark.parametrize("server", MODES, indirect=True)
def test_a_reader_inspecting_the_queue_blocks_submissions_only_with_the_rollback_journal(
    server: Server, tmp_path: Path
) -> None:
    """docs/runbook.md tells operators to inspect the queue with sqlite3 while gearmand runs: in WAL mode a reader
    holds nothing up; with the rollback journal gearmand's commit fails ("database is locked", no busy timeout)
    and the client gets an error instead of JOB_CREATED."""
    Burst(server.port, "ij_read", ["before"]).run()
    reader = sqlite3.connect(tmp_path / "queue.sqlite3", isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM gearman_queue").fetchone() == (1,)
        conn = Connection(server.port)
        try:
            conn.sock.sendall(packet(SUBMIT_JOB_BG, b"ij_read", b"during", b"x"))
            command, args = conn.read()
        finally:
            conn.close()
    finally:
        reader.close()
    if wal_tool(str(tmp_path / "queue.sqlite3")) == (0, "wal"):
        assert command == JOB_CREATED, (command, args)
    else:
        assert command == ERROR and b"QUEUE_ERROR" in args[0], (command, args)


# --- the role's tool -------------------------------------------------------------------------------------------------


def test_tool_creates_a_wal_queue_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "queue.sqlite3"
    assert wal_tool(str(db)) == (0, "missing")
    assert wal_tool(str(db), "--create") == (0, "created")
    assert oct(db.stat().st_mode & 0o777) == oct(0o640)
    assert wal_tool(str(db), "--create") == (0, "wal")
    assert wal_tool(str(db), "--convert") == (0, "wal")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.sqlite3"], "no -wal/-shm left by the tool"


def test_tool_converts_an_existing_queue_and_keeps_its_jobs(rendered: Path, tmp_path: Path) -> None:
    """A queue gearmand created in rollback mode, left by a kill -9, converted while gearmand is stopped."""
    files, db = role_files(rendered, tmp_path)
    srv = Server(files, tmp_path)
    srv.start()
    try:
        keys = [f"old-{n}" for n in range(200)]
        Burst(srv.port, "ij_old", keys).run()
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait(10)
        assert wal_tool(str(db)) == (0, "rollback")
        assert wal_tool(str(db), "--convert") == (0, "converted")
        assert wal_tool(str(db)) == (0, "wal")
        assert wal_tool(str(db), "--convert") == (0, "wal"), "a second run must change nothing"
        srv.start()
        assert replayed(srv.port) == set(keys)
        assert wal_tool(str(db), "--verify") == (0, "ok")
    finally:
        srv.stop()


def test_tool_refuses_a_locked_queue_clearly(tmp_path: Path) -> None:
    db = tmp_path / "queue.sqlite3"
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN EXCLUSIVE")
        rc, out = wal_tool(str(db), "--convert")
    finally:
        holder.close()
    assert rc == 1
    assert out == f"gearman-server-sqlite-wal: {db}: database is locked (is gearmand still running?)"
    assert wal_tool(str(db)) == (0, "rollback")


def test_tool_names_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    junk = tmp_path / "queue.sqlite3"
    junk.write_text("not a database, but long enough to have a header of a hundred bytes " * 3)
    assert wal_tool(str(junk), "--convert") == (
        1,
        f"gearman-server-sqlite-wal: {junk}: {junk} is not an sqlite database (gearman_server_sqlite_db)",
    )


def test_verify_refuses_a_wal_file_gearmand_never_opened(tmp_path: Path) -> None:
    db = tmp_path / "queue.sqlite3"
    wal_tool(str(db), "--create")
    rc, out = wal_tool(str(db), "--verify")
    assert rc == 1 and f"{db}-wal is missing" in out


def test_init_script_mode_wal_files_belong_to_gearman() -> None:
    """As the init script runs it: gearmand started by root with --user=gearman, umask 022."""
    if os.geteuid() != 0:
        raise AssertionError("needs root (gearmand --user=gearman), as CI runs")
    gearman = pwd.getpwnam("gearman")
    top = Path(tempfile.mkdtemp(prefix="ij-initscript-", dir="/tmp"))
    try:
        top.chmod(0o755)
        queue_dir = top / "lib"
        queue_dir.mkdir(mode=0o750)
        os.chown(queue_dir, gearman.pw_uid, gearman.pw_gid)
        db = queue_dir / "queue.sqlite3"
        assert wal_tool(str(db), "--create", "--user", "gearman") == (0, "created")
        assert (db.stat().st_uid, db.stat().st_gid) == (gearman.pw_uid, gearman.pw_gid)
        port = free_port()
        argv = [
            system_binary(GEARMAND, "gearman-job-server"),
            "--listen=127.0.0.1",
            f"--port={port}",
            "--config-file=/dev/null",
            "--log-file=none",
            "-q",
            "libsqlite3",
            f"--libsqlite3-db={db}",
            "--user=gearman",
        ]
        old = os.umask(0o022)
        try:
            proc = subprocess.Popen(argv)
        finally:
            os.umask(old)
        try:
            wait_port(port, proc)
            Burst(port, "ij_init", ["a", "b"]).run()
            assert wal_tool(str(db), "--verify") == (0, "ok")
            for suffix in ("-wal", "-shm"):
                st = Path(f"{db}{suffix}").stat()
                assert (st.st_uid, st.st_mode & 0o777) == (gearman.pw_uid, 0o640), suffix
        finally:
            proc.kill()
            proc.wait(10)
    finally:
        shutil.rmtree(top)
