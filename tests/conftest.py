from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gearmand import Gearmand, running_gearmand


@pytest.fixture
def gearmand(tmp_path: Path) -> Iterator[Gearmand]:
    """A fresh gearmand (builtin queue) on a free loopback port, stopped after the test."""
    with running_gearmand(tmp_path) as server:
        yield server
