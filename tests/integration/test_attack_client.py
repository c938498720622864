"""Attacks on the job client from outside (issue 10): a worker we did not write, chatting without end.

The client keeps every WORK_WARNING (and WORK_DATA) packet of a foreground job in a list until the job ends, and
uses only the last warning (as the failure's reason). Any worker that can take the job, a buggy one included, can
so grow ``islandora-job submit`` without bound: here 800 MiB of 1 MiB warnings in a process capped at 512 MiB.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading

import pytest

from islandora_job.address import ServerAddress
from islandora_job.client import MAX_KEPT
from islandora_job.codec import Command, encode
from islandora_job.connection import Connection
from tests.support.gearmand import Gearmand

CLI = [sys.executable, "-m", "islandora_job.cli.main"]
FUNCTION = "ij_atk_chatty"
CHUNK = b"w" * (1024 * 1024)
CHUNKS = 800


def _chatty_worker(port: int, ready: threading.Event, kind: Command) -> None:
    """Takes one job, sends CHUNKS packets of ``kind`` (1 MiB each), then completes it with ``done``."""
    connection = Connection(ServerAddress("127.0.0.1", port), io_timeout=60)
    connection.connect()
    try:
        connection.send_packet(Command.CAN_DO, FUNCTION)
        ready.set()
        while True:
            connection.send_packet(Command.GRAB_JOB)
            packets = []
            while not packets:
                packets = [p for p in connection.receive() if p.command is not Command.NOOP]
            if packets[0].command is Command.JOB_ASSIGN:
                handle = packets[0]["job_handle"]
                break
            connection.send_packet(Command.PRE_SLEEP)
            while not [p for p in connection.receive() if p.command is Command.NOOP]:
                pass
        warning = encode(kind, handle, CHUNK)
        for _ in range(CHUNKS):
            connection.send(warning)
        connection.send_packet(Command.WORK_COMPLETE, handle, b"done")
    finally:
        connection.close()


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))


@pytest.mark.parametrize("kind", [Command.WORK_WARNING, Command.WORK_DATA], ids=["warnings", "data"])
def test_a_worker_that_chats_without_end_does_not_grow_the_client(gearmand: Gearmand, kind: Command) -> None:
    ready = threading.Event()
    worker = threading.Thread(target=_chatty_worker, args=(gearmand.port, ready, kind), daemon=True)
    worker.start()
    assert ready.wait(10)
    env = {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}
    result = subprocess.run(
        [*CLI, "submit", "--server", gearmand.address, "--timeout", "120", FUNCTION],
        capture_output=True,
        timeout=180,
        env=env,
        preexec_fn=_limit_memory,
    )
    worker.join(60)
    assert result.returncode == 0, result.stderr[-2000:]
    if kind is Command.WORK_DATA:  # the output is the data kept (the first MAX_KEPT bytes, whole chunks), then done
        kept = result.stdout[: -len(b"done")]
        assert (
            result.stdout.endswith(b"done") and 0 < len(kept) <= MAX_KEPT and kept == CHUNK * (len(kept) // len(CHUNK))
        )
    else:
        assert result.stdout.strip() == b"done"
