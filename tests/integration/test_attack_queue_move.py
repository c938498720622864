"""Attacks on ``islandora-job queue move`` from outside (issue 16), with clients the mover's author did not write.

The mover asks gearmand ``GET_STATUS_UNIQUE`` whether a client waits on a grabbed job. gearmand 1.1.20 looks the
unique key up across *all* functions and answers for the most recently submitted job with that key, whatever its
function. So when a background job of another function shares the key, a foreground job is taken for a background
one: it is moved, completed on the source with an empty result (its waiting client is told "success", with no
output) and runs later on the target, where nobody waits for it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.integration.test_queue_move import gearmand, priority_status, run_mover
from tests.support.gearmand import Gearmand

GEARMAN = ["gearman", "-h", "127.0.0.1", "-p"]


def serve_and_expect_the_client_answered(source: Gearmand, function: str, client: subprocess.Popen[str]) -> None:
    """A worker on the source serves the job left there; its waiting client (which sent "waits") gets that worker's
    answer: the job was never taken away from it."""
    served = subprocess.run(
        [*GEARMAN, str(source.port), "-w", "-c", "1", "-f", function, "--", "tr", "a-z", "A-Z"],
        timeout=30,
        check=False,
        capture_output=True,
    )
    assert served.returncode == 0
    assert client.communicate(timeout=30)[0].strip() == "WAITS"


def _wait(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_foreground_job_sharing_its_key_with_another_functions_job_stays_with_its_client(tmp_path: Path) -> None:
    """A `gearman` CLI client waits on job ``ij_atk_fg`` (key ``shared``); then a background job of ``ij_atk_bg``
    is queued with the same key. Moving ``ij_atk_fg`` must leave the foreground job where its client waits: the
    client gets the result of a real worker on the source, not an empty success, and the target gets no copy."""
    with gearmand(tmp_path / "a", []) as source, gearmand(tmp_path / "b", []) as target:
        client = subprocess.Popen(
            [*GEARMAN, str(source.port), "-u", "shared", "-f", "ij_atk_fg", "--", "waits"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            _wait(lambda: priority_status(source).get("ij_atk_fg") == (0, 1, 0))
            subprocess.run(
                [*GEARMAN, str(source.port), "-b", "-u", "shared", "-f", "ij_atk_bg"],
                input="background",
                text=True,
                check=True,
                timeout=20,
            )
            done = run_mover("--from", source.address, "--to", target.address, "--function", "ij_atk_fg", "--json")
            assert "ij_atk_fg" not in priority_status(target), (
                f"the foreground job was moved away from its waiting client: {done.stdout} {done.stderr}"
            )
            serve_and_expect_the_client_answered(source, "ij_atk_fg", client)
        finally:
            client.kill()
            client.wait()
