"""Attacks on the admin client from outside (issue 10): a function name chosen by any client.

gearmand accepts any bytes but NUL in a function name, a tab included, and its admin ``status`` and
``prioritystatus`` answers are tab-separated lines with the name first. One background job submitted to a function
named ``a<TAB>b`` made ``islandora-job status`` call a reachable server unreachable (exit 3) and made every
``islandora-job queue move`` of that server stop before moving anything, rerun after rerun.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from islandora_job.address import ServerAddress
from islandora_job.codec import Command
from islandora_job.connection import Connection
from tests.integration.test_queue_move import gearmand, submit
from tests.support.gearmand import Gearmand, admin
from tests.support.peers import wait_for

CLI = [sys.executable, "-m", "islandora_job.cli.main"]
HOSTILE = "ij_atk\tforged"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}


def _waiting(server: Gearmand, function: str) -> int:
    for line in admin(server.port, "status").splitlines():
        fields = line.rsplit("\t", 3)
        if fields[0] == function:
            return int(fields[1])
    return 0


def _status_then_move(source: Gearmand, target: Gearmand) -> subprocess.CompletedProcess[str]:
    """``islandora-job status`` on the source must still show the plain function; then the whole queue is moved."""
    status = subprocess.run(
        [*CLI, "status", "--server", source.address], capture_output=True, text=True, timeout=30, env=_env()
    )
    assert status.returncode == 0, status.stderr
    assert "ij_atk_plain" in status.stdout
    return subprocess.run(
        [*CLI, "queue", "move", "--from", source.address, "--to", target.address, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )


def test_a_tab_in_a_function_name_neither_hides_a_server_nor_blocks_the_queue_move(tmp_path: Path) -> None:
    with gearmand(tmp_path / "a", []) as source, gearmand(tmp_path / "b", []) as target:
        submit(source, [("ij_atk_plain", "normal", f"k{i}", b"payload") for i in range(5)])
        submit(source, [(HOSTILE, "normal", "h1", b"payload")])
        wait_for(lambda: _waiting(source, HOSTILE) == 1, timeout=10, message="the jobs queued")
        moved = _status_then_move(source, target)
        assert moved.returncode == 0, moved.stderr
        assert json.loads(moved.stdout)["moved"] == 6
        assert _waiting(target, "ij_atk_plain") == 5
        assert _waiting(target, HOSTILE) == 1


def test_a_newline_in_a_function_name_neither_hides_a_server_nor_blocks_the_queue_move(tmp_path: Path) -> None:
    """A newline splits the hostile function's line in two: ``ij_atk`` alone, then ``forged\\t1\\t0\\t0``. Its own
    job may stay behind (the text protocol cannot tell), but the server is reachable and the other jobs move."""
    hostile = "ij_atk\nforged"
    with gearmand(tmp_path / "a", []) as source, gearmand(tmp_path / "b", []) as target:
        submit(source, [("ij_atk_plain", "normal", f"k{i}", b"payload") for i in range(5)])
        submit(source, [(hostile, "normal", "h1", b"payload")])
        wait_for(lambda: "forged" in admin(source.port, "status"), timeout=10, message="the jobs queued")
        moved = _status_then_move(source, target)
        assert moved.returncode in (0, 1), moved.stderr
        assert _waiting(target, "ij_atk_plain") == 5, moved.stderr


def test_a_newline_in_a_client_id_neither_hides_a_server_nor_blocks_a_move_into_it(tmp_path: Path) -> None:
    """Any worker may name itself with SET_CLIENT_ID, newline included: `workers` then called the server
    unreachable (exit 3), and `queue move` (which reads the target's `workers` to tell two gearmands apart) could
    not move anything into it."""
    with gearmand(tmp_path / "a", []) as source, gearmand(tmp_path / "b", []) as target:
        submit(source, [("ij_atk_plain", "normal", f"k{i}", b"payload") for i in range(5)])
        peer = Connection(ServerAddress("127.0.0.1", target.port))
        peer.connect()
        try:
            peer.send_packet(Command.SET_CLIENT_ID, "evil\nid")
            peer.send_packet(Command.CAN_DO, "ij_atk_other")
            wait_for(lambda: "evil" in admin(target.port, "workers"), timeout=10, message="the peer registered")
            workers = subprocess.run(
                [*CLI, "workers", "--server", target.address], capture_output=True, text=True, timeout=30, env=_env()
            )
            assert workers.returncode == 0, workers.stderr
            moved = subprocess.run(
                [*CLI, "queue", "move", "--from", source.address, "--to", target.address],
                capture_output=True,
                text=True,
                timeout=60,
                env=_env(),
            )
            assert moved.returncode == 0, moved.stderr
            assert _waiting(target, "ij_atk_plain") == 5
        finally:
            peer.close()
