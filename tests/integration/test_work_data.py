"""WORK_DATA and the result, joined as libgearman joins them (issue 11), checked against workers and clients we did
not write: the ``gearman -w -n`` CLI worker, a PHP GearmanWorker that calls ``sendData``, PHP's ``doNormal``."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

from islandora_job.client import JobClient, JobRequest
from tests.integration.peers import cli_worker, php_worker
from tests.support.gearmand import Gearmand
from tests.support.pool import running_pool

PHP_DATA_WORKER = Path(__file__).parent / "php" / "data_worker.php"
CLI = str(Path(sys.executable).with_name("islandora-job"))
#: A command that prints three lines, for ``gearman -w -n``, which sends each line it reads as a WORK_DATA packet.
LINES = ("/bin/sh", "-c", 'cat >/dev/null; printf "a\\nb\\n"; printf c')


def php_do_normal(port: int, function: str, workload: str) -> bytes:
    """What a Drupal site's ``islandora_job_submit`` gets: ``GearmanClient::doNormal``'s return value."""
    code = (
        f'$c = new GearmanClient(); $c->addServer("127.0.0.1", {port}); $c->setTimeout(20000);'
        f"echo $c->doNormal({json.dumps(function)}, {json.dumps(workload)});"
        'if ($c->returnCode() != GEARMAN_SUCCESS) { fwrite(STDERR, "failed: " . $c->error()); exit(1); }'
    )
    run = subprocess.run(["php", "-r", code], capture_output=True, timeout=30)
    assert run.returncode == 0, run.stderr
    return run.stdout


def cli_submit(gearmand: Gearmand, name: str) -> bytes:
    run = subprocess.run([CLI, "submit", name, "--server", gearmand.address], capture_output=True, timeout=30)
    assert run.returncode == 0, run.stderr
    return run.stdout


def php_data_worker(address: str) -> contextlib.AbstractContextManager[object]:
    return php_worker(address, PHP_DATA_WORKER, "php_data")


def test_a_gearman_cli_worker_with_n_gives_our_client_what_it_gives_php(gearmand: Gearmand) -> None:
    """``gearman -w -n`` answers with WORK_DATA only (its WORK_COMPLETE is empty): the client printed nothing."""
    with cli_worker(gearmand.port, "lines", *LINES, extra=("-n",)), JobClient([gearmand.address]) as client:
        ours = client.submit("lines", timeout=20)
        batch = client.submit_batch([JobRequest("lines")] * 3, timeout=20)
        printed = cli_submit(gearmand, "lines")
        php = php_do_normal(gearmand.port, "lines", "x")
    # gearman 1.1.20's -n sends the output read so far with each line ("a\n", "a\nb\n", "a\nb\nc"); libgearman
    # joins the packets, so PHP sees each prefix in turn, and so do we
    assert php == b"a\na\nb\na\nb\nc"
    assert ours == printed == php
    assert [r.data for r in batch] == [php] * 3 and batch[0].partial == [b"a\n", b"a\nb\n", b"a\nb\nc"]


def test_a_php_worker_s_senddata_is_joined_to_its_result(gearmand: Gearmand) -> None:
    with php_data_worker(gearmand.address), JobClient([gearmand.address]) as client:
        assert client.submit("php_data", timeout=20) == b"ab"
        batch = client.submit_batch([JobRequest("php_data", (n,)) for n in range(20)], timeout=20)
        assert cli_submit(gearmand, "php_data") == b"ab"
        assert php_do_normal(gearmand.port, "php_data", "x") == b"ab"
    assert [(r.ok, r.data, r.partial) for r in batch] == [(True, b"ab", [b"a"])] * 20


def test_php_donormal_gets_a_python_jobs_send_data_glued_to_its_result(tmp_path: Path, gearmand: Gearmand) -> None:
    """The other direction, documented in docs/writing-jobs.md: libgearman joins, so PHP sees one string."""
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "t.progress", count=1)
        workload = json.dumps({"func": "t.progress", "args": [], "site": "http://localhost", "uid": "1"})
        answer = php_do_normal(gearmand.port, "t.progress", workload)
    assert answer.startswith(b"partialH:") and answer.endswith(b"|http://localhost|1")
