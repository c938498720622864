"""What the job client keeps of a job's WORK_DATA and WORK_WARNING packets: bounded, whatever a worker streams.

(The whole client against a worker that streams 800 MiB is tests/integration/test_attack_client.py.)
"""

from __future__ import annotations

import logging

import pytest

from islandora_job.client import _PACKET_COST, MAX_KEPT, JobRequest, JobResult
from islandora_job.codec import Command

MIB = 1024 * 1024


def _result() -> JobResult:
    return JobResult(JobRequest("f"), function="f", handle="H:x:1")


def test_data_past_the_cap_is_dropped_and_counted_once_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    result = _result()
    with caplog.at_level(logging.WARNING, logger="islandora_job.client"):
        for n in range(40):
            result.keep(Command.WORK_DATA, bytes([n]) * MIB)
    kept = len(result.partial)
    assert 0 < kept < 40 and sum(map(len, result.partial)) <= MAX_KEPT
    assert result.partial[0][0] == 0 and result.partial[-1][0] == kept - 1  # the stream's beginning, in order
    assert result.dropped == (40 - kept) * MIB
    [record] = caplog.records
    assert "'f'" in record.getMessage() and "H:x:1" in record.getMessage()


def test_the_last_warning_is_always_kept_and_a_flood_of_empty_ones_is_bounded() -> None:
    result = _result()
    for n in range(40):
        result.keep(Command.WORK_WARNING, bytes([n]) * MIB)
    assert result.warnings[-1] == bytes([39]) * MIB and sum(map(len, result.warnings)) <= MAX_KEPT
    result.keep(Command.WORK_WARNING, b"x" * (MAX_KEPT + 1))  # one warning over the cap on its own: still the reason
    assert result.warnings == [b"x" * (MAX_KEPT + 1)]
    for _ in range(MAX_KEPT // _PACKET_COST + 1000):
        result.keep(Command.WORK_WARNING, b"")
    assert len(result.warnings) <= MAX_KEPT // _PACKET_COST
    assert result.warnings[-1] == b""
