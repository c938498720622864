"""The soak: N background jobs through an islandora-job worker pool under chaos; nothing may be lost.

``python -m benchmarks.soak --jobs 100000`` (``make soak``; the short version, 5,000 jobs, runs in ``make test``).

What it does, all on 127.0.0.1:
* gearmand 1.1.20 with the sqlite queue (each background job stored at submission) and ``--job-retries`` set far
  above what the kill rate can reach (see :data:`JOB_RETRIES`), so no job may be dropped at the retry limit;
* an ``islandora-job worker`` pool (``concurrency`` processes, children recycled every ``max_jobs`` jobs);
* N background jobs, a mix of quick (no-op), slow (sleep 20-200 ms), failing (``raise Fail``) and hanging (sleep
  for ever; the 1 s time limit's watchdog answers them), submitted in batches by the project's ``JobClient``;
* a chaos loop: SIGKILL of a random worker process every ``kill_every`` seconds (jittered), SIGHUP (reload) every
  ``hup_every`` seconds, and one restart of gearmand (SIGTERM, start again on the same port and sqlite file) when
  half the jobs are submitted; submission pauses during the restart so the client's behaviour is not measured.

Every run of a job appends a completion record (see ``benchmarks/soak_jobs.py``). At the end: submitted,
completed, failed as designed, lost (submitted, no record: must be 0), dropped at the retry limit (gearmand's
log: must be 0), duplicates (extra runs; at-least-once delivery bounds them by kills + concurrency x gearmand
restarts), peak RSS, RSS of the worker processes early and late (flat across recycling), drain time.
Exit status 1 on any loss or drop, or when the bound on duplicates is exceeded.

Then the frozen-server phase (:func:`run_frozen_phase`; ``--frozen-only`` runs it alone, ``--frozen-seconds 0``
skips it): two gearmands, a pool on both, background jobs queued on both, and one gearmand frozen with SIGSTOP for
30 s while jobs keep arriving on the other and a foreground job goes through it every 0.25 s. Nothing may be lost,
the healthy server must keep being served (every foreground job answered; their round trips are reported), and
after SIGCONT the frozen server's jobs must all run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import (
    Processes,
    RssSampler,
    bench_env,
    descendants,
    start_pool,
    status_counts,
    wait_workers,
    worker_config,
)
from islandora_job.client import JobClient, JobRequest
from tests.support.gearmand import Gearmand

FUNCTIONS = ("soak.quick", "soak.slow", "soak.fail", "soak.hang")
#: gearmand drops a job handed out this many times to workers that died holding it. One SIGKILL requeues at most
#: one job; the chaos loop kills one process every few seconds among ``concurrency`` processes, and a job holds a
#: process for at most 1 s (the hanging ones), so a job is killed twice with a probability of a few percent and 25
#: times never: any drop is a bug.
JOB_RETRIES = 25
DROP_MESSAGE = "Dropped job due to max retry count"


@dataclass
class SoakResult:
    jobs: int
    concurrency: int
    submitted: int = 0
    not_submitted: int = 0
    completed: int = 0
    failed_as_designed: int = 0
    lost: int = 0
    lost_ids: list[int] = field(default_factory=list)
    dropped_at_retry_limit: int = 0
    duplicates: int = 0
    duplicate_bound: int = 0
    kills: int = 0
    hups: int = 0
    gearmand_restarts: int = 0
    job_retries: int = JOB_RETRIES
    kinds: dict[str, int] = field(default_factory=dict)
    submit_seconds: float = 0.0
    drain_seconds: float = 0.0
    total_seconds: float = 0.0
    drained: bool = False
    peak_rss_process_mb: float = 0.0
    peak_rss_pool_mb: float = 0.0
    worker_rss_early_mb: float = 0.0
    worker_rss_late_mb: float = 0.0
    worker_exits: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.drained
            and self.lost == 0
            and self.dropped_at_retry_limit == 0
            and self.not_submitted == 0
            and self.duplicates <= self.duplicate_bound
        )

    def table(self) -> str:
        rows = [
            (
                "jobs submitted",
                f"{self.submitted:,}" + (f" ({self.not_submitted} refused)" if self.not_submitted else ""),
            ),
            (
                "mix (quick/slow/fail/hang)",
                "/".join(str(self.kinds.get(k, 0)) for k in ("quick", "slow", "fail", "hang")),
            ),
            ("completed", f"{self.completed:,}"),
            ("failed as designed (fail + hang)", f"{self.failed_as_designed:,}"),
            ("lost", f"{self.lost}"),
            ("dropped at gearmand's retry limit", f"{self.dropped_at_retry_limit} (--job-retries={self.job_retries})"),
            ("duplicates (extra runs)", f"{self.duplicates} (bound {self.duplicate_bound})"),
            ("chaos", f"{self.kills} SIGKILL, {self.hups} SIGHUP, {self.gearmand_restarts} gearmand restart"),
            ("worker process exits", ", ".join(f"{k}: {v}" for k, v in sorted(self.worker_exits.items())) or "-"),
            ("submission time", f"{self.submit_seconds:.1f} s"),
            ("drain time after the last submission", f"{self.drain_seconds:.1f} s"),
            ("total time", f"{self.total_seconds:.1f} s"),
            (
                "peak RSS of one process / of the pool",
                f"{self.peak_rss_process_mb:.1f} / {self.peak_rss_pool_mb:.1f} MiB",
            ),
            (
                "largest worker RSS, first / last quarter (median)",
                f"{self.worker_rss_early_mb:.1f} / {self.worker_rss_late_mb:.1f} MiB",
            ),
        ]
        return "\n".join(["| measure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def plan(jobs: int, seed: int) -> list[JobRequest]:
    """The jobs, in submission order: ~92% quick, 5% slow, 3% failing, 1 in 700 hanging.

    Each has its own unique key: gearmand 1.1.20's sqlite queue keys its rows by (unique key, function) and
    replaces on conflict, so background jobs submitted with an empty unique key share one row per function and
    all but the last are lost at a restart (libgearman, hence PHP, generates a UUID for every background job).
    """
    rng = random.Random(seed)
    hang_every = 700
    requests = []
    for job_id in range(jobs):
        roll = rng.random()
        if job_id % hang_every == hang_every // 2:
            requests.append(JobRequest("soak.hang", (job_id,), unique=f"soak-{job_id}"))
        elif roll < 0.05:
            requests.append(
                JobRequest("soak.slow", (job_id, round(rng.uniform(0.02, 0.2), 3)), unique=f"soak-{job_id}")
            )
        elif roll < 0.08:
            requests.append(JobRequest("soak.fail", (job_id,), unique=f"soak-{job_id}"))
        else:
            requests.append(JobRequest("soak.quick", (job_id,), unique=f"soak-{job_id}"))
    return requests


def read_records(path: Path) -> collections.Counter[int]:
    runs: collections.Counter[int] = collections.Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                runs[int(parts[0])] += 1
    return runs


class Chaos(threading.Thread):
    """SIGKILLs a random worker process, sends SIGHUP to the supervisor, and restarts gearmand once (on request)."""

    def __init__(
        self,
        pool_pid: int,
        gearmand: Gearmand,
        gate: threading.Lock,
        *,
        kill_every: float,
        hup_every: float,
        seed: int,
    ) -> None:
        super().__init__(name="chaos", daemon=True)
        self.pool_pid, self.gearmand, self.gate = pool_pid, gearmand, gate
        self.kill_every, self.hup_every = kill_every, hup_every
        self.rng = random.Random(seed)
        self.kills = self.hups = self.restarts = 0
        self.restart_requested = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _run(self) -> None:
        now = time.monotonic()
        next_kill = now + self.rng.uniform(0.5, 1.5) * self.kill_every
        next_hup = now + self.hup_every
        while not self.stopping.wait(0.05):
            now = time.monotonic()
            if self.restart_requested.is_set() and not self.restarts:
                with self.gate:  # no submission while gearmand is down
                    self.gearmand.restart()
                self.restarts += 1
            if now >= next_kill:
                next_kill = now + self.rng.uniform(0.5, 1.5) * self.kill_every
                children = [p for p in _direct_children(self.pool_pid) if _is_worker(p)]
                if children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.rng.choice(children), signal.SIGKILL)
                        self.kills += 1
            if now >= next_hup:
                next_hup = now + self.hup_every
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pool_pid, signal.SIGHUP)
                    self.hups += 1


def _direct_children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _is_worker(pid: int) -> bool:
    """A worker process (``python -m islandora_job.worker.child``), not the ``--check`` of a reload."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"islandora_job.worker.child" in argv and b"--check" not in argv


