"""The worker with this project's own client (islandora_job.client.JobClient) as the peer."""

from __future__ import annotations

from pathlib import Path

import pytest

from islandora_job.client import JobClient, JobRequest
from islandora_job.errors import JobFailed
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
