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


def test_a_process_trees_cpu_counts_live_and_reaped_descendants() -> None:
    """The dispatch benchmark's CPU per job: a child that burned CPU and was reaped counts through its parent's
    ``cutime``, a live grandchild through its own entry, and nothing twice."""
    import subprocess
    import sys
    import time

    from benchmarks.common import tree_cpu_seconds

    burn = f"{sys.executable} -c 'import time; end = time.process_time() + 0.3\nwhile time.process_time() < end: pass'"
    root = subprocess.Popen(["sh", "-c", f"{burn}; {burn} & sleep 30"])
    try:
        deadline = time.monotonic() + 20
        while tree_cpu_seconds([root.pid]) < 0.55 and time.monotonic() < deadline:
            time.sleep(0.05)
        counted = tree_cpu_seconds([root.pid])
        assert 0.55 <= counted < 1.0  # two burners of 0.3 s each (clock ticks of 10 ms), not three
    finally:
        root.kill()
        root.wait()
