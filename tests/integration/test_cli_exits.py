"""Exit codes when the output fails, and the dead letter of an over-size job (issue 10; from the attack branch).

A command that did its work and could not write its output exits 5 with one line, whatever the command: ``version``
included (it said 3, "no server reachable", which makes a script wait for a server that is up), and ``--help`` or
``--version`` (they exited 2 in silence). An over-size job's dead letter keeps the job's real size. ``submit``
keeps a bounded share of what a worker streams, and says so when it drops the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from islandora_job.client import MAX_KEPT
from islandora_job.codec import Command
from islandora_job.worker.deadletters import DeadLetterStore
from tests.integration import test_attack_client
from tests.integration.test_cli_faults import assert_one_line
from tests.support.gearmand import Gearmand, admin
from tests.support.peers import PlainClient, payload, wait_for
from tests.support.pool import running_pool

CLI = [sys.executable, "-m", "islandora_job.cli.main"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}


@pytest.mark.parametrize("target", ["/dev/full", "closed"])
def test_version_with_a_full_or_closed_stdout_is_exit_5_not_unreachable(gearmand: Gearmand, target: str) -> None:
    """`version` reached its server; only the output failed. Exit 3 ("no server reachable") would make a script
    wait for a server that is up; every other command exits 5 here."""
    argv = [*CLI, "version", "--server", gearmand.address]
    if target == "closed":
        result = subprocess.run(
            ["/bin/sh", "-c", 'exec "$@" >&-', "sh", *argv], stderr=subprocess.PIPE, text=True, timeout=30, env=_env()
        )
    else:
        with open(target, "w") as full:
            result = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True, timeout=30, env=_env())
    assert_one_line(result, 5, "stdout")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["submit", "--help"]])
def test_help_into_a_full_stdout_says_so(args: list[str]) -> None:
    """`--help` and `--version` into /dev/full exit 2 (a usage error) in silence; a full stdout is exit 5 with one
    line, as for every other output."""
    with open("/dev/full", "w") as full:
        result = subprocess.run([*CLI, *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=30, env=_env())
    assert_one_line(result, 5, "stdout")


def test_an_over_size_job_gets_a_reason_and_a_dead_letter_and_the_pool_serves_on(
    tmp_path: Path, gearmand: Gearmand
) -> None:
    """Issue 10, "Over-size jobs": a background job over the 64 MiB packet cap. Today the worker process drops its
    connection on reading the header, gearmand requeues the job, the process reconnects and grabs it again, about
    8 times a second with a WARNING line each time, for as long as the job is queued: no reason, no dead letter
    (with the role's --job-retries=3, gearmand drops it after 3 rounds, in silence). It must fail once with a
    reason naming the cap, leave a dead letter with the original size, and the next job must be served."""
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "t.pid", count=1)
        [child] = pool.children()
        big = b'{"func":"t.pid","args":["' + b"x" * (65 * 1024 * 1024) + b'"]}'
        with PlainClient(gearmand.address, timeout=60) as client:
            client.conn.send_packet(Command.SUBMIT_JOB_BG, "t.pid", "", big)
            assert client._next().command is Command.JOB_CREATED
            answer = client.submit("t.pid", payload("t.pid"))
        assert answer.ok and answer.data == str(child).encode()
        store = DeadLetterStore(str(pool.dead_letters))
        letters = wait_for(lambda: store.list(function="t.pid"), timeout=10, message="a dead letter")
        assert len(letters) == 1, letters
        assert letters[0].payload_size == len(big) and str(64 * 1024 * 1024) in letters[0].error, letters[0].error
        assert not [line for line in admin(gearmand.port, "status").splitlines() if line.startswith("t.pid\t1")]


def test_submit_says_once_that_it_dropped_what_a_worker_streamed_past_the_cap(
    gearmand: Gearmand, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 MiB of warnings, over the 16 MiB the client keeps: the job's result is printed, exit 0, and one line on
    stderr says what was dropped (test_attack_client.py streams 800 MiB in a process capped at 512 MiB)."""
    monkeypatch.setattr(test_attack_client, "CHUNKS", 24)
    ready = threading.Event()
    worker = threading.Thread(
        target=test_attack_client._chatty_worker, args=(gearmand.port, ready, Command.WORK_WARNING), daemon=True
    )
    worker.start()
    assert ready.wait(10)
    result = subprocess.run(
        [*CLI, "submit", "--server", gearmand.address, "--timeout", "60", test_attack_client.FUNCTION],
        capture_output=True,
        text=True,
        timeout=90,
        env=_env(),
    )
    worker.join(30)
    assert result.returncode == 0 and result.stdout == "done", result.stderr
    [line] = result.stderr.splitlines()
    assert f"more than {MAX_KEPT} bytes" in line and test_attack_client.FUNCTION in line, line
