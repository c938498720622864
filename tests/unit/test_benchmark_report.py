"""The benchmark report renders fixed figures to the expected Markdown, without measuring anything.

The expected files (tests/unit/benchmark_report/) were written by the renderer before it became a template
(benchmarks/report.md.j2), from these same figures, so the generated section of docs/benchmarks.md reads the same
for the same figures. A change of wording changes the expected files in the same commit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from benchmarks.common import cpu_idle
from benchmarks.figures import Contender, DeployRun, Figures, PayloadRow, QueueRow
from benchmarks.report import BEGIN, END, load_goals, render, write_doc

EXPECTED = Path(__file__).parent / "benchmark_report"

MACHINE = {"cpu": "4 x Test CPU", "memory": "8 GiB", "kernel": "6.1.0", "python": "3.11.2", "load": "0.50 0.40 0.30",
           "idle": "haltpoll, guest_halt_poll_ns 0"}  # fmt: skip
VERSIONS = {
    "gearmand": "gearmand 1.1.20",
    "islandora-job": "0.1.0",
    "pygearman": "0.2.6",
    "redis": "Redis 7",
    "postgres": "postgres 15",
    "mariadb": "mariadbd 10.11",
}


def run_of(quick: bool) -> Figures:
    settings = (3, 2000, 200, 1000) if quick else (5, 10_000, 1000, 5000)
    rounds, jobs, cli_jobs, queue_jobs = settings
    return Figures(
        quick, rounds, jobs, cli_jobs, queue_jobs, cpus=4, generated="2026-11-27 11:51 UTC", seconds=211.4,
        machine=MACHINE, versions=VERSIONS,
    )  # fmt: skip


def full() -> Figures:
    fig = run_of(quick=False)
    fig.dispatch = [
        Contender(
            "raw1",
            "raw socket worker, 1 process (ceiling)",
            "raw1",
            1,
            fg=[10000, 11000, 12000],
            bg=[20000, 21000, 19000],
            latency=[0.0001 * i for i in range(1, 101)],
            cpu=[0.00004, 0.00005, 0.00006],
        ),
        Contender("raw2", "raw socket worker, 2 processes", "raw2", 2, fg=[15000, 16000, 17000], bg=[30000.5],
                  latency=[0.0002, 0.0003]),
        Contender("ij1", "islandora-job worker, 1 process", "ij1_nop", 1, fg=[7000, 7100, 6900], bg=[9000, 9100],
                  latency=[0.0004, 0.0005, 0.0009], cpu=[0.0001, 0.00012, 0.00011]),
        Contender("ijN", "islandora-job worker, 4 processes", "ijN_nop", 4, fg=[13000, 12500], bg=[18000],
                  latency=[0.0003]),
        Contender("ij1w", "islandora-job worker, 1 process, logging WARNING", "ij1w_nop", 1, fg=[7500], bg=[9500],
                  latency=[0.00041]),
        Contender("pyg", "pygearman GearmanWorker, 1 process", "pyg", 1, fg=[2000, 2100], bg=[2500],
                  latency=[0.0012, 0.0011]),
        Contender("cli", "gearman -w -- cat, 1 process (a process per job)", "cli", 1, per_job_process=True,
                  fg=[300, 310], bg=[290], latency=[0.004, 0.005]),
    ]  # fmt: skip
    fig.queues = [
        QueueRow("builtin", 50000.0, 9000.0),
        QueueRow("sqlite-wal", 30000.0, 8000.0),
        QueueRow("sqlite", 3000.0, 2500.0),
        QueueRow("sqlite-on-shutdown", 45000.0, 8800.0),
        QueueRow("redis", error="RuntimeError: redis-server missing"),
        QueueRow("postgres", 1200.4, 1100.6),
    ]
    fig.bridge = {"bridge_cat": [400.0, 420.0, 410.0], "cli_cat": [300.0, 310.0]}
    fig.payload = [
        PayloadRow(100, 5000, 9000.0, 10.5, 6000.0, 30.25, 5000.0, 31.0, 5.0),
        PayloadRow(10_000, 1000, 5000.0, 11.0, 4000.0, 32.0, 3000.0, 33.0, 6.0),
        PayloadRow(1_500_000, 30, 50.0, 20.0, 40.0, 60.0, 20.0, 90.0, 50.0),
    ]
    fig.deployment = [DeployRun("first run", 95.27, 0, 12), DeployRun("second run, nothing to change", 30.0, 0, 0)]
    fig.notes = ["pyg: 2 foreground job(s) failed", "deployment not timed in quick mode"]
    return fig


def partial() -> Figures:
    """A quick run of two sections: no builtin queue to compare with, a failed back-end, no deployment rows."""
    fig = run_of(quick=True)
    fig.queues = [QueueRow("redis", 40000.0, 8500.0), QueueRow("mysql", error="round 2: OSError: boom")]
    fig.deployment = []
    return fig


@pytest.mark.parametrize(("name", "figures"), [("full", full), ("quick", partial)])
def test_fixed_figures_render_to_the_expected_section(name: str, figures: object) -> None:
    assert callable(figures)
    assert render(figures()) + "\n" == (EXPECTED / f"{name}.md").read_text()


def test_the_goals_come_from_the_data_file() -> None:
    goals = load_goals()
    assert goals["dispatch"]["raw_share"] == 0.60
    changed = {**goals, "dispatch": {**goals["dispatch"], "raw_share": 0.75, "vs_pygearman": 3}}
    text = render(full(), changed)
    assert "(goal ≥ 75%)" in text and "(goal ≥ 3x)" in text
    assert "(goal ≥ 60%)" not in text


def test_a_missing_goal_is_an_error_naming_it() -> None:
    goals = load_goals()
    with pytest.raises(ValueError, match="wal_vs_journal_submit"):
        render(full(), {**goals, "queues": {}})


def test_saved_figures_render_the_same(tmp_path: Path) -> None:
    fig = full()
    fig.save(tmp_path / "figures.json")
    loaded = Figures.load(tmp_path / "figures.json")
    assert dataclasses.asdict(loaded) == dataclasses.asdict(fig)
    assert render(loaded) == render(fig)


def test_only_the_generated_section_is_replaced(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nprose before\n\n{BEGIN}\nold figures\n{END}\n\nprose after\n")
    write_doc(render(partial()), doc)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nprose before\n\n" + BEGIN)
    assert text.endswith(END + "\n\nprose after\n")
    assert "old figures" not in text and "redis | 40,000" in text


def test_a_baseline_worker_is_compared_round_by_round() -> None:
    fig = full()
    assert "--baseline" not in render(fig)
    fig.dispatch.append(
        Contender("ij1base", "islandora-job worker, 1 process, baseline abc123", "ij1base_nop", 1,
                  fg=[7000, 7100, 7200], bg=[9000, 9000], latency=[0.0004, 0.0004, 0.0008],
                  cpu=[0.0001, 0.0001, 0.0001])
    )  # fmt: skip
    text = render(fig)
    # ours 7000/7100/6900 against 7000/7100/7200: per-round ratios 1, 1, 0.958..., median 1.000
    assert "Against the islandora-job worker, 1 process, baseline abc123 (`--baseline`)" in text
    assert "median of the 3 per-round ratios: foreground x1.000, background x1.006, worker CPU per job x1.100" in text
    assert "round-trip p50 x1.250 (above 1: slower)" in text
    assert "processes, baseline" not in text  # no pool of several processes from the baseline: no line for it


def test_the_baselines_pool_of_several_processes_gets_its_own_line() -> None:
    fig = full()
    ours = next(c for c in fig.dispatch if c.key == "ijN")
    fig.dispatch.append(
        Contender("ijNbase", "islandora-job worker, 4 processes, baseline abc123", "ijNbase_nop", 4,
                  fg=[f / 2 for f in ours.fg], bg=list(ours.bg), latency=list(ours.latency), cpu=list(ours.cpu))
    )  # fmt: skip
    text = render(fig)
    assert "Against the islandora-job worker, 1 process, baseline" not in text
    assert "Against the islandora-job worker, 4 processes, baseline abc123 (`--baseline`)" in text
    assert "foreground x2.000, background x1.000" in text


def test_the_machine_line_says_how_an_idle_cpu_waits(tmp_path: Path) -> None:
    assert "CPU idle haltpoll, guest_halt_poll_ns 0, load" in render(full())
    old = full()
    old.machine = {key: value for key, value in old.machine.items() if key != "idle"}
    assert "CPU idle unknown, load" in render(old)  # figures saved before the fact was collected
    assert cpu_idle(tmp_path) == "unknown"
    (tmp_path / "devices/system/cpu/cpuidle").mkdir(parents=True)
    (tmp_path / "devices/system/cpu/cpuidle/current_driver").write_text("haltpoll\n")
    assert cpu_idle(tmp_path) == "haltpoll"
    (tmp_path / "module/haltpoll/parameters").mkdir(parents=True)
    (tmp_path / "module/haltpoll/parameters/guest_halt_poll_ns").write_text("0\n")
    assert cpu_idle(tmp_path) == "haltpoll, guest_halt_poll_ns 0"
