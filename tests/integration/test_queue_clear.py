"""``islandora-job clear`` against a real gearmand with the sqlite queue, restarted after each clear: what was
cleared never comes back, what was not cleared is still there, and every cleared payload is in the record."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from islandora_job.worker.deadletters import DeadLetterStore
from tests.integration.test_queue_move import gearmand, submit
from tests.support.gearmand import Gearmand, admin

CLI = [sys.executable, "-m", "islandora_job.cli.main"]
TARGET = "ij_clear_stuck"
OTHER = "ij_clear_other"


def _sqlite(tmp: Path) -> list[str]:
    return ["-q", "libsqlite3", f"--libsqlite3-db={tmp / 'queue.sqlite3'}"]


def _waiting(server: Gearmand, function: str) -> int:
    for line in admin(server.port, "status").splitlines():
        fields = line.rsplit("\t", 3)
        if fields[0] == function:
            return int(fields[1]) - int(fields[2])
    return 0


def _clear(server: Gearmand, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}
    return subprocess.run(
        [*CLI, "clear", TARGET, "--server", server.address, *args], capture_output=True, text=True, timeout=60, env=env
    )


def _jobs(count: int, keyless_every: int = 0) -> list[tuple[str, str, str, bytes]]:
    batch = []
    for i in range(count):
        unique = "" if keyless_every and i % keyless_every == 0 else f"k{i}"
        payload = f'{{"n": {i}}}'.encode() if i % 5 else b"\xff\x00binary" + bytes([i])
        batch.append((TARGET, ("high", "normal", "low")[i % 3], unique, payload))
    return batch


def test_clear_records_every_job_and_nothing_cleared_comes_back_after_a_restart(tmp_path: Path) -> None:
    batch = _jobs(30)  # keyed: gearmand 1.1.20's sqlite keeps one row for all keyless jobs of a function
    store_path = tmp_path / "dead.sqlite3"
    (tmp_path / "worker.toml").write_text(f'[dead_letters]\npath = "{store_path}"\n')
    with gearmand(tmp_path / "g", _sqlite(tmp_path)) as server:
        submit(server, batch)
        submit(server, [(OTHER, "normal", f"o{i}", b"keep me") for i in range(4)])
        # first 10 into a file
        limited = _clear(server, "--limit", "10", "--to", str(tmp_path / "cleared.jsonl"))
        assert limited.returncode == 0, limited.stderr
        lines = [json.loads(line) for line in (tmp_path / "cleared.jsonl").read_text().splitlines()]
        first = len(lines)
        assert first == 10 and _waiting(server, TARGET) == 20
        assert oct((tmp_path / "cleared.jsonl").stat().st_mode & 0o777) == "0o600"
        server.restart()
        assert _waiting(server, TARGET) == 30 - first  # nothing cleared came back, nothing else was lost
        # the rest into the dead-letter store
        rest = _clear(server, "--config", str(tmp_path / "worker.toml"), "--json")
        assert rest.returncode == 0, rest.stderr
        summary = json.loads(rest.stdout)
        assert summary["cleared"] == 30 - first and summary["left"] == 0
        server.restart()
        assert _waiting(server, TARGET) == 0
        assert _waiting(server, OTHER) == 4  # another function's queue is untouched
    letters = DeadLetterStore(str(store_path)).list(limit=100)
    recorded = [(line["unique"], _payload(line)) for line in lines]
    recorded += [(letter.unique_key, letter.payload) for letter in letters]
    assert sorted(recorded) == sorted((u, p) for _, _, u, p in batch)
    assert all(letter.error == "cleared by islandora-job clear" for letter in letters)


def _payload(line: dict[str, str]) -> bytes:
    return base64.b64decode(line["payload_base64"]) if "payload_base64" in line else line["payload"].encode()


def test_keyless_jobs_are_cleared_only_all_together(tmp_path: Path) -> None:
    """Ending one keyless job deletes every keyless row of its function from a persistent queue: with a limit they
    are handed back; without one, all are cleared."""
    batch = _jobs(14, keyless_every=4)  # 4 keyless
    with gearmand(tmp_path / "g", []) as server:
        submit(server, batch)
        limited = _clear(server, "--limit", "12", "--to", str(tmp_path / "a.jsonl"))
        assert limited.returncode == 0, limited.stderr
        first = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
        assert all(line["unique"] for line in first) and len(first) < 12
        assert "keyless handed back" in limited.stdout
        assert _waiting(server, TARGET) == 14 - len(first)
        rest = _clear(server, "--to", str(tmp_path / "b.jsonl"))
        assert rest.returncode == 0, rest.stderr
        second = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
        assert _waiting(server, TARGET) == 0
        got = sorted((line["unique"], _payload(line)) for line in first + second)
        assert got == sorted((u, p) for _, _, u, p in batch)


def test_a_record_that_cannot_be_written_clears_nothing_and_dev_null_discards(tmp_path: Path) -> None:
    with gearmand(tmp_path / "g", _sqlite(tmp_path)) as server:
        submit(server, _jobs(5))
        full = _clear(server, "--to", "/dev/full")
        assert full.returncode == 1, full.stderr
        assert "/dev/full: cannot write the record" in full.stderr and "Traceback" not in full.stderr
        assert _waiting(server, TARGET) == 5
        server.restart()
        assert _waiting(server, TARGET) == 5
        discarded = _clear(server, "--to", "/dev/null")  # a device cannot be synced: its write is enough
        assert discarded.returncode == 0, discarded.stderr
        server.restart()
        assert _waiting(server, TARGET) == 0


def test_clear_refuses_while_a_worker_serves_the_function(tmp_path: Path) -> None:
    with gearmand(tmp_path / "g", []) as server:
        submit(server, _jobs(3))
        worker = subprocess.Popen(
            ["gearman", "-h", "127.0.0.1", "-p", str(server.port), "-w", "-f", TARGET, "--", "sleep", "30"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            from tests.support.peers import wait_for

            wait_for(lambda: f"{TARGET}\t" in admin(server.port, "status") and _workers(server) == 1, timeout=10)
            refused = _clear(server, "--to", str(tmp_path / "x.jsonl"))
            assert refused.returncode == 2, refused.stderr
            assert "1 worker(s)" in refused.stderr and "--allow-workers" in refused.stderr
        finally:
            worker.kill()
            worker.wait()


def _workers(server: Gearmand) -> int:
    for line in admin(server.port, "status").splitlines():
        fields = line.rsplit("\t", 3)
        if fields[0] == TARGET:
            return int(fields[3])
    return 0
