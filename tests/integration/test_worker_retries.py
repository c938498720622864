"""Retries in the worker and the dead-letter store, end to end through a real pool and gearmand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from islandora_job.codec import Command
from islandora_job.worker.deadletters import DeadLetterStore
from tests.support.gearmand import Gearmand
from tests.support.peers import PlainClient, payload, wait_for
from tests.support.pool import REPO, running_pool


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "islandora_job.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO,
    )


def test_a_job_failing_twice_then_succeeding_with_retries_2(tmp_path: Path, gearmand: Gearmand) -> None:
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "t.flaky", count=1)
        with PlainClient(gearmand.address) as client:
            answer = client.call("t.flaky", "k1", 2)
        assert answer.ok
        assert answer.data == b"ok after 3 attempts (context says 3)"
        log = pool.wait_log("outcome=complete")
        assert log.count("failed (RuntimeError: attempt") == 2
        assert "; retrying in " in log
        assert "job t.flaky handle=H:" in log and "outcome=complete" in log
        assert DeadLetterStore(str(pool.dead_letters)).list() == []


def test_exhausted_retries_land_in_dead_letters_and_requeue_runs_again(tmp_path: Path, gearmand: Gearmand) -> None:
    needed = tmp_path / "needed"
    done = tmp_path / "done"
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "t.needs_file", count=1)
        with PlainClient(gearmand.address) as client:
            handle = client.background("t.needs_file", payload("t.needs_file", str(needed), str(done)))
        store = DeadLetterStore(str(pool.dead_letters))
        [letter] = wait_for(store.list, message="a dead letter")
        assert letter.function == "t.needs_file"
        assert letter.handle == handle.decode()
        assert letter.attempts == 2
        assert letter.error.startswith("FileNotFoundError")
        assert json.loads(letter.payload)["args"] == [str(needed), str(done)]

        listing = _cli("dead-letters", "--path", str(pool.dead_letters), "list", "--json")
        assert listing.returncode == 0, listing.stderr
        assert [row["id"] for row in json.loads(listing.stdout)] == [letter.id]
        shown = _cli("dead-letters", "--path", str(pool.dead_letters), "show", str(letter.id))
        assert json.loads(shown.stdout)["payload"] == letter.payload.decode()

        needed.write_text("now it exists")
        requeue = _cli(
            "dead-letters", "--path", str(pool.dead_letters), "requeue", str(letter.id), "--server", gearmand.address
        )
        assert requeue.returncode == 0, requeue.stderr
        wait_for(lambda: done.exists() and done.read_text() == "done\n", message="the requeued job to run")
        requeued = store.get(letter.id)
        assert requeued is not None and requeued.requeued_handle == requeue.stdout.split()[1]

        purge = _cli("dead-letters", "--path", str(pool.dead_letters), "purge", "--all")
        assert purge.stdout.strip() == "purged 1 dead letter(s)"
        assert store.list() == []


def test_job_errors_each_fail_and_the_pool_goes_on(tmp_path: Path, gearmand: Gearmand) -> None:
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "t.exit", count=1)
        children = pool.children()
        with PlainClient(gearmand.address) as client:
            assert client.call("t.exit").command is Command.WORK_FAIL
            assert client.call("t.unserialisable").command is Command.WORK_FAIL
            # a payload naming a job nobody registered, sent to a function this worker serves
            assert client.submit("t.pid", payload("no.such.job")).command is Command.WORK_FAIL
            assert client.call("t.print").data == b"printed"
            answer = client.call("t.progress", site="http://localhost", uid=7)
            assert answer.ok
            assert answer.data.endswith(b"|http://localhost|7")
            assert answer.progress == [(b"1", b"2"), (b"2", b"2")]
            assert answer.partial == [b"partial"]
        assert pool.children() == children
        log = pool.wait_log("this goes to the log, not to the client")
        assert "reason=job called sys.exit(3)" in log
        assert "reason=unknown job 'no.such.job'" in log
        assert "this goes to the log, not to the client" in log
