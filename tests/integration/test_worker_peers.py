"""The worker against clients no one here wrote: PHP's gearman extension, the gearman CLI, pygearman."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import gearman
import pytest

from islandora_job.codec import Command
from tests.support.gearmand import Gearmand
from tests.support.peers import PlainClient, payload, wait_for
from tests.support.pool import Pool, running_pool

PHP_CLIENT = Path(__file__).parent / "php" / "worker_peer_client.php"


@pytest.fixture
def pool(tmp_path: Path, gearmand: Gearmand) -> Iterator[Pool]:
    with running_pool(tmp_path, [gearmand.address], concurrency=2) as pool:
        pool.wait_registered(gearmand.port, "islandora_job_demo.add")
        yield pool


def test_php_donormal_dobackground_and_runtasks(pool: Pool, gearmand: Gearmand, tmp_path: Path) -> None:
    target = tmp_path / "from-php.txt"
    run = subprocess.run(
        ["php", str(PHP_CLIENT), str(gearmand.port), str(target)], capture_output=True, timeout=60, check=True
    )
    seen = json.loads(run.stdout)
    codes = seen["constants"]
    assert seen["doNormal"] == {"result": "5", "code": codes["SUCCESS"]}
    # a job that fails plainly (raise islandora_job.Fail) gives PHP GEARMAN_WORK_FAIL, as the original did
    assert seen["fail"]["code"] == codes["WORK_FAIL"]
    # so does one that raises: by default the reason travels in WORK_WARNING, the end is a plain WORK_FAIL
    assert seen["raise"]["code"] == codes["WORK_FAIL"]
    assert seen["doBackground"]["handle"].startswith("H:")
    wait_for(lambda: target.exists() and target.read_text() == "from php", message="the background job's file")
    tasks = seen["runTasks"]["tasks"]
    assert {f"task-{i}": {"status": "complete", "data": str(i + 100)} for i in range(10)}.items() <= tasks.items()
    assert tasks["task-fail"] == {"status": "fail"}


def test_gearman_cli_to_a_raw_job(pool: Pool, gearmand: Gearmand) -> None:
    run = subprocess.run(
        ["gearman", "-p", str(gearmand.port), "-f", "islandora_job_demo.raw_upper", "hello; $(rm -rf /) 'x'"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert run.stdout == b"HELLO; $(RM -RF /) 'X'"


def test_text_that_is_not_a_payload_is_a_failure_and_the_worker_goes_on(pool: Pool, gearmand: Gearmand) -> None:
    children = pool.children()
    with PlainClient(gearmand.address, exceptions=False) as client:
        answer = client.submit("islandora_job_demo.add", b"not json")
        assert answer.command is Command.WORK_FAIL
        assert client.call("islandora_job_demo.add", 2, 3).data == b"5"
    assert pool.children() == children
    pool.wait_log("reason=bad payload: payload is not JSON")


def test_gearman_cli_sees_a_failure(pool: Pool, gearmand: Gearmand) -> None:
    run = subprocess.run(
        ["gearman", "-p", str(gearmand.port), "-f", "islandora_job_demo.add", "not json"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert run.returncode != 0
    assert run.stdout == b""


def test_send_exceptions_gives_the_reason_to_clients_that_ask(tmp_path: Path, gearmand: Gearmand) -> None:
    with running_pool(tmp_path, [gearmand.address], concurrency=1, extra="send_exceptions = true") as pool:
        pool.wait_registered(gearmand.port, "islandora_job_demo.raise")
        with PlainClient(gearmand.address, exceptions=True) as client:
            answer = client.call("islandora_job_demo.raise", "kaboom")
    assert answer.command is Command.WORK_EXCEPTION
    assert answer.data == b"RuntimeError: kaboom"


def test_pygearman_client_as_a_second_python_peer(pool: Pool, gearmand: Gearmand) -> None:
    client = gearman.GearmanClient([gearmand.address])
    try:
        requests = client.submit_multiple_jobs(
            [
                {"task": "islandora_job_demo.add", "data": payload("islandora_job_demo.add", n, 1).decode()}
                for n in range(20)
            ],
            poll_timeout=20,
        )
        assert [r.result for r in requests] == [str(n + 1).encode() for n in range(20)]
        failed = client.submit_job(
            "islandora_job_demo.fail", payload("islandora_job_demo.fail").decode(), poll_timeout=20
        )
        assert failed.state == gearman.JOB_FAILED
    finally:
        client.shutdown()


def test_payloads_larger_than_one_read_cross_the_worker_byte_for_byte(pool: Pool, gearmand: Gearmand) -> None:
    """The worker reads into one reused buffer (256 KiB): a job of several reads, NULs and all, and small jobs
    pipelined behind it in the same reads, must come back exact. pygearman is the client, and its payload is
    upper-cased, so an echo of stale buffer contents could not pass."""
    big = os.urandom(3 * 1024 * 1024 + 7).replace(b"\x00", b"\x00a")
    small = [b"job %d \x00 tail" % n for n in range(30)]
    client = gearman.GearmanClient([gearmand.address])
    try:
        requests = client.submit_multiple_jobs(
            [{"task": "islandora_job_demo.raw_upper", "data": data} for data in [big, *small, big[::-1]]],
            poll_timeout=60,
        )
        results = [request.result for request in requests]
    finally:
        client.shutdown()
    assert results[0] == big.upper() and results[-1] == big[::-1].upper()
    assert results[1:-1] == [data.upper() for data in small]
