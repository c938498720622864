"""``queue move`` and a unique key that two functions share (issue 16): the foreground question cannot be answered.

gearmand 1.1.20 answers ``GET_STATUS_UNIQUE`` for the job with that key added last, whatever its function. The
attack test (test_attack_queue_move.py) covers the other job still queued (its answer says "not running"); here
the other job is *running* on another worker, so the answer looks exactly like one about the mover's own job, and
only ``show unique jobs`` (the key listed twice) tells that it may not be.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from islandora_job.address import ServerAddress
from islandora_job.admin import AdminClient
from islandora_job.codec import Command
from islandora_job.connection import Connection
from tests.integration.test_attack_queue_move import GEARMAN, _wait, serve_and_expect_the_client_answered
from tests.integration.test_queue_move import gearmand, priority_status, run_mover, submit


def test_a_foreground_job_sharing_its_key_with_a_running_job_stays_with_its_client(tmp_path: Path) -> None:
    with gearmand(tmp_path / "a", []) as source, gearmand(tmp_path / "b", []) as target:
        client = subprocess.Popen(
            [*GEARMAN, str(source.port), "-u", "shared", "-f", "ij_sk_fg", "--", "waits"],
            stdout=subprocess.PIPE,
            text=True,
        )
        other = Connection(ServerAddress("127.0.0.1", source.port))
        try:
            _wait(lambda: priority_status(source).get("ij_sk_fg") == (0, 1, 0))
            subprocess.run(
                [*GEARMAN, str(source.port), "-b", "-u", "shared", "-f", "ij_sk_bg"],
                input="background",
                text=True,
                check=True,
                timeout=20,
            )
            other.connect()  # a worker of the other function holds its job: the answer for the key says "running"
            other.send_packet(Command.CAN_DO, "ij_sk_bg")
            other.send_packet(Command.GRAB_JOB_UNIQ)
            assigned = []
            while not assigned:  # the connection's own io timeout bounds this
                assigned = [p for p in other.receive() if p.command is Command.JOB_ASSIGN_UNIQ]
            assert assigned[0]["unique"] == b"shared"

            done = run_mover("--from", source.address, "--to", target.address, "--function", "ij_sk_fg", "--json")
            assert done.returncode in (0, 1), done.stderr
            summary = json.loads(done.stdout)
            assert summary["moved"] == 0, summary
            assert "ij_sk_fg" not in priority_status(target), "the foreground job was moved away from its client"
            serve_and_expect_the_client_answered(source, "ij_sk_fg", client)
        finally:
            other.close()
            client.kill()
            client.wait()


def test_count_unique_counts_a_long_answer_and_leaves_the_session_usable(tmp_path: Path) -> None:
    """``show unique jobs`` is read a block at a time: keys across block boundaries, one key shared by two
    functions, and the next command on the same session answered as its own."""
    with gearmand(tmp_path / "a", []) as source:
        batch = [("ij_sk_a", "normal", f"key-{i:05d}-{'x' * 40}", b"p") for i in range(6000)]
        submit(source, [*batch, ("ij_sk_b", "low", batch[4321][2], b"p")])
        asked = {batch[0][2].encode(), batch[4321][2].encode(), batch[5999][2].encode(), b"absent"}
        with AdminClient(source.address) as admin:
            counts = admin.count_unique(asked)
            assert admin.version()  # the session is still in step
        assert counts == {batch[0][2].encode(): 1, batch[4321][2].encode(): 2, batch[5999][2].encode(): 1}
