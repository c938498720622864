"""``queue move`` argument bounds checked from outside, through the real CLI (issue 16; from the attack branch)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.test_cli_faults import assert_one_line
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
