"""Jobs for the bridge and payload fault tests (tests/integration/test_bridge_faults.py)."""

from __future__ import annotations

from typing import Any

from islandora_job import job


@job("t.deep")
def deep(depth: int) -> Any:
    """A return value nested ``depth`` lists deep: json cannot encode it past the recursion limit."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value
