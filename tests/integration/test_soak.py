"""The short soak (5,000 background jobs under chaos): nothing lost, nothing dropped, duplicates within their bound.

Correctness only: times and memory are reported by ``python -m benchmarks.soak`` (``make soak``), never asserted.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks.soak import JOB_RETRIES, run_soak


@pytest.mark.slow
def test_short_soak_loses_nothing(tmp_path: Path) -> None:
    result = run_soak(5000, tmp_path, concurrency=4, max_jobs=500, kill_every=2.0, hup_every=10.0, drain_timeout=240)
    summary = json.dumps({k: v for k, v in asdict(result).items() if k != "lost_ids"})
    assert result.submitted == 5000 and result.not_submitted == 0, summary
    assert result.drained, f"jobs still pending after the drain timeout: {summary}"
    assert result.lost == 0, f"lost jobs {result.lost_ids}: {summary}"
    assert result.dropped_at_retry_limit == 0, f"gearmand dropped jobs at --job-retries={JOB_RETRIES}: {summary}"
    assert result.kills > 0 and result.gearmand_restarts == 1 and result.hups > 0, (
        f"the chaos did not happen: {summary}"
    )
    assert result.duplicates <= result.duplicate_bound, summary
    assert result.completed + result.failed_as_designed == 5000, summary
