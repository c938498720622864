"""islandora-job: a Gearman job runtime for Islandora, wire-compatible with the Drupal islandora_job module."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# The job author's API: ``@islandora_job.job("name")``, ``islandora_job.current_job()``, ``raise islandora_job.Fail``.
from islandora_job.worker.context import JobContext, current_job
from islandora_job.worker.registry import job
from islandora_job.worker.router import Fail

try:
    __version__ = version("islandora-job")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Fail", "JobContext", "__version__", "current_job", "job"]
