"""``queue move`` argument bounds checked from outside, through the real CLI (issue 16; from the attack branch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_cli_faults import assert_one_line
from tests.integration.test_queue_move import gearmand as gearmand_at
from tests.integration.test_queue_move import submit
from tests.support.gearmand import Gearmand

CLI = [sys.executable, "-m", "islandora_job.cli.main"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}


@pytest.mark.parametrize("value", ["99999999999", "10" + "0" * 12])
def test_a_huge_queue_move_timeout_is_a_usage_error(gearmand: Gearmand, value: str) -> None:
    """`queue move --timeout` accepts any whole number, then the selector overflows: exit 70, "internal error".
    `submit --timeout` refuses more than ten years as a usage error; so must this."""
    result = subprocess.run(
        [*CLI, "queue", "move", "--from", gearmand.address, "--to", "127.0.0.1:9", "--timeout", value],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert_one_line(result, 2, "--timeout")


def test_control_characters_in_function_names_are_escaped_in_the_table_and_progress(tmp_path: Path) -> None:
    """Any client may name a function with a tab or newline: it moves, and the output shows it escaped."""
    with gearmand_at(tmp_path / "a", []) as source, gearmand_at(tmp_path / "b", []) as target:
        submit(source, [("ij_arg\nforged", "normal", "h1", b"p"), ("ij_arg\ttab", "high", "h2", b"p")])
        result = subprocess.run(
            [*CLI, "queue", "move", "--from", source.address, "--to", target.address],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
        assert result.returncode == 0, result.stderr
        assert "ij_arg\\nforged" in result.stdout and "ij_arg\\ttab" in result.stdout
        assert "ij_arg\\nforged: 1/1 moved" in result.stderr
        assert "\t" not in result.stdout and "forged\n" not in result.stderr
