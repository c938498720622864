"""The benchmark scripts are not run by make test (they measure, and take minutes), but they must keep importing:
a rename elsewhere in the project once broke one silently."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

SCRIPTS = sorted(p.stem for p in (Path(__file__).parents[2] / "benchmarks").glob("*.py") if p.stem != "__init__")


def test_every_benchmark_script_is_listed() -> None:
    assert {"run", "soak", "client_bench", "idle_pool", "profile_worker", "raw_worker"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_script_imports(name: str) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(getattr(module, "main", None)) or name in {
        "common",
        "bench_jobs",
        "soak_jobs",
        "figures",
        "charts",
    }, name
