"""islandora-job: a Gearman job runtime for Islandora, wire-compatible with the Drupal islandora_job module."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("islandora-job")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