def _worker_exits(log_text: str) -> dict[str, int]:
    exits: collections.Counter[str] = collections.Counter()
    for line in log_text.splitlines():
        if "islandora_job.worker.pool" not in line:
            continue
        if " died (" in line:
            exits[line.split(" died (", 1)[1].split(")", 1)[0]] += 1
        elif " exited (" in line:
            exits[line.split(" exited (", 1)[1].split(")", 1)[0]] += 1
    return dict(exits)


def run_soak(
    jobs: int,
    workdir: Path,
    *,
    concurrency: int = 4,
    max_jobs: int = 500,
    kill_every: float = 2.0,
    hup_every: float = 15.0,
    batch: int = 250,
    seed: int = 6,
    drain_timeout: float = 900.0,
    progress: bool = False,
) -> SoakResult:
    result = SoakResult(jobs=jobs, concurrency=concurrency)
    records = workdir / "records.txt"
    requests = plan(jobs, seed)
    result.kinds = dict(collections.Counter(r.name.split(".", 1)[1] for r in requests))
    gearmand = Gearmand(
        workdir,
        verbose="NOTICE",  # logs 'Dropped job due to max retry count'
        extra_args=["-q", "libsqlite3", f"--libsqlite3-db={workdir / 'queue.sqlite3'}", f"--job-retries={JOB_RETRIES}"],
    )
    pool_settings = dict(
        concurrency=concurrency,
        modules=("benchmarks.soak_jobs",),
        pool=(
            f"max_jobs = {max_jobs}\nidle_grab_interval = 2\nshutdown_timeout = 10\nrestart_backoff_max = 2\n"
            "default_timeout = 60\n"
        ),
        dead_letters=str(workdir / "dead-letters.sqlite3"),
    )
    gate = threading.Lock()
    started = time.monotonic()
    with Processes() as procs:
        try:
            gearmand.start()
            config = worker_config(workdir / "worker.toml", [gearmand.address], **pool_settings)  # type: ignore[arg-type]
            pool = start_pool(procs, config, workdir / "worker.log", env=bench_env(SOAK_RECORDS=str(records)))
            for function in FUNCTIONS:
                wait_workers(gearmand.port, function, concurrency)
            sampler = RssSampler(pool.pid, interval=0.25)
            sampler.start()
            chaos = Chaos(pool.pid, gearmand, gate, kill_every=kill_every, hup_every=hup_every, seed=seed)
            chaos.start()
            try:
                submit_started = time.monotonic()
                _submit(requests, gearmand, gate, chaos, batch, result, progress)
                result.submit_seconds = time.monotonic() - submit_started
                submitted_at = time.monotonic()
                deadline = submitted_at + drain_timeout
                while time.monotonic() < deadline:
                    if chaos.error is not None:
                        raise chaos.error
                    runs = read_records(records)
                    queued = sum(v[0] for k, v in status_counts(gearmand.port).items() if k in FUNCTIONS)
                    if progress:
                        print(f"  drain: {len(runs):,}/{jobs:,} recorded, {queued} in gearmand", file=sys.stderr)
                    if queued == 0 and all(runs[i] for i in range(jobs)):
                        result.drained = True
                        break
                    time.sleep(0.5 if not progress else 2.0)
                result.drain_seconds = time.monotonic() - submitted_at
            finally:
                chaos.stopping.set()
                chaos.join(30)
                sampler.stop()
            result.kills, result.hups, result.gearmand_restarts = chaos.kills, chaos.hups, chaos.restarts
            procs.stop(pool, signal.SIGTERM, timeout=20)
        finally:
            procs.stop_all()
            gearmand.stop()
            for pid in descendants(os.getpid()):  # nothing of ours may outlive the soak
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    result.total_seconds = time.monotonic() - started
    runs = read_records(records)
    kind_of = {i: r.name.split(".", 1)[1] for i, r in enumerate(requests)}
    submitted_ids = range(jobs)
    result.lost_ids = [i for i in submitted_ids if not runs[i]][:50]
    result.lost = sum(1 for i in submitted_ids if not runs[i])
    result.completed = sum(1 for i in submitted_ids if runs[i] and kind_of[i] in ("quick", "slow"))
    result.failed_as_designed = sum(1 for i in submitted_ids if runs[i] and kind_of[i] in ("fail", "hang"))
    result.duplicates = sum(n - 1 for n in runs.values() if n > 1)
    result.duplicate_bound = result.kills + concurrency * result.gearmand_restarts
    logs = "".join(p.read_text(errors="replace") for p in workdir.glob("gearmand-*.log"))
    result.dropped_at_retry_limit = logs.count(DROP_MESSAGE)
    result.worker_exits = _worker_exits((workdir / "worker.log").read_text(errors="replace"))
    result.peak_rss_process_mb = sampler.peak_process_kb / 1024
    result.peak_rss_pool_mb = sampler.peak_total_kb / 1024
    largest = [s[1] for s in sampler.samples if s[1]]
    if largest:
        quarter = max(1, len(largest) // 4)
        result.worker_rss_early_mb = statistics.median(largest[:quarter]) / 1024
        result.worker_rss_late_mb = statistics.median(largest[-quarter:]) / 1024
    return result


def _submit(
    requests: list[JobRequest],
    gearmand: Gearmand,
    gate: threading.Lock,
    chaos: Chaos,
    batch: int,
    result: SoakResult,
    progress: bool,
) -> None:
    client = JobClient([gearmand.address])
    restarts_seen = 0
    try:
        for start in range(0, len(requests), batch):
            if start >= len(requests) // 2:
                chaos.restart_requested.set()
            with gate:
                if chaos.restarts != restarts_seen:  # gearmand was restarted: a fresh connection
                    restarts_seen = chaos.restarts
                    client.close()
                    client = JobClient([gearmand.address])
                chunk = requests[start : start + batch]
                answers = client.submit_batch(chunk, background=True)
            for answer in answers:
                if answer.ok:
                    result.submitted += 1
                else:
                    result.not_submitted += 1
            if progress and start % (batch * 40) == 0:
                print(f"  submitted {result.submitted:,}", file=sys.stderr)
            if start >= len(requests) // 2 and not chaos.restarts:
                # let the restart happen now, while jobs are queued and in flight
                deadline = time.monotonic() + 30
                while not chaos.restarts and time.monotonic() < deadline and chaos.error is None:
                    time.sleep(0.05)
    finally:
        client.close()


@dataclass
class FrozenResult:
    freeze_seconds: float
    concurrency: int
    queued_before: int = 0
    submitted_during: int = 0
    served_during: int = 0
    pings: int = 0
    pings_failed: int = 0
    ping_p50_ms: float = 0.0
    ping_max_ms: float = 0.0
    lost: int = 0
    duplicates: int = 0
    drained: bool = False
    drain_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.drained and self.lost == 0 and self.pings_failed == 0 and self.served_during > 0

    def table(self) -> str:
        rows = [
            ("frozen (SIGSTOP) for", f"{self.freeze_seconds:.0f} s, one of two gearmands"),
            ("background jobs queued before the freeze (both servers)", f"{self.queued_before:,}"),
            ("background jobs submitted to the healthy server during it", f"{self.submitted_during:,}"),
            ("foreground jobs (high priority) through it meanwhile", f"{self.pings} ({self.pings_failed} failed)"),
            ("jobs of the healthy server run during the freeze", f"{self.served_during:,}"),
            ("foreground round trip, p50 / max", f"{self.ping_p50_ms:.1f} / {self.ping_max_ms:.0f} ms"),
            ("lost", f"{self.lost}"),
            ("duplicates (extra runs)", f"{self.duplicates}"),
            ("drain time after SIGCONT", f"{self.drain_seconds:.1f} s"),
        ]
        return "\n".join(["| measure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def run_frozen_phase(
    workdir: Path, *, freeze_seconds: float = 30.0, concurrency: int = 4, queued: int = 2000, progress: bool = False
) -> FrozenResult:
    """One of two gearmands frozen for ``freeze_seconds``: the other keeps being served, nothing is lost."""
    result = FrozenResult(freeze_seconds=freeze_seconds, concurrency=concurrency)
    records = workdir / "frozen-records.txt"
    frozen, healthy = Gearmand(workdir), Gearmand(workdir)
    next_id = 0
    latencies: list[float] = []

    def requests(count: int) -> list[JobRequest]:
        nonlocal next_id
        batch = []
        for job_id in range(next_id, next_id + count):
            if job_id % 10 == 0:  # some jobs in flight at any moment
                batch.append(JobRequest("soak.slow", (job_id, 0.05), unique=f"frozen-{job_id}"))
            else:
                batch.append(JobRequest("soak.quick", (job_id,), unique=f"frozen-{job_id}"))
        next_id += count
        return batch

    with Processes() as procs:
        try:
            frozen.start()
            healthy.start()
            config = worker_config(
                workdir / "frozen-worker.toml",
                [frozen.address, healthy.address],
                concurrency=concurrency,
                modules=("benchmarks.soak_jobs",),
                pool="max_jobs = 0\nidle_grab_interval = 2\nshutdown_timeout = 10\n",
            )
            pool = start_pool(procs, config, workdir / "frozen-worker.log", env=bench_env(SOAK_RECORDS=str(records)))
            for server in (frozen, healthy):
                wait_workers(server.port, "soak.quick", concurrency)
            for server in (frozen, healthy):
                with JobClient([server.address]) as client:
                    answers = client.submit_batch(requests(queued // 2), background=True)
                result.queued_before += sum(1 for answer in answers if answer.ok)
            assert frozen.process is not None
            os.kill(frozen.process.pid, signal.SIGSTOP)
            first_during = next_id
            try:
                latencies = _serve_through(healthy, freeze_seconds, requests, result)
                served = read_records(records)
                result.served_during = sum(1 for i in range(first_during, next_id) if served[i])
            finally:
                os.kill(frozen.process.pid, signal.SIGCONT)
            thawed = time.monotonic()
            while time.monotonic() < thawed + 300:
                runs = read_records(records)
                counts = [status_counts(server.port) for server in (frozen, healthy)]
                queued_now = sum(v[0] for count in counts for k, v in count.items() if k in FUNCTIONS)
                if progress:
                    print(f"  frozen phase drain: {len(runs):,}/{next_id:,} recorded", file=sys.stderr)
                if queued_now == 0 and all(runs[i] for i in range(next_id)):
                    result.drained = True
                    break
                time.sleep(0.5)
            result.drain_seconds = time.monotonic() - thawed
            procs.stop(pool, signal.SIGTERM, timeout=20)
        finally:
            procs.stop_all()
            for server in (frozen, healthy):
                if server.process is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(server.process.pid, signal.SIGCONT)
                server.stop()
    runs = read_records(records)
    result.lost = sum(1 for i in range(next_id) if not runs[i])
    result.duplicates = sum(n - 1 for n in runs.values() if n > 1)
    if latencies:
        result.ping_p50_ms = statistics.median(latencies) * 1000
        result.ping_max_ms = max(latencies) * 1000
    return result


def _serve_through(
    healthy: Gearmand, seconds: float, requests: Callable[[int], list[JobRequest]], result: FrozenResult
) -> list[float]:
    """Background batches and foreground jobs through the healthy server for ``seconds``; the round trips."""
    latencies: list[float] = []
    end = time.monotonic() + seconds
    next_batch = 0.0
    with JobClient([healthy.address]) as client:
        while time.monotonic() < end:
            if time.monotonic() >= next_batch:
                next_batch = time.monotonic() + 1.0
                answers = client.submit_batch(requests(50), background=True)
                result.submitted_during += sum(1 for answer in answers if answer.ok)
            request = requests(1)[0]
            started = time.monotonic()
            try:
                # high priority: the round trip measures the workers' availability, not the queue ahead of it
                client.submit(request.name, *request.args, unique=request.unique, priority="high", timeout=10)
                latencies.append(time.monotonic() - started)
            except Exception as exc:  # counted and reported, never raised: the phase reports what happened
                result.pings_failed += 1
                result.errors.append(f"{type(exc).__name__}: {exc}")
            result.pings += 1
            time.sleep(0.25)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-jobs", type=int, default=2000, help="recycle a worker process after this many jobs")
    parser.add_argument("--kill-every", type=float, default=3.0, help="mean seconds between SIGKILLs")
    parser.add_argument("--hup-every", type=float, default=30.0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs and records here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--frozen-seconds", type=float, default=30.0, help="the frozen-server phase (0: skip it)")
    parser.add_argument("--frozen-only", action="store_true", help="run only the frozen-server phase")
    options = parser.parse_args()
    if options.frozen_only:
        with tempfile.TemporaryDirectory(prefix="soak-frozen-") as tmp:
            frozen = run_frozen_phase(Path(tmp), freeze_seconds=options.frozen_seconds, progress=True)
        print(json.dumps({**asdict(frozen), "ok": frozen.ok}, indent=2) if options.json else frozen.table())
        print("OK" if frozen.ok else "FAILED")
        return 0 if frozen.ok else 1
    with contextlib.ExitStack() as stack:
        workdir = options.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        workdir.mkdir(parents=True, exist_ok=True)
        result = run_soak(
            options.jobs,
            workdir,
            concurrency=options.concurrency,
            max_jobs=options.max_jobs,
            kill_every=options.kill_every,
            hup_every=options.hup_every,
            drain_timeout=max(900.0, options.jobs / 20),
            progress=True,
        )
    if options.json:
        print(json.dumps({**asdict(result), "ok": result.ok}, indent=2))
    else:
        print(result.table())
        print("OK" if result.ok else "FAILED: " + json.dumps({"lost_ids": result.lost_ids, "drained": result.drained}))
    if options.frozen_seconds <= 0:
        return 0 if result.ok else 1
    with contextlib.ExitStack() as stack:
        workdir = options.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-frozen-")))
        frozen = run_frozen_phase(workdir, freeze_seconds=options.frozen_seconds, progress=True)
    print(json.dumps({**asdict(frozen), "ok": frozen.ok}, indent=2) if options.json else frozen.table())
    print("OK" if frozen.ok else "FAILED: frozen-server phase")
    return 0 if result.ok and frozen.ok else 1


if __name__ == "__main__":
    sys.exit(main())
