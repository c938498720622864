"""Jobs that come with islandora-job itself (registered through the ``islandora_job.jobs`` entry point)."""

from __future__ import annotations

from islandora_job.worker.registry import job


@job("islandora_job.ping", timeout=10)
def ping(*_args: object) -> str:
    """Answer ``pong``: for smoke tests, monitoring and the original module's cron heartbeat."""
    return "pong"
