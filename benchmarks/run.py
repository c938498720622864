"""The benchmarks of issue 6, in one invocation: ``python -m benchmarks.run [--quick]`` (``make bench``).

Against gearmand 1.1.20 on 127.0.0.1 it measures, contenders interleaved round by round in one process tree
(every worker started once and idle between its turns), medians over the rounds, and ratios to the raw ceiling:

* dispatch throughput of no-op jobs, foreground (200 in flight) and background (queued in one burst, timed until
  gearmand's queue is empty): the raw-socket worker (1 and 2 processes: the ceiling), ``islandora-job worker``
  (1 and N processes, plus 1 process logging at WARNING), pygearman's ``GearmanWorker``, ``gearman -w -- cat``;
* foreground round-trip latency, one job at a time: p50/p95/p99;
* background submission rate and submission-to-completion throughput per queue type (builtin, sqlite, MySQL
  (MariaDB), Postgres, redis), each back-end started for the run in a temporary directory on a free port;
* the command bridge (``[[command_jobs]]`` running ``cat``) against ``gearman -w -- cat``;
* a payload size sweep (100 B to 1 MB): throughput and peak RSS of the worker process.

A full run writes the generated section of ``docs/benchmarks.md`` (between the ``run.py`` markers) and the charts
in ``docs/img/`` (``--no-write``: print only). ``--quick`` (3 rounds, fewer jobs, 3 payload sizes) takes under a
minute here and only prints, so that everyday runs do not replace the committed figures (``--write`` to write).
Nothing is asserted: figures only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pwd
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    NOP_PAYLOAD,
    PYGEARMAN_WORKER,
    PYTHON,
    RAW_WORKER,
    LoadClient,
    Processes,
    RssSampler,
    bench_env,
    machine,
    start_pool,
    wait_drained,
    wait_workers,
    worker_config,
)
from tests.support.gearmand import Gearmand, free_port

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
IMG = REPO / "docs" / "img"
BEGIN, END = "<!-- BEGIN benchmarks/run.py: generated, do not edit by hand -->", "<!-- END benchmarks/run.py -->"
CPUS = os.cpu_count() or 2
WAL_TOOL = REPO / "roles" / "gearman_server" / "files" / "gearman-server-sqlite-wal"
QUEUES = ["builtin", "sqlite-wal", "sqlite", "sqlite-on-shutdown", "redis", "postgres", "mysql"]
QUEUE_LABELS = {
    "sqlite-wal": "sqlite, WAL mode (the role's default)",
    "sqlite": "sqlite, rollback journal (before issue 15)",
    "sqlite-on-shutdown": "sqlite, --store-queue-on-shutdown (opt-in: kill -9 loses the queue)",
}


@dataclass
class Settings:
    quick: bool
    rounds: int
    jobs: int  # dispatch jobs per round and mode
    cli_jobs: int  # for the process-per-job contenders
    latency_jobs: int  # per contender and round
    queue_jobs: int
    queues: list[str]
    sizes: list[int]


def settings(quick: bool, queues: list[str] | None) -> Settings:
    if quick:
        return Settings(
            True,
            3,
            2000,
            200,
            300,
            1000,
            queues or QUEUES,
            [100, 10_000, 1_000_000],
        )
    return Settings(
        False,
        5,
        10_000,
        1000,
        1000,
        5000,
        queues or QUEUES,
        [100, 1000, 10_000, 100_000, 1_000_000],
    )


# --- contenders ----------------------------------------------------------------------------------------------------


@dataclass
class Contender:
    key: str
    label: str
    function: str
    processes: int
    per_job_process: bool = False  # a process per job: fewer jobs per round
    fg: list[float] = field(default_factory=list)
    bg: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)


class Bench:
    def __init__(self, options: Settings, workdir: Path) -> None:
        self.s = options
        self.workdir = workdir
        self.procs = Processes()
        self.results: dict[str, object] = {}
        self.notes: list[str] = []

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    # -- worker starters --

    def raw(self, server: Gearmand, function: str, count: int = 1) -> list[subprocess.Popen[bytes]]:
        return [self.procs.start([PYTHON, RAW_WORKER, server.address, function]) for _ in range(count)]

    def pool(
        self,
        server: Gearmand,
        name: str,
        concurrency: int,
        *,
        level: str = "INFO",
        prefix: str = "",
        tail: str = "",
    ) -> subprocess.Popen[bytes]:
        top = f'multisite_prefixes = ["{prefix}"]' if prefix else ""
        config = worker_config(
            self.workdir / f"{name}.toml", [server.address], concurrency=concurrency, level=level, top=top, tail=tail
        )
        return start_pool(self.procs, config, self.workdir / f"{name}.log")

    def cli(self, server: Gearmand, function: str, *command: str) -> subprocess.Popen[bytes]:
        gearman = shutil.which("gearman") or "/usr/bin/gearman"
        return self.procs.start(
            [gearman, "-h", "127.0.0.1", "-p", str(server.port), "-w", "-f", function, "--", *command]
        )

    # -- sections --

    def dispatch_and_latency(self) -> None:
        with self._gearmand("dispatch") as server:
            contenders = [
                Contender("raw1", "raw socket worker, 1 process (ceiling)", "raw1", 1),
                Contender("raw2", "raw socket worker, 2 processes", "raw2", 2),
                Contender("ij1", "islandora-job worker, 1 process", "ij1_nop", 1),
                Contender("ijN", f"islandora-job worker, {CPUS} processes", "ijN_nop", CPUS),
                Contender("ij1w", "islandora-job worker, 1 process, logging WARNING", "ij1w_nop", 1),
                Contender("pyg", "pygearman GearmanWorker, 1 process", "pyg", 1),
                Contender("cli", "gearman -w -- cat, 1 process (a process per job)", "cli", 1, per_job_process=True),
            ]
            self.raw(server, "raw1", 1)
            self.raw(server, "raw2", 2)
            self.pool(server, "ij1", 1, prefix="ij1")
            self.pool(server, "ijN", CPUS, prefix="ijN")
            self.pool(server, "ij1w", 1, prefix="ij1w", level="WARNING")
            self.procs.start([PYTHON, PYGEARMAN_WORKER, server.address, "pyg"], env=bench_env())
            self.cli(server, "cli", "cat")
            for c in contenders:
                wait_workers(server.port, c.function, c.processes)
            client = LoadClient(server.port)
            try:
                for c in contenders:  # warm-up: imports, connections, caches
                    client.foreground(c.function.encode(), NOP_PAYLOAD, 20 if c.per_job_process else 300)
                for round_no in range(self.s.rounds):
                    order = contenders[round_no % len(contenders) :] + contenders[: round_no % len(contenders)]
                    for c in order:
                        jobs = self.s.cli_jobs if c.per_job_process else self.s.jobs
                        seconds, failed = client.foreground(c.function.encode(), NOP_PAYLOAD, jobs)
                        if failed:
                            self.notes.append(f"{c.label}: {failed} foreground job(s) failed")
                        c.fg.append(jobs / seconds)
                        started = time.monotonic()
                        client.background(c.function.encode(), NOP_PAYLOAD, jobs)
                        c.bg.append(jobs / (wait_drained(server.port, c.function) - started))
                        lat_jobs = max(20, self.s.latency_jobs // (10 if c.per_job_process else 1))
                        c.latency += client.round_trips(c.function.encode(), NOP_PAYLOAD, lat_jobs)
                    self.log(f"dispatch round {round_no + 1}/{self.s.rounds} done")
            finally:
                client.close()
                self.procs.stop_all()
            self.results["dispatch"] = contenders

    def bridge(self) -> None:
        with self._gearmand("bridge") as server:
            tail = '[[command_jobs]]\nname = "bridge_cat"\nargv = ["cat"]\ntimeout = 30\n'
            self.pool(server, "bridge", 1, tail=tail)
            self.cli(server, "cli_cat", "cat")
            wait_workers(server.port, "bridge_cat", 1)
            wait_workers(server.port, "cli_cat", 1)
            rates: dict[str, list[float]] = {"bridge_cat": [], "cli_cat": []}
            client = LoadClient(server.port)
            try:
                for function in rates:
                    client.foreground(function.encode(), NOP_PAYLOAD, 20)
                for round_no in range(self.s.rounds):
                    for function in rates if round_no % 2 == 0 else list(rates)[::-1]:
                        seconds, failed = client.foreground(function.encode(), NOP_PAYLOAD, self.s.cli_jobs, window=50)
                        if failed:
                            self.notes.append(f"{function}: {failed} job(s) failed")
                        rates[function].append(self.s.cli_jobs / seconds)
            finally:
                client.close()
                self.procs.stop_all()
            self.results["bridge"] = rates
            self.log("bridge done")

    def payload_sweep(self) -> None:
        rows = []
        with self._gearmand("payload") as server:
            raw = self.raw(server, "sweep_raw", 1)[0]
            pool = self.pool(server, "sweep", 1, prefix="sw")
            wait_workers(server.port, "sweep_raw", 1)
            wait_workers(server.port, "sw_echo_raw", 1)
            client = LoadClient(server.port)
            try:
                for size in self.s.sizes:
                    data = b"x" * size
                    payload = (
                        json.dumps({"func": "echo", "args": ["x" * (size - 40)]}).encode()
                        if size > 100
                        else NOP_PAYLOAD
                    )
                    jobs = max(30, min(self.s.jobs // 2, (30 if self.s.quick else 100) * 1_000_000 // size // 10))
                    window = max(2, min(200, 16_000_000 // size))
                    row: dict[str, object] = {"size": size, "jobs": jobs}
                    for key, function, body, root in (
                        ("raw", "sweep_raw", data, raw.pid),
                        ("ij_raw", "sw_echo_raw", data, pool.pid),
                        ("ij_json", "sw_echo", payload, pool.pid),
                    ):
                        sampler = RssSampler(root, interval=0.02)
                        sampler.start()
                        rates = []
                        for _ in range(max(1, self.s.rounds - 1)):
                            seconds, failed = client.foreground(function.encode(), body, jobs, window=window)
                            if failed:
                                self.notes.append(f"payload {size} B {key}: {failed} job(s) failed")
                            rates.append(jobs / seconds)
                        sampler.stop()
                        row[key] = statistics.median(rates)
                        row[key + "_rss_mb"] = (
                            max((s[1] for s in sampler.samples), default=0) or sampler.peak_process_kb
                        ) / 1024
                    row["gearmand_rss_mb"] = _rss_mb(server.process.pid if server.process else 0)
                    rows.append(row)
                    self.log(f"payload {size} B done")
            finally:
                client.close()
                self.procs.stop_all()
        self.results["payload"] = rows

    def queue_types(self) -> None:
        """Every queue type's gearmand (and back-end) started first, then measured round by round in rotating order,
        so that the rows of one run share the machine's state (the sqlite rows above all: WAL against the rollback
        journal is the comparison of issue 15)."""
        rows: dict[str, dict[str, object]] = {}
        live: list[tuple[str, Gearmand, LoadClient]] = []
        with contextlib.ExitStack() as stack:
            try:
                for queue in self.s.queues:
                    try:
                        args = stack.enter_context(self._backend(queue))
                        server = stack.enter_context(self._gearmand(f"queue-{queue}", args))
                        self.pool(server, f"q-{queue}", CPUS)
                        wait_workers(server.port, "nop", CPUS)
                        client = LoadClient(server.port)
                        stack.callback(client.close)
                        live.append((queue, server, client))
                        rows[queue] = {"queue": queue, "submit": [], "complete": []}
                    except Exception as exc:  # a back-end that cannot start is reported, not fatal
                        rows[queue] = {"queue": queue, "error": f"{type(exc).__name__}: {exc}"}
                        self.log(f"queue {queue}: {exc}")
                for round_no in range(max(1, self.s.rounds - 1)):
                    shift = round_no % max(1, len(live))
                    for queue, server, client in live[shift:] + live[:shift]:
                        n = self.s.queue_jobs
                        tag = b"r%d" % round_no
                        row = rows[queue]
                        if "error" in row:
                            continue
                        try:
                            row["submit"].append(n / client.background(b"nobody", NOP_PAYLOAD, n, unique=tag))  # type: ignore[attr-defined]
                            started = time.monotonic()
                            client.background(b"nop", NOP_PAYLOAD, n, unique=tag)
                            row["complete"].append(n / (wait_drained(server.port, "nop") - started))  # type: ignore[attr-defined]
                        except Exception as exc:  # reported in its row; the other queue types go on
                            row["error"] = f"round {round_no + 1}: {type(exc).__name__}: {exc}"
                            self.log(f"queue {queue}: {row['error']}")
                    self.log(f"queue round {round_no + 1}/{max(1, self.s.rounds - 1)} done")
            finally:
                self.procs.stop_all()
        for row in rows.values():
            if "error" not in row:
                row["submit"] = statistics.median(row["submit"])  # type: ignore[arg-type]
                row["complete"] = statistics.median(row["complete"])  # type: ignore[arg-type]
        self.results["queues"] = [rows[q] for q in self.s.queues]

    # -- servers --

    def deployment(self) -> None:
        """``ansible-playbook site.yml`` on this machine (what ``make deploy`` runs), then again with nothing to do.

        Skipped in quick mode: it changes the machine (gearmand, the PHP extension and the worker service).
        """
        if self.s.quick:
            self.notes.append("deployment not timed in quick mode")
            return
        playbook = str(Path(sys.executable).with_name("ansible-playbook"))
        runs = []
        for label in ("first run", "second run, nothing to change"):
            started = time.monotonic()
            done = subprocess.run([playbook, "site.yml"], cwd=REPO, capture_output=True, text=True)
            seconds = time.monotonic() - started
            changed = re.findall(r"changed=(\d+)", done.stdout)
            runs.append({"label": label, "seconds": seconds, "rc": done.returncode, "changed": sum(map(int, changed))})
            self.log(f"deploy {label}: {seconds:.1f} s, rc {done.returncode}")
        self.results["deployment"] = runs

    @contextlib.contextmanager
    def _gearmand(self, name: str, extra: list[str] | None = None) -> Iterator[Gearmand]:
        workdir = self.workdir / name
        workdir.mkdir(exist_ok=True)
        server = Gearmand(workdir, extra_args=extra or [])
        server.start(timeout=30)
        try:
            yield server
        finally:
            server.stop()

    @contextlib.contextmanager
    def _backend(self, queue: str) -> Iterator[list[str]]:
        base = self.workdir / f"backend-{queue}"
        base.mkdir()
        if queue == "builtin":
            yield []
        elif queue == "sqlite":  # created by gearmand: rollback journal (the role's queue before issue 15)
            yield ["-q", "libsqlite3", f"--libsqlite3-db={base / 'queue.sqlite3'}"]
        elif queue == "sqlite-wal":  # created in WAL mode by the role's own tool, as the role does
            db = base / "queue.sqlite3"
            subprocess.run([PYTHON, str(WAL_TOOL), str(db), "--create"], check=True, capture_output=True)
            yield ["-q", "libsqlite3", f"--libsqlite3-db={db}"]
        elif queue == "sqlite-on-shutdown":  # opt-in: written only on a clean stop
            yield ["-q", "libsqlite3", f"--libsqlite3-db={base / 'queue.sqlite3'}", "--store-queue-on-shutdown"]
        elif queue == "redis":
            port = free_port()
            argv = [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(base),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ]
            self.procs.start(argv)
            _wait_port(port)
            yield ["-q", "redis", "--redis-server=127.0.0.1", f"--redis-port={port}"]
        elif queue == "postgres":
            with self._postgres(base) as conninfo:
                yield ["-q", "Postgres", f"--libpq-conninfo={conninfo}"]
        elif queue == "mysql":
            with self._mariadb(base) as args:
                yield args
        else:
            raise ValueError(f"unknown queue type {queue!r}")

    @contextlib.contextmanager
    def _postgres(self, base: Path) -> Iterator[str]:
        bindir = Path(_first([*sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]) or "/usr/bin")
        postgres = pwd.getpwnam("postgres")
        data = base / "data"
        base.chmod(0o755)
        for parent in base.parents:  # the postgres user must reach the directory
            if str(parent).startswith(str(self.workdir.parent)) and parent != self.workdir.parent:
                parent.chmod(0o755)
        data.mkdir()
        os.chown(data, postgres.pw_uid, postgres.pw_gid)
        as_pg = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*as_pg, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        port = free_port()
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
        subprocess.run(
            [*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"],
            check=True,
            capture_output=True,
        )
        try:
            yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        finally:
            subprocess.run(
                [*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                check=False,
            )

    @contextlib.contextmanager
    def _mariadb(self, base: Path) -> Iterator[list[str]]:
        install = shutil.which("mariadb-install-db")
        server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        if not install or not os.path.exists(server):
            raise RuntimeError("mariadb-server is not installed (apt-get install mariadb-server)")
        data, sock = base / "data", base / "mysql.sock"
        subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
            ],
            check=True,
            capture_output=True,
        )
        port = free_port()
        process = self.procs.start(
            [
                server,
                "--no-defaults",
                f"--datadir={data}",
                f"--port={port}",
                "--bind-address=127.0.0.1",
                f"--socket={sock}",
                "--user=root",
                "--skip-grant-tables",
                f"--pid-file={base / 'mariadb.pid'}",
                f"--log-error={base / 'error.log'}",
            ]
        )
        _wait_port(port, 60)
        client = shutil.which("mariadb") or "mysql"
        subprocess.run(
            [client, "--no-defaults", f"--socket={sock}", "-e", "CREATE DATABASE gearman"],
            check=True,
            capture_output=True,
        )
        try:
            yield [
                "-q",
                "MySQL",
                "--mysql-host=127.0.0.1",
                f"--mysql-port={port}",
                "--mysql-user=root",
                "--mysql-db=gearman",
            ]
        finally:
            self.procs.stop(process, signal.SIGTERM, timeout=30)


def _first(items: list[Path]) -> Path | None:
    return items[0] if items else None


def _wait_port(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _rss_mb(pid: int) -> float:
    from benchmarks.common import rss_kb

    return rss_kb(pid) / 1024 if pid else 0.0


# --- report --------------------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def versions() -> dict[str, str]:
    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    from importlib.metadata import version

    def pkg(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "?"

    return {
        "gearmand": out(["/usr/sbin/gearmand", "--version"]),
        "islandora-job": pkg("islandora-job"),
        "pygearman": pkg("pygearman"),
        "redis": out(["redis-server", "--version"]),
        "postgres": out(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "mariadb": out(["/usr/sbin/mariadbd", "--version"]),
    }


def render(bench: Bench, started: float) -> str:
    s = bench.s
    lines = [BEGIN, ""]
    m = machine()
    v = versions()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines += [
        f"## Worker runtime (issue 6): `python -m benchmarks.run{' --quick' if s.quick else ''}`",
        "",
        f"Generated {when} in {time.monotonic() - started:.0f} s ({'quick' if s.quick else 'full'} mode: "
        f"{s.rounds} rounds, medians). Machine: {m['cpu']}, {m['memory']}, Linux {m['kernel']}, Python "
        f"{m['python']}, load average at the end {m['load']} (the machine is shared: read the ratios).",
        f"Versions: {v['gearmand']}; islandora-job {v['islandora-job']}; pygearman {v['pygearman']}; {v['redis']}; "
        f"{v['postgres']}; {v['mariadb']}.",
        "",
    ]
    contenders: list[Contender] = bench.results.get("dispatch", [])  # type: ignore[assignment]
    if contenders:
        ceiling = contenders[0]
        fg0, bg0 = _median(ceiling.fg), _median(ceiling.bg)
        lines += [
            '### Dispatch throughput (no-op jobs, 24-byte payload `{"func":"nop","args":[]}`)',
            "",
            f"Foreground: {s.jobs:,} jobs per round with 200 in flight; background: {s.jobs:,} jobs queued in one "
            f"burst, timed until gearmand's queue is empty ({s.cli_jobs:,} for the process-per-job worker). "
            "Ratios are to the 1-process raw worker of the same round set; *per process* divides by the processes.",
            "",
            "| worker | foreground jobs/s | ratio | per process | background jobs/s | ratio |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for c in contenders:
            fg, bg = _median(c.fg), _median(c.bg)
            lines.append(
                f"| {c.label} | {fg:,.0f} | {fg / fg0:.2f} | {fg / fg0 / c.processes:.2f} | "
                f"{bg:,.0f} | {bg / bg0:.2f} |"
            )
        by = {c.key: c for c in contenders}
        ij1, pyg, cli = _median(by["ij1"].fg), _median(by["pyg"].fg), _median(by["cli"].fg)
        lines += [
            "",
            f"Goals: islandora-job 1 process = {ij1 / fg0:.0%} of the raw ceiling (goal ≥ 60%), "
            f"{ij1 / pyg:.1f}x pygearman (goal ≥ 2x), {ij1 / cli:.0f}x the process-per-job CLI (goal ≥ 10x); "
            f"{CPUS} processes scale x{_median(by['ijN'].fg) / ij1:.2f} (raw: x{_median(by['raw2'].fg) / fg0:.2f}).",
            "",
            "![dispatch throughput](img/dispatch.png)",
            "",
            "### Foreground round trip, one job at a time",
            "",
            "| worker | p50 ms | p95 ms | p99 ms | samples |",
            "|---|---:|---:|---:|---:|",
        ]
        for c in contenders:
            lines.append(
                f"| {c.label} | {_pct(c.latency, 0.5) * 1e3:.3f} | {_pct(c.latency, 0.95) * 1e3:.3f} | "
                f"{_pct(c.latency, 0.99) * 1e3:.3f} | {len(c.latency):,} |"
            )
        lines += ["", "![latency](img/latency.png)", ""]
    queues = bench.results.get("queues")
    if queues:
        lines += [
            "### Background jobs per queue type (islandora-job worker, "
            f"{CPUS} processes; {s.queue_jobs:,} jobs, each with its own unique key)",
            "",
            "Submission: pipelined SUBMIT_JOB_BG to a function no worker serves, until every JOB_CREATED. "
            "Completion: the same burst to the worker's function, timed from the first submission until gearmand's "
            "queue is empty. Back-ends started for the run with their default durability (fsync on); every gearmand "
            "started before the first round, the queue types measured in rotating order round by round.",
            "",
            "| queue | submitted jobs/s | submitted + completed jobs/s | vs builtin |",
            "|---|---:|---:|---:|",
        ]
        base = next((q["complete"] for q in queues if q.get("queue") == "builtin" and "complete" in q), None)  # type: ignore[union-attr,index]
        for q in queues:  # type: ignore[union-attr]
            if "error" in q:
                lines.append(f"| {QUEUE_LABELS.get(q['queue'], q['queue'])} | not measured: {q['error']} | | |")
            else:
                ratio = f"{q['complete'] / base:.3f}" if base else "-"
                label = QUEUE_LABELS.get(q["queue"], q["queue"])
                lines.append(f"| {label} | {q['submit']:,.0f} | {q['complete']:,.0f} | {ratio} |")
        by_queue = {q["queue"]: q for q in queues if "error" not in q}  # type: ignore[union-attr,index]
        if "sqlite-wal" in by_queue and "sqlite" in by_queue:
            wal, journal = by_queue["sqlite-wal"], by_queue["sqlite"]
            lines += [
                "",
                f"WAL / rollback journal, side by side in this run: x{wal['submit'] / journal['submit']:.1f} "  # type: ignore[operator]
                f"for submissions (goal of issue 15: x3 or more), x{wal['complete'] / journal['complete']:.1f} "  # type: ignore[operator]
                "for submitted + completed.",
            ]
        lines += ["", "![queue types](img/queues.png)", ""]
    bridge = bench.results.get("bridge")
    if bridge:
        b, c = _median(bridge["bridge_cat"]), _median(bridge["cli_cat"])  # type: ignore[index]
        lines += [
            "### The command bridge against `gearman -w` (both run `cat` once per job, 1 process)",
            "",
            "| worker | jobs/s | ms per job |",
            "|---|---:|---:|",
            f'| `[[command_jobs]]` argv = ["cat"] | {b:,.0f} | {1e3 / b:.2f} |',
            f"| `gearman -w -f NAME -- cat` | {c:,.0f} | {1e3 / c:.2f} |",
            "",
            f"Overhead of the bridge per job: {1e3 / b - 1e3 / c:+.2f} ms ({b / c:.2f}x the CLI's throughput).",
            "",
        ]
    payload = bench.results.get("payload")
    if payload:
        lines += [
            "### Payload size sweep (foreground echo, 1 process)",
            "",
            'raw: the raw worker echoing bytes; `payload="raw"` job: islandora-job passing the bytes through; '
            'islandora payload: a JSON payload `{"func":"echo","args":["xxx…"]}` decoded and its string '
            "returned. RSS: peak of the worker process during that size's runs (sampled every 20 ms).",
            "",
            '| size | raw jobs/s | raw MB/s | raw RSS MiB | `payload="raw"` jobs/s | ratio | RSS MiB | '
            "islandora payload jobs/s | ratio | RSS MiB | gearmand RSS MiB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in payload:  # type: ignore[union-attr]
            lines.append(
                f"| {_size(r['size'])} | {r['raw']:,.0f} | {r['raw'] * r['size'] / 1e6:,.1f} | {r['raw_rss_mb']:.1f} | "
                f"{r['ij_raw']:,.0f} | {r['ij_raw'] / r['raw']:.2f} | {r['ij_raw_rss_mb']:.1f} | "
                f"{r['ij_json']:,.0f} | {r['ij_json'] / r['raw']:.2f} | {r['ij_json_rss_mb']:.1f} | "
                f"{r['gearmand_rss_mb']:.1f} |"
            )
        lines += ["", "![payload sweep](img/payload.png)", ""]
    deployment = bench.results.get("deployment")
    if isinstance(deployment, list):
        lines += [
            "### Deployment: `ansible-playbook site.yml` on this machine (what `make deploy` runs)",
            "",
            "The machine already had the Debian packages (the test suite installs them); the first run builds the",
            "wheelhouse and installs a release if the code changed since the last deploy.",
            "",
            "| run | seconds | exit status | tasks changed |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {r['label']} | {r['seconds']:.1f} | {r['rc']} | {r['changed']} |" for r in deployment]
        lines.append("")
    if bench.notes:
        lines += ["Notes of this run: " + "; ".join(bench.notes), ""]
    lines.append(END)
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("kB", 1000)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def charts(bench: Bench) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(parents=True, exist_ok=True)
    contenders: list[Contender] = bench.results.get("dispatch", [])  # type: ignore[assignment]
    if contenders:
        labels = [c.key for c in contenders]
        x = range(len(contenders))
        fig, ax = plt.subplots(figsize=(9, 4.5))
        ax.bar([i - 0.2 for i in x], [_median(c.fg) for c in contenders], 0.4, label="foreground")
        ax.bar([i + 0.2 for i in x], [_median(c.bg) for c in contenders], 0.4, label="background")
        ax.set_xticks(list(x), labels)
        ax.set_ylabel("jobs/s (median)")
        ax.set_title("Dispatch throughput, no-op jobs, gearmand 1.1.20 on loopback")
        ax.legend()
        ax.text(
            0.99,
            0.97,
            "raw1/2: raw socket; ij1/ijN/ij1w: islandora-job; pyg: pygearman; cli: gearman -w cat",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7,
        )
        fig.tight_layout()
        fig.savefig(IMG / "dispatch.png", dpi=100)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for offset, (q, name) in zip((-0.25, 0, 0.25), ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")), strict=True):
            ax.bar([i + offset for i in x], [_pct(c.latency, q) * 1e3 for c in contenders], 0.25, label=name)
        ax.set_xticks(list(x), labels)
        ax.set_yscale("log")
        ax.set_ylabel("round trip, ms (log)")
        ax.set_title("Foreground round trip, one job at a time")
        ax.legend()
        fig.tight_layout()
        fig.savefig(IMG / "latency.png", dpi=100)
        plt.close(fig)
    queues = [q for q in bench.results.get("queues", []) if "error" not in q]  # type: ignore[union-attr,operator]
    if queues:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        x = range(len(queues))
        ax.bar([i - 0.2 for i in x], [q["submit"] for q in queues], 0.4, label="submitted/s")
        ax.bar([i + 0.2 for i in x], [q["complete"] for q in queues], 0.4, label="submitted+completed/s")
        ax.set_xticks(list(x), [q["queue"] for q in queues])
        ax.set_yscale("log")
        ax.set_ylabel("jobs/s (log)")
        ax.set_title("Background jobs per gearmand queue type")
        ax.legend()
        fig.tight_layout()
        fig.savefig(IMG / "queues.png", dpi=100)
        plt.close(fig)
    payload = bench.results.get("payload")
    if payload:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
        sizes = [r["size"] for r in payload]  # type: ignore[union-attr,index]
        for key, name in (
            ("raw", "raw worker"),
            ("ij_raw", 'islandora-job payload="raw"'),
            ("ij_json", "islandora-job JSON payload"),
        ):
            ax1.plot(sizes, [r[key] for r in payload], marker="o", label=name)  # type: ignore[union-attr,index]
            ax2.plot(sizes, [r[key + "_rss_mb"] for r in payload], marker="o", label=name)  # type: ignore[union-attr,index]
        for ax in (ax1, ax2):
            ax.set_xscale("log")
            ax.set_xlabel("payload bytes")
            ax.legend(fontsize=8)
        ax1.set_yscale("log")
        ax1.set_ylabel("jobs/s")
        ax1.set_title("Throughput by payload size")
        ax2.set_ylabel("peak RSS of the worker process, MiB")
        ax2.set_title("Memory by payload size")
        fig.tight_layout()
        fig.savefig(IMG / "payload.png", dpi=100)
        plt.close(fig)


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)


SECTIONS: dict[str, Callable[[Bench], None]] = {
    "dispatch": Bench.dispatch_and_latency,
    "bridge": Bench.bridge,
    "payload": Bench.payload_sweep,
    "queues": Bench.queue_types,
    "deployment": Bench.deployment,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and jobs: under two minutes")
    parser.add_argument("--only", action="append", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument("--queues", help=f"comma-separated queue types (default: {','.join(QUEUES)})")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not touch docs/")
    parser.add_argument("--write", action="store_true", help="with --quick: write docs/ too (a full run always does)")
    options = parser.parse_args()
    s = settings(options.quick, options.queues.split(",") if options.queues else None)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        bench = Bench(s, workdir)
        try:
            for name, section in SECTIONS.items():
                if options.only and name not in options.only:
                    continue
                bench.log(f"{name} ...")
                section(bench)
        finally:
            bench.procs.stop_all()
    text = render(bench, started)
    print(text)
    if not options.no_write and (options.write or not options.quick):
        write_doc(text)
        charts(bench)
        print(f"wrote {DOC.relative_to(REPO)} and docs/img/*.png", file=sys.stderr)
    print(f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
