"""The dead-letter store's faults: a missing, full, locked, read-only or corrupt store, its cap and retention.

Real faults where they are cheap: a 64 KiB tmpfs for a full disk, a tmpfs remounted read-only, a lock held by
another process, a file of garbage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import gearman
import pytest

import islandora_job
from islandora_job.cli.main import main
from islandora_job.worker import metrics
from islandora_job.worker.deadletters import DeadLetterStore

LOGGED_PAYLOAD = 4096  # the documented share of an unrecorded payload in the log


def _record(store: DeadLetterStore, n: int, payload: bytes = b"{}", **fields: object) -> int:
    values: dict[str, object] = {
        "function": "f",
        "name": "job",
        "handle": f"H:host:{n}",
        "unique": f"u{n}",
        "payload": payload,
        "error": "boom",
        "attempts": 1,
    }
    values.update(fields)
    return store.record(**values)  # type: ignore[arg-type]


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        raise AssertionError("a tmpfs needs root: run the tests as root, as CI does")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_reading_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dl.sqlite3"
    store = DeadLetterStore(str(path))
    assert store.list() == []
    assert store.get(1) is None
    assert main(["dead-letters", "--path", str(path), "list"]) == 0
    assert main(["dead-letters", "--path", str(path), "show", "1"]) == 1
    assert not (tmp_path / "state").exists()


def test_another_user_can_list_a_store_it_may_not_write() -> None:
    """An operator who is not the service user reads the store: a read needs no write access."""
    with tempfile.TemporaryDirectory() as where:  # pytest's tmp_path is private to root
        _list_as_nobody(Path(where) / "state")


def _list_as_nobody(state: Path) -> None:
    state.mkdir()
    path = state / "dl.sqlite3"
    _record(DeadLetterStore(str(path)), 1)
    DeadLetterStore(str(path)).list()  # leaves the -shm a reader needs, as a running worker would
    state.parent.chmod(0o755)
    state.chmod(0o755)
    for file in state.iterdir():
        file.chmod(0o644)
    # nobody may not reach the venv (under /root on a fresh host): run the system interpreter the venv was made
    # from on a readable copy of the package and of pygearman.
    code = state.parent / "code"
    for package in (islandora_job, gearman):
        shutil.copytree(Path(package.__file__).parent, code / package.__name__)
    for directory in (code, *code.rglob("*")):
        directory.chmod(0o755 if directory.is_dir() else 0o644)
    command = ["dead-letters", "--path", str(path), "list", "--json"]
    cli = subprocess.run(
        [os.path.realpath(sys.executable), "-m", "islandora_job.cli.main", *command],
        capture_output=True,
        text=True,
        timeout=60,
        user="nobody",
        env={"HOME": "/", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(code)},
        cwd="/",
    )
    assert cli.returncode == 0, cli.stderr
    assert [letter["handle"] for letter in json.loads(cli.stdout)] == ["H:host:1"]


def test_a_corrupt_store_is_one_line_from_the_cli_and_moved_aside_by_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "dl.sqlite3"
    path.write_bytes(b"this is not sqlite\n" * 500)
    for action in (["list"], ["show", "1"], ["purge", "--all"]):
        cli = subprocess.run(
            [sys.executable, "-m", "islandora_job.cli.main", "dead-letters", "--path", str(path), *action],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 1, cli
        assert cli.stderr.count("\n") == 1 and str(path) in cli.stderr and "corrupt" in cli.stderr, cli.stderr
        assert "Traceback" not in cli.stderr
    with caplog.at_level(logging.ERROR):
        letter_id = _record(DeadLetterStore(str(path)), 7)
    assert letter_id > 0
    [aside] = list(tmp_path.glob("dl.sqlite3.corrupt-*"))
    assert aside.read_bytes().startswith(b"this is not sqlite")
    assert [letter.handle for letter in DeadLetterStore(str(path)).list()] == ["H:host:7"]
    assert any(str(aside) in message for message in caplog.messages)


def test_payloads_are_capped_and_the_store_stays_under_its_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Five 10 MiB non-JSON jobs grew the store by 50 MiB in under a second; now it keeps its cap."""
    path = tmp_path / "dl.sqlite3"
    store = DeadLetterStore(str(path), max_bytes=2 * 1024 * 1024, max_payload=512 * 1024)
    big = os.urandom(10 * 1024 * 1024)
    with caplog.at_level(logging.INFO, logger="islandora_job.worker.deadletters"):
        ids = [_record(store, n, big) for n in range(12)]
    assert all(ids)
    letters = store.list()
    assert letters[0].id == ids[-1]  # the newest is always kept
    assert all(len(x.payload) == 512 * 1024 and x.payload_size == len(big) and x.truncated for x in letters)
    on_disk = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert on_disk < 4 * 1024 * 1024, on_disk
    assert any("pruned" in message and "cap" in message for message in caplog.messages)


def test_a_letter_of_which_only_the_head_was_read_keeps_the_real_size(tmp_path: Path) -> None:
    """An over-size job: the worker skipped its payload and has only the first 4 KiB; the letter says how big the
    job was, shows as cut, and is not requeued (tests/integration/test_cli_exits.py has the whole pool)."""
    store = DeadLetterStore(str(tmp_path / "dl.sqlite3"))
    letter = store.get(_record(store, 1, b"x" * 4096, payload_size=70_000_000))
    assert letter is not None and letter.payload_size == 70_000_000 and letter.truncated


