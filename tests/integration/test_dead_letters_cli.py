"""``islandora-job dead-letters`` as an operator meets it: a user who may read the store but not write it, a store
that is locked at the wrong moment, a write-ahead log left by a crash (issue 10).

Real sqlite files, real processes run as ``nobody``, a real gearmand, and a fake server where gearmand cannot
misbehave (one that takes the store's write lock while it acknowledges the requeued job).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from islandora_job.codec import Command, PacketReader, encode
from islandora_job.worker.deadletters import DeadLetterStore
from tests.integration.test_cli_faults import assert_one_line, fake_server
from tests.support.gearmand import Gearmand, admin

CLI = [sys.executable, "-m", "islandora_job.cli.main"]


@contextmanager
def _store_nobody_may_read() -> Iterator[Path]:
    """A store with one letter, as the worker leaves it (no -wal, no -shm), in a directory only root may write.
    (pytest's tmp_path is private to root, so the directory is made here.)"""
    with tempfile.TemporaryDirectory() as where:
        state = Path(where) / "state"
        state.mkdir()
        path = state / "dl.sqlite3"
        assert DeadLetterStore(str(path)).record(
            function="ij_dl_cli",
            name="ij_dl_cli",
            handle="H:x:1",
            unique="u",
            payload=b'{"n":1}',
            error="e",
            attempts=1,
        )
        Path(where).chmod(0o755)
        state.chmod(0o755)
        path.chmod(0o644)
        yield path


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "dead-letters", *args],
        capture_output=True,
        text=True,
        timeout=60,
        user="nobody",
        env={**os.environ, "HOME": "/"},
    )


def test_another_user_can_show_a_letter_and_leaves_no_file() -> None:
    with _store_nobody_may_read() as path:
        shown = _as_nobody("--path", str(path), "show", "1")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["payload"] == '{"n":1}'
        assert sorted(p.name for p in path.parent.iterdir()) == ["dl.sqlite3"]


def test_a_requeue_by_a_user_who_may_not_mark_the_letter_queues_nothing(gearmand: Gearmand) -> None:
    """The job would run, and its letter would still say "not requeued": a rerun would run it twice."""
    with _store_nobody_may_read() as path:
        result = _as_nobody("--path", str(path), "requeue", "1", "--server", gearmand.address)
        assert_one_line(result, 1, str(path), "nothing requeued")
        assert result.stdout == ""
    assert not [line for line in admin(gearmand.port, "status").splitlines() if line.startswith("ij_dl_cli\t")]


def _acknowledge_while_locking(path: Path, release: threading.Event) -> Callable[[socket.socket], None]:
    """A fake gearmand that takes the store's write lock, then acknowledges a background job as H:fake:1."""

    def serve(conn: socket.socket) -> None:
        reader = PacketReader(expect="request")
        locker: sqlite3.Connection | None = None
        try:
            while data := conn.recv(65536):
                reader.feed(data)
                while (packet := reader.next_packet()) is not None:
                    if packet.command is Command.OPTION_REQ:
                        conn.sendall(encode(Command.OPTION_RES, packet["option_name"], response=True))
                    elif packet.command is Command.SUBMIT_JOB_BG:
                        locker = sqlite3.connect(path, isolation_level=None)
                        locker.execute("BEGIN IMMEDIATE")
                        conn.sendall(encode(Command.JOB_CREATED, "H:fake:1", response=True))
            release.wait(60)
        finally:
            if locker is not None:
                locker.close()

    return serve


def test_a_requeue_whose_letter_cannot_be_marked_names_the_queued_job(tmp_path: Path) -> None:
    """The store was writable when asked, and locked when the letter was to be marked: the job is queued all the
    same, so the output names its handle (and says not to requeue it again), and the exit code is not 0."""
    path = tmp_path / "dl.sqlite3"
    store = DeadLetterStore(str(path))
    assert store.record(
        function="ij_dl_cli", name="ij_dl_cli", handle="H:x:1", unique="u", payload=b"{}", error="e", attempts=1
    )
    release = threading.Event()
    with fake_server(_acknowledge_while_locking(path, release)) as (address, _):
        try:
            result = subprocess.run(
                [*CLI, "dead-letters", "--path", str(path), "requeue", "1", "--server", address],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            release.set()
    assert_one_line(result, 1, "H:fake:1", "do not requeue")
    assert result.stdout == "1\tH:fake:1\n"
    letter = store.get(1)
    assert letter is not None and letter.requeued_at is None  # what the store says: the line above tells the rest


def test_a_write_ahead_log_the_reader_cannot_use_is_refused_not_skipped() -> None:
    """A writer that died left records in the -wal and no -shm: reading the file alone would show a store without
    them. A reader who cannot create the -shm gets one line naming the log, not a stale answer."""
    with tempfile.TemporaryDirectory() as where:
        state = Path(where) / "state"
        state.mkdir()
        path = state / "dl.sqlite3"
        store = DeadLetterStore(str(path))
        assert store.record(function="f", name="f", handle="H:x:1", unique="u", payload=b"{}", error="e", attempts=1)
        crash = (
            "import os, sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('PRAGMA wal_autocheckpoint=0')\n"
            "db.execute(\"UPDATE dead_letters SET error = 'in the log only'\")\n"
            "os._exit(0)\n"  # no close: no checkpoint, the -wal stays
        )
        subprocess.run([sys.executable, "-c", crash, str(path)], check=True, timeout=30)
        assert os.path.getsize(f"{path}-wal") > 0
        os.unlink(f"{path}-shm")
        for file in (Path(where), state):
            file.chmod(0o755)
        for file in state.iterdir():
            file.chmod(0o644)
        result = _as_nobody("--path", str(path), "list", "--json")
        assert_one_line(result, 1, f"{path}-wal")
        assert result.stdout == ""
