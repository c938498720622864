"""What one ``benchmarks.run`` measured: plain data, shared by the measuring (run.py) and the rendering (report.py,
charts.py).

The raw samples stay here (every round's rate, every round trip), and the report takes the medians and percentiles.
So a change to the report can be checked against the same figures (``--save-figures``, then ``python -m
benchmarks.report FILE``), and tests/unit/test_benchmark_report.py renders fixed figures without measuring.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Contender:
    """One worker of the dispatch comparison, with its samples: jobs/s per round, seconds per round trip."""

    key: str
    label: str
    function: str
    processes: int
    per_job_process: bool = False  # a process per job: fewer jobs per round
    fg: list[float] = field(default_factory=list)
    bg: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # the worker's CPU seconds per job, per round (fg + bg jobs)


@dataclass
class QueueRow:
    """One gearmand queue type: median jobs/s of the rounds, or why it was not measured."""

    queue: str
    submit: float = 0.0
    complete: float = 0.0
    error: str | None = None


@dataclass
class PayloadRow:
    """One payload size: median jobs/s and peak RSS (MiB) of each worker, gearmand's RSS after the runs."""

    size: int
    jobs: int
    raw: float
    raw_rss_mb: float
    ij_raw: float
    ij_raw_rss_mb: float
    ij_json: float
    ij_json_rss_mb: float
    gearmand_rss_mb: float


@dataclass
class DeployRun:
    label: str
    seconds: float
    rc: int
    changed: int


@dataclass
class Figures:
    """A run's settings, its machine, and what each section measured (an empty or None section was not run)."""

    quick: bool
    rounds: int
    jobs: int
    cli_jobs: int
    queue_jobs: int
    cpus: int
    generated: str = ""  # "YYYY-MM-DD HH:MM UTC", set when the run ends
    seconds: float = 0.0
    machine: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    dispatch: list[Contender] = field(default_factory=list)
    queues: list[QueueRow] = field(default_factory=list)
    bridge: dict[str, list[float]] = field(default_factory=dict)
    payload: list[PayloadRow] = field(default_factory=list)
    deployment: list[DeployRun] | None = None
    notes: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Figures:
        data: dict[str, Any] = json.loads(path.read_text())
        deployment = data.pop("deployment")
        return cls(
            **{key: value for key, value in data.items() if key not in ("dispatch", "queues", "payload")},
            dispatch=[Contender(**item) for item in data["dispatch"]],
            queues=[QueueRow(**item) for item in data["queues"]],
            payload=[PayloadRow(**item) for item in data["payload"]],
            deployment=None if deployment is None else [DeployRun(**item) for item in deployment],
        )
