"""The worker with this project's own client (islandora_job.client.JobClient) as the peer."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from islandora_job.address import ServerAddress
from islandora_job.client import JobClient, JobRequest
from islandora_job.errors import JobFailed
from islandora_job.worker.process import NoEvents, Worker
from islandora_job.worker.registry import JobSpec, Registry
from islandora_job.worker.router import Router
from tests.support.gearmand import Gearmand
from tests.support.peers import wait_for
from tests.support.pool import running_pool


def test_submit_background_and_batch(tmp_path: Path, gearmand: Gearmand) -> None:
    target = tmp_path / "written.txt"
    with running_pool(tmp_path, [gearmand.address], concurrency=2) as pool:
        pool.wait_registered(gearmand.port, "islandora_job_demo.add")
        client = JobClient([gearmand.address])
        try:
            assert client.submit("islandora_job.ping", timeout=10) == b"pong"
            assert client.submit("islandora_job_demo.echo", {"a": [1, "b"]}, timeout=10) == b'{"a":[1,"b"]}'
            with pytest.raises(JobFailed):
                client.submit("islandora_job_demo.fail", "why", timeout=10)
            handle = client.submit_background("islandora_job_demo.write_file", str(target), "hello")
            assert handle.startswith("H:")
            wait_for(lambda: target.exists() and target.read_text() == "hello", message="the background job")
            results = client.submit_batch(
                [JobRequest("islandora_job_demo.add", (n, n)) for n in range(50)]
                + [JobRequest("islandora_job_demo.raise", ("kaboom",))],
                timeout=20,
            )
        finally:
            client.close()
        assert [r.data for r in results[:50]] == [str(2 * n).encode() for n in range(50)]
        failed = results[50]
        assert isinstance(failed.error, JobFailed)
        assert failed.warnings == [b"RuntimeError: kaboom"]  # the reason, sent before the WORK_FAIL


def test_the_result_goes_out_before_the_log_line_and_the_report(gearmand: Gearmand) -> None:
    """A job's answer is sent with the next grab; its log line and its report come after, off the critical path.

    A log handler that holds every "outcome=" line until the test releases it: if the worker logged before it
    answered (as it did until the answer and the grab were moved ahead), the client would never see its result.
    """
    registry = Registry()
    registry.add(JobSpec(name="t.echo", fn=lambda text: text, where="test"), "test")
    reported: list[str] = []

    class Recorder(NoEvents):
        def job_done(self, name: str, status: str, seconds: float) -> None:
            reported.append(status)

    router = Router(registry, default_timeout=5)
    worker = Worker([ServerAddress.parse(gearmand.address)], router, idle_grab_interval=0.2, events=Recorder())
    release = threading.Event()
    held: list[str] = []

    class Holding(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "outcome=" in record.getMessage():
                held.append(record.getMessage())
                release.wait(20)

    handler = Holding(level=logging.INFO)
    worker_log = logging.getLogger("islandora_job.worker.process")
    worker_log.addHandler(handler)
    previous_level = worker_log.level
    worker_log.setLevel(logging.INFO)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    client = JobClient([gearmand.address])
    try:
        assert client.submit("t.echo", "first", timeout=10) == b"first"
        wait_for(lambda: len(held) == 1, message="the first job's log line")
        assert reported == [], "the report to the supervisor comes after the log line, both after the answer"
        release.set()
        assert client.submit("t.echo", "second", timeout=10) == b"second"
        wait_for(lambda: reported == ["complete", "complete"], message="both reports")
        assert [line.split()[1] for line in held] == ["t.echo", "t.echo"]
    finally:
        release.set()
        client.close()
        worker.stop()
        thread.join(10)
        worker_log.removeHandler(handler)
        worker_log.setLevel(previous_level)
    assert not thread.is_alive()