@pytest.mark.parametrize("age", [-1.0, float("nan"), float("inf")])
def test_purge_refuses_an_age_that_would_purge_all_or_nothing(tmp_path: Path, age: float) -> None:
    store = DeadLetterStore(str(tmp_path / "dl.sqlite3"))
    assert _record(store, 1)
    with pytest.raises(ValueError, match="older_than"):
        store.purge(older_than=age)
    assert len(store.list()) == 1


def test_rows_past_the_retention_are_pruned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = DeadLetterStore(str(tmp_path / "dl.sqlite3"), max_age=3600)
    _record(store, 1, failed_at=time.time() - 7200)
    with caplog.at_level(logging.INFO, logger="islandora_job.worker.deadletters"):
        recent = _record(store, 2)
    assert [x.id for x in store.list()] == [recent]
    assert any("pruned 1 older than" in message for message in caplog.messages)


def _assert_logged_and_counted(caplog: pytest.LogCaptureFixture, handle: str, payload: bytes) -> None:
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and handle + " " in r.getMessage()]
    assert lines, caplog.messages
    assert "function=f" in lines[0] and "unique=u" in lines[0]
    assert payload[:LOGGED_PAYLOAD].decode() in lines[0]
    if len(payload) > LOGGED_PAYLOAD:
        assert payload[: LOGGED_PAYLOAD + 1].decode() not in lines[0]


def test_a_full_disk_loses_no_failure_in_silence(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On a 64 KiB tmpfs, 40 of 40 failures were lost with one line each; now each is stored or logged whole."""
    before = metrics.JobStats().to_json().get("events", {}).get("dead_letters_unrecorded", 0)
    with tmpfs(tmp_path / "small", "64k") as mount:
        store = DeadLetterStore(str(mount / "dl.sqlite3"))
        payload = b"x" * 5000
        with caplog.at_level(logging.ERROR):
            ids = [_record(store, n, payload) for n in range(40)]
        stored = {x.handle for x in store.list(limit=1000)}
    lost = [n for n, letter_id in enumerate(ids) if letter_id == 0]
    assert lost, "the disk never filled up"
    assert len(stored) + len(lost) == 40
    for n in lost:
        _assert_logged_and_counted(caplog, f"handle=H:host:{n}", payload)
    # the snapshot a worker process sends its supervisor, which exports it to Prometheus
    assert metrics.JobStats().to_json()["events"]["dead_letters_unrecorded"] - before == len(lost)


def test_a_read_only_store_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with tmpfs(tmp_path / "ro", "1m") as mount:
        store = DeadLetterStore(str(mount / "dl.sqlite3"))
        _record(store, 1)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with caplog.at_level(logging.ERROR):
            assert _record(DeadLetterStore(str(mount / "dl.sqlite3")), 2, b"payload") == 0
    _assert_logged_and_counted(caplog, "handle=H:host:2", b"payload")


LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_locked_store_does_not_stall_the_job_loop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A lock held elsewhere stalled every failure 10 s, and then the record was lost; now a short wait, a log."""
    path = tmp_path / "dl.sqlite3"
    _record(DeadLetterStore(str(path)), 1)
    with subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as locker:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        store = DeadLetterStore(str(path))
        started = time.monotonic()
        with caplog.at_level(logging.ERROR):
            results = [_record(store, n, b"locked-out") for n in range(2, 5)]
        elapsed = time.monotonic() - started
        locker.communicate("")
    assert results == [0, 0, 0]
    assert elapsed < 3.0, f"three records waited {elapsed:.1f}s for a lock"  # 10 s each before
    _assert_logged_and_counted(caplog, "handle=H:host:3", b"locked-out")
    assert _record(store, 5) > 0  # the lock is gone: recording works again


def test_the_caps_come_from_the_worker_configuration() -> None:
    from islandora_job.errors import ConfigError
    from islandora_job.worker.config import build

    default = DeadLetterStore.from_config(build({}, "f").dead_letters)
    assert (default.max_bytes, default.max_age, default.max_payload, default.timeout) == (
        256 * 1024 * 1024,
        30 * 86400,
        1024 * 1024,
        0.2,
    )
    table = {"max_size_mb": 8, "max_age_days": 0.5, "max_payload_kb": 64, "lock_timeout": 0.05}
    store = DeadLetterStore.from_config(build({"dead_letters": table}, "f").dead_letters)
    assert (store.max_bytes, store.max_age, store.max_payload, store.timeout) == (8 << 20, 43200, 64 << 10, 0.05)
    with pytest.raises(ConfigError, match=r"dead_letters\.max_size_mb"):
        build({"dead_letters": {"max_size_mb": 0}}, "f")


def test_dead_letters_list_escapes_what_the_network_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dl.sqlite3"
    _record(DeadLetterStore(str(path)), 1, function="f\n    99 forged row", error="boom\x1b[2J\x9b31m")
    assert main(["dead-letters", "--path", str(path), "list"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 2, out  # the header and one letter
    assert "f\\n    99 forged row" in out and "boom\\u001b[2J\\u009b31m" in out
    assert main(["dead-letters", "--path", str(path), "show", "1"]) == 0
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "\x9b" not in shown
    assert json.loads(shown)["error"] == "boom\x1b[2J\x9b31m"  # escaped for the terminal, exact as JSON
