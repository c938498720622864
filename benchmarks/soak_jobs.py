"""The soak's jobs. Each run of a job appends one completion record (``ID KIND PID``) to ``$SOAK_RECORDS``.

A record is one ``write`` to a file opened with ``O_APPEND``: it cannot interleave with another process's record.
Quick, slow and failing jobs write it when their work is done (a job killed before that leaves no record and is
run again by gearmand); a hanging job writes it when it starts, then hangs until its time limit (1 s) fires.
"""

from __future__ import annotations

import os
import time

from islandora_job import Fail, job


def _record(job_id: int, kind: str) -> None:
    fd = os.open(os.environ["SOAK_RECORDS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{job_id} {kind} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


@job("soak.quick")
def quick(job_id: int) -> None:
    _record(job_id, "quick")


@job("soak.slow")
def slow(job_id: int, seconds: float) -> None:
    time.sleep(seconds)
    _record(job_id, "slow")


@job("soak.fail")
def fail(job_id: int) -> None:
    _record(job_id, "fail")
    raise Fail("failing by design")


@job("soak.hang", timeout=1)
def hang(job_id: int) -> None:
    _record(job_id, "hang")
    time.sleep(3600)
