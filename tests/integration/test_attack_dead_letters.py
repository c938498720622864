"""Attacks on the dead-letter store from outside (issue 10): a reader that is not the service user.

The worker opens the store for each record and closes it; the last close of a WAL database removes its ``-wal``
and ``-shm`` files. A reader without write access to the directory then cannot open it read-only: sqlite needs to
create the ``-shm`` file, and ``dead-letters list`` fails with "attempt to write a readonly database". (The test
of the merged branch first ran a ``list`` as root, which left a ``-shm`` behind, so it did not see this.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from islandora_job.worker.deadletters import DeadLetterStore
from tests.support.gearmand import Gearmand, admin

CLI = [sys.executable, "-m", "islandora_job.cli.main"]


def test_another_user_can_list_the_store_as_the_worker_leaves_it() -> None:
    with tempfile.TemporaryDirectory() as where:  # pytest's tmp_path is private to root
        state = Path(where) / "state"
        state.mkdir()
        path = state / "dl.sqlite3"
        recorded = DeadLetterStore(str(path)).record(
            function="ij_atk", name="ij_atk", handle="H:atk:1", unique="u", payload=b"{}", error="boom", attempts=1
        )
        assert recorded
        assert sorted(p.name for p in state.iterdir()) == ["dl.sqlite3"]  # as the worker leaves it
        Path(where).chmod(0o755)
        state.chmod(0o755)
        path.chmod(0o644)
        cli = subprocess.run(
            [*CLI, "dead-letters", "--path", str(path), "list", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            user="nobody",
            env={**os.environ, "HOME": "/"},
        )
        assert cli.returncode == 0, cli.stderr
        assert [letter["handle"] for letter in json.loads(cli.stdout)] == ["H:atk:1"]


def test_a_requeue_that_cannot_mark_the_letter_says_the_job_was_queued(gearmand: Gearmand) -> None:
    """`dead-letters requeue` by a user who may read the store but not write it: the job is submitted, then
    marking the letter fails, and the command printed only "the dead-letter store cannot be changed", exit 1.
    An operator reruns it and the job runs twice. Either nothing is queued, or the output names the queued job."""
    with tempfile.TemporaryDirectory() as where:
        state = Path(where) / "state"
        state.mkdir()
        path = state / "dl.sqlite3"
        store = DeadLetterStore(str(path))
        assert store.record(
            function="ij_atk_rq", name="ij_atk_rq", handle="H:atk:1", unique="u", payload=b"{}", error="x", attempts=1
        )
        store.list()  # leaves the -shm a reader without write access needs (see the test above)
        Path(where).chmod(0o755)
        state.chmod(0o755)
        for file in state.iterdir():
            file.chmod(0o644)
        cli = subprocess.run(
            [*CLI, "dead-letters", "--path", str(path), "requeue", "1", "--server", gearmand.address],
            capture_output=True,
            text=True,
            timeout=60,
            user="nobody",
            env={**os.environ, "HOME": "/"},
        )
    handles = [line.split("\t")[0] for line in admin(gearmand.port, "show jobs").splitlines() if "\t" in line]
    said = cli.stdout + cli.stderr
    assert not handles or all(handle in said for handle in handles), (handles, said)


@pytest.mark.parametrize(
    ("args", "codes"),
    [
        (["show", "99999999999999999999"], (1, 2)),
        (["purge", "99999999999999999999"], (2,)),
        (["list", "--limit", "99999999999999999999"], (2,)),
        (["purge", "--older-than", "-1"], (2,)),
        (["purge", "--older-than", "nan"], (2,)),
    ],
    ids=["show-huge-id", "purge-huge-id", "list-huge-limit", "purge-negative-age", "purge-nan-age"],
)
def test_odd_dead_letter_arguments_are_usage_errors_and_delete_nothing(
    tmp_path: Path, args: list[str], codes: tuple[int, ...]
) -> None:
    """Ids and limits past SQLite's 64-bit integers exited 70 ("internal error: OverflowError"); a negative
    ``--older-than`` purged every letter (failed before a moment in the future), and ``nan`` purged none, exit 0."""
    path = tmp_path / "dl.sqlite3"
    store = DeadLetterStore(str(path))
    assert store.record(
        function="ij_atk", name="ij_atk", handle="H:atk:1", unique="u", payload=b"{}", error="x", attempts=1
    )
    result = subprocess.run(
        [*CLI, "dead-letters", "--path", str(path), *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode in codes, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert len(store.list()) == 1
