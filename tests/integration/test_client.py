"""The job client against a real gearmand and real workers that no one here wrote."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from islandora_job.admin import AdminClient
from islandora_job.client import JobClient, JobRequest
from islandora_job.errors import JobException, JobFailed, JobTimeout, ServerUnavailable
from islandora_job.payload import PayloadError, decode
from tests.integration.peers import cli_worker, php_worker
from tests.support.gearmand import Gearmand, free_port


def queued(server: Gearmand, function: str) -> int:
    with AdminClient(server.address) as admin:
        return next((s.total for s in admin.status() if s.function == function), 0)


def test_foreground_through_the_gearman_cli_worker(gearmand: Gearmand) -> None:
    with cli_worker(gearmand.port, "echo", "cat"), JobClient([gearmand.address], site="http://x", uid=1) as client:
        data = client.submit("echo", "islandora:1", {"dsid": "OBJ"})
    assert json.loads(data) == {"func": "echo", "args": ["islandora:1", {"dsid": "OBJ"}], "site": "http://x", "uid": 1}


def test_a_failing_command_is_job_failed(gearmand: Gearmand) -> None:
    with cli_worker(gearmand.port, "nope", "false"), JobClient([gearmand.address]) as client:
        with pytest.raises(JobFailed) as info:
            client.submit("nope")
    assert info.value.handle and info.value.handle.startswith("H:")


def test_php_worker_results_fail_and_exception(gearmand: Gearmand) -> None:
    with php_worker(gearmand.address), JobClient([gearmand.address]) as client:
        assert client.submit("php_upper", "abc") == b"ABC"
        assert decode(client.submit("php_echo", 1, [2])).args == (1, [2])
        with pytest.raises(JobFailed):
            client.submit("php_fail")
        with pytest.raises(JobFailed, match="failed: disk full"):
            client.submit("php_warn_fail")
        with pytest.raises(JobException, match="php says no") as info:
            client.submit("php_exception")
        assert info.value.data == "php says no"
        # The connection is still good after failures.
        assert client.submit("php_upper", "again") == b"AGAIN"


def test_batch_keeps_submission_order_and_reports_failures_per_job(gearmand: Gearmand) -> None:
    jobs: list[JobRequest | tuple[str, list[object]]] = []
    for i in range(300):
        jobs.append(("php_upper", [f"job{i}"]) if i % 3 else JobRequest("php_fail", (i,)))
    with php_worker(gearmand.address), JobClient([gearmand.address], max_in_flight=16) as client:
        results = client.submit_batch(jobs)
    assert len(results) == 300
    for i, result in enumerate(results):
        if i % 3:
            assert result.ok and result.data == f"JOB{i}".encode()
        else:
            assert isinstance(result.error, JobFailed)
        assert result.handle and result.handle.startswith("H:")


def test_background_batch_is_queued_and_acknowledged(gearmand: Gearmand) -> None:
    with JobClient([gearmand.address]) as client:
        results = client.submit_batch([("later", [i]) for i in range(2000)], background=True)
    assert all(r.ok and r.handle for r in results)
    assert len({r.handle for r in results}) == 2000
    assert queued(gearmand, "later") == 2000


def test_priorities_run_high_then_normal_then_low(gearmand: Gearmand, tmp_path: Path) -> None:
    log = tmp_path / "order"
    with JobClient([gearmand.address]) as client:
        for priority in ("low", "normal", "high"):
            client.submit_background("prio", priority, priority=priority)  # type: ignore[arg-type]
    with AdminClient(gearmand.address) as admin:
        [row] = [p for p in admin.priority_status() if p.function == "prio"]
    assert (row.high, row.normal, row.low) == (1, 1, 1)
    command = ("sh", "-c", f"cat >> {log}; echo >> {log}")
    with cli_worker(gearmand.port, "prio", *command, extra=("-c", "3"), wait=False) as worker:
        worker.wait(timeout=10)
    order = [json.loads(line)["args"][0] for line in log.read_text().splitlines()]
    assert order == ["high", "normal", "low"]


def test_dedupe_coalesces_identical_queued_jobs(gearmand: Gearmand) -> None:
    with JobClient([gearmand.address]) as client:
        first = client.submit_background("derive", "islandora:1", dedupe=True)
        second = client.submit_background("derive", "islandora:1", dedupe=True)
        other = client.submit_background("derive", "islandora:2", dedupe=True)
        explicit = [client.submit_background("derive", n, unique="same-key") for n in (1, 2)]
    assert first == second != other
    assert explicit[0] == explicit[1]
    assert queued(gearmand, "derive") == 3


def test_job_status_and_cancel(gearmand: Gearmand, tmp_path: Path) -> None:
    """gearmand 1.1.20 cancels by marking the job ignored; it is dropped, never run, when a worker reaches it."""
    log = tmp_path / "ran"
    with JobClient([gearmand.address]) as client:
        cancelled = client.submit_background("waits", "cancelled")
        status = client.get_status(cancelled)
        assert status.known and not status.running
        with AdminClient(gearmand.address) as admin:
            admin.cancel_job(cancelled)
            [job] = [j for j in admin.show_jobs() if j.handle == cancelled]
            assert job.ignore_job
        client.submit_background("waits", "kept")
    with cli_worker(
        gearmand.port, "waits", "sh", "-c", f"cat >> {log}; echo >> {log}", extra=("-c", "1"), wait=False
    ) as worker:
        worker.wait(timeout=10)
    assert [json.loads(line)["args"] for line in log.read_text().splitlines()] == [["kept"]]
    assert queued(gearmand, "waits") == 0


def test_timeout_when_no_worker_serves_the_job(gearmand: Gearmand) -> None:
    with JobClient([gearmand.address]) as client:
        started = time.monotonic()
        with pytest.raises(JobTimeout) as info:
            client.submit("nobody_serves_this", timeout=0.5)
        assert time.monotonic() - started < 3
        assert info.value.handle
        # The client stays usable: a late answer cannot be confused with a new job.
        assert client.submit_background("still_fine")


def test_second_server_used_when_the_first_is_down(gearmand: Gearmand) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with JobClient([dead, gearmand.address]) as client:
        handles = [client.submit_background("spread", i) for i in range(10)]
    assert all(h.startswith("H:") for h in handles)
    assert queued(gearmand, "spread") == 10


def test_unreachable_servers_are_all_named() -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    with JobClient(dead, connect_timeout=1) as client, pytest.raises(ServerUnavailable) as info:
        client.submit("anything")
    for address in dead:
        assert address in str(info.value)
    assert "connection refused" in str(info.value)


def test_maxqueue_refusal_is_reported_per_job(gearmand: Gearmand) -> None:
    with JobClient([gearmand.address]) as client:
        client.submit_background("bounded", "first")  # gearmand 1.1.20 ignores maxqueue for unknown functions
        with AdminClient(gearmand.address) as admin:
            admin.maxqueue("bounded", 2)
        results = client.submit_batch([("bounded", [i]) for i in range(3)], background=True)
        assert [r.ok for r in results] == [True, False, False]
        assert "server refused the submission" in str(results[2].error)
        # The connection stays in step after refusals.
        assert client.submit_background("unbounded").startswith("H:")
    assert queued(gearmand, "bounded") == 2


def test_raw_workload_is_sent_as_is(gearmand: Gearmand) -> None:
    workload = b"not json \0 at all"
    with cli_worker(gearmand.port, "raw_echo", "cat"), JobClient([gearmand.address]) as client:
        [result] = client.submit_batch([JobRequest("raw_echo", raw=workload)])
        assert result.data == workload
        with pytest.raises(PayloadError, match="either args or a raw workload"):
            client.submit_batch([JobRequest("raw_echo", ("x",), raw=b"y")], raise_unavailable=True)
