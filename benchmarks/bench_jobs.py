"""Jobs of the benchmarks, served by ``islandora-job worker`` (``jobs_modules = ["benchmarks.bench_jobs"]``)."""

from __future__ import annotations

from islandora_job import job


@job("nop")
def nop(*args: object) -> None:
    """The no-op job of the dispatch benchmarks: the runtime's own cost is all that is measured."""


@job("echo_raw", payload="raw")
def echo_raw(data: bytes) -> bytes:
    """Returns its payload as is: the payload size sweep (no JSON decoding of a 1 MB payload)."""
    return data


@job("echo")
def echo(text: str) -> str:
    """Returns its one argument: the payload size sweep through an islandora_job payload."""
    return text
