"""Every way in from outside still resolves: pyproject's scripts and entry points, and both ``-m`` names of a worker.

The supervisor starts ``python -m islandora_job.worker.child``; ``python -m islandora_job.child`` is the name a
supervisor started before the worker side moved into its package still uses after an upgrade.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distribution

import pytest

from islandora_job import exit_codes
from islandora_job.worker.config import build


def test_every_script_and_entry_point_of_the_distribution_loads() -> None:
    points = list(distribution("islandora-job").entry_points)
    assert {point.group for point in points} >= {"console_scripts", "islandora_job.jobs"}
    for point in points:
        assert point.load() is not None, point


@pytest.mark.parametrize("module", ["islandora_job.worker.child", "islandora_job.child"])
def test_a_worker_process_checks_a_configuration_under_either_name(module: str) -> None:
    good = build({"servers": ["127.0.0.1:4730"]}, "test").to_json().encode() + b"\n"
    for stdin, status in ((good, exit_codes.OK), (b"{not json\n", exit_codes.USAGE)):
        result = subprocess.run(
            [sys.executable, "-m", module, "--check"], input=stdin, capture_output=True, timeout=60, check=False
        )
        assert result.returncode == status, result.stderr.decode()
    assert b"bad configuration from the supervisor" in result.stderr
