"""The worker runtime's benchmarks, in one invocation: ``python -m benchmarks.run [--quick]`` (``make bench``).

Against gearmand 1.1.20 on 127.0.0.1 it measures, contenders interleaved round by round in one process tree
(every worker started once and idle between its turns), medians over the rounds, and ratios to the raw reference:

* dispatch throughput of no-op jobs, foreground (200 in flight) and background (queued in one burst, timed until
  gearmand's queue is empty): the raw-socket worker (1 and 2 processes: the reference; and 1 process reading into
  one buffer, the true ceiling, see ``raw_worker.py``), ``islandora-job worker``
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

This module measures and nothing else: what it measured is a :class:`~benchmarks.figures.Figures`
(``--save-figures FILE`` keeps it as JSON), which :mod:`benchmarks.report` turns into the Markdown section (a
template, with the goals from ``benchmarks/goals.toml``) and :mod:`benchmarks.charts` into the charts.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from benchmarks import charts, report
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
    tree_cpu_seconds,
    wait_drained,
    wait_workers,
    worker_config,
)
from benchmarks.figures import Contender, DeployRun, Figures, PayloadRow, QueueRow
from tests.support.gearmand import Gearmand, free_port

REPO = Path(__file__).resolve().parents[1]
CPUS = os.cpu_count() or 2
WAL_TOOL = REPO / "roles" / "gearman_server" / "files" / "gearman-server-sqlite-wal"
QUEUES = ["builtin", "sqlite-wal", "sqlite", "sqlite-on-shutdown", "redis", "postgres", "mysql"]


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


#: gearmand's options where workers are compared: one I/O thread. gearmand hands new connections to its I/O threads
#: in turn (gearmand_con_create: "a simple round-robin"), so with several, whether a contender's connection shared
#: the load client's thread (no hand-over between threads on every job) depended on the order the connections were
#: made in: a fixed advantage for some contenders, different in every run. The queue section keeps the default.
EQUAL_TERMS: Final = ["--threads=1"]


# --- measuring ----------------------------------------------------------------------------------------------------


class Bench:
    """The sections of a run; each one fills its part of :attr:`fig`."""

    def __init__(self, options: Settings, workdir: Path, baseline: Path | None = None) -> None:
        self.s = options
        self.baseline = baseline
        self.workdir = workdir
        self.procs = Processes()
        self.fig = Figures(options.quick, options.rounds, options.jobs, options.cli_jobs, options.queue_jobs, CPUS)
        self.notes = self.fig.notes

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    # -- worker starters --

    def raw(self, server: Gearmand, function: str, count: int = 1, *flags: str) -> list[subprocess.Popen[bytes]]:
        return [self.procs.start([PYTHON, RAW_WORKER, server.address, function, *flags]) for _ in range(count)]

    def pool(
        self,
        server: Gearmand,
        name: str,
        concurrency: int,
        *,
        level: str = "INFO",
        prefix: str = "",
        tail: str = "",
        tree: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """``islandora-job worker``; with ``tree``, that checkout's code run by its own ``.venv`` (the baseline)."""
        top = f'multisite_prefixes = ["{prefix}"]' if prefix else ""
        config = worker_config(
            self.workdir / f"{name}.toml", [server.address], concurrency=concurrency, level=level, top=top, tail=tail
        )
        if tree is None:
            return start_pool(self.procs, config, self.workdir / f"{name}.log")
        python = str(tree / ".venv" / "bin" / "python")
        return start_pool(self.procs, config, self.workdir / f"{name}.log", bench_env(PYTHONPATH=str(tree)), python)

    def cli(self, server: Gearmand, function: str, *command: str) -> subprocess.Popen[bytes]:
        gearman = shutil.which("gearman") or "/usr/bin/gearman"
        return self.procs.start(
            [gearman, "-h", "127.0.0.1", "-p", str(server.port), "-w", "-f", function, "--", *command]
        )

    # -- sections --

    def dispatch_and_latency(self) -> None:
        with self._gearmand("dispatch", EQUAL_TERMS) as server:
            contenders = [
                Contender("raw1", "raw socket worker, 1 process (reference)", "raw1", 1),
                Contender("raw2", "raw socket worker, 2 processes", "raw2", 2),
                Contender("rawi", "raw socket worker reading into one buffer, 1 process", "rawi", 1),
                Contender("ij1", "islandora-job worker, 1 process", "ij1_nop", 1),
                Contender("ijN", f"islandora-job worker, {CPUS} processes", "ijN_nop", CPUS),
                Contender("ij1w", "islandora-job worker, 1 process, logging WARNING", "ij1w_nop", 1),
                Contender("pyg", "pygearman GearmanWorker, 1 process", "pyg", 1),
                Contender("cli", "gearman -w -- cat, 1 process (a process per job)", "cli", 1, per_job_process=True),
            ]
            pids = {
                "raw1": [p.pid for p in self.raw(server, "raw1", 1)],
                "raw2": [p.pid for p in self.raw(server, "raw2", 2)],
                "rawi": [p.pid for p in self.raw(server, "rawi", 1, "--into")],
                "ij1": [self.pool(server, "ij1", 1, prefix="ij1").pid],
                "ijN": [self.pool(server, "ijN", CPUS, prefix="ijN").pid],
                "ij1w": [self.pool(server, "ij1w", 1, prefix="ij1w", level="WARNING").pid],
                "pyg": [self.procs.start([PYTHON, PYGEARMAN_WORKER, server.address, "pyg"], env=bench_env()).pid],
                "cli": [self.cli(server, "cli", "cat").pid],
            }
            if self.baseline is not None:  # the same two pools, run by the baseline tree's code
                ours = {c.key: c for c in contenders}
                for key in ("ij1", "ijN"):
                    mine, base = ours[key], f"{key}base"
                    label = f"{mine.label}, baseline {revision(self.baseline)}"
                    contenders.append(Contender(base, label, f"{base}_nop", mine.processes))
                    pids[base] = [self.pool(server, base, mine.processes, prefix=base, tree=self.baseline).pid]
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
                        cpu = tree_cpu_seconds(pids[c.key])
                        seconds, failed = client.foreground(c.function.encode(), NOP_PAYLOAD, jobs)
                        if failed:
                            self.notes.append(f"{c.label}: {failed} foreground job(s) failed")
                        c.fg.append(jobs / seconds)
                        started = time.monotonic()
                        client.background(c.function.encode(), NOP_PAYLOAD, jobs)
                        c.bg.append(jobs / (wait_drained(server.port, c.function) - started))
                        c.cpu.append((tree_cpu_seconds(pids[c.key]) - cpu) / (2 * jobs))
                        lat_jobs = max(20, self.s.latency_jobs // (10 if c.per_job_process else 1))
                        c.latency += client.round_trips(c.function.encode(), NOP_PAYLOAD, lat_jobs)
                    self.log(f"dispatch round {round_no + 1}/{self.s.rounds} done")
            finally:
                client.close()
                self.procs.stop_all()
            self.fig.dispatch = contenders

    def bridge(self) -> None:
        with self._gearmand("bridge", EQUAL_TERMS) as server:
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
            self.fig.bridge = rates
            self.log("bridge done")

    def payload_sweep(self) -> None:
        rows = []
        with self._gearmand("payload", EQUAL_TERMS) as server:
            raw = self.raw(server, "sweep_raw", 1)[0]
            pool = self.pool(server, "sweep", 1, prefix="sw")
            wait_workers(server.port, "sweep_raw", 1)
            wait_workers(server.port, "sw_echo_raw", 1)
            client = LoadClient(server.port)
            try:
                for size in self.s.sizes:
                    data = b"x" * size
                    # The echo job's own payload at every size: the function decides the job, so a payload
                    # naming another job (nop) would be refused and the row would time failures.
                    payload = json.dumps({"func": "echo", "args": ["x" * max(0, size - 40)]}).encode()
                    jobs = max(30, min(self.s.jobs // 2, (30 if self.s.quick else 100) * 1_000_000 // size // 10))
                    window = max(2, min(200, 16_000_000 // size))
                    row: dict[str, Any] = {"size": size, "jobs": jobs}
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
                    rows.append(PayloadRow(**row))
                    self.log(f"payload {size} B done")
            finally:
                client.close()
                self.procs.stop_all()
        self.fig.payload = rows

    def queue_types(self) -> None:
        """Every queue type's gearmand (and back-end) started first, then measured round by round in rotating order,
        so that the rows of one run share the machine's state (the sqlite rows above all: WAL against the rollback
        journal is a ratio of two rows)."""
        submit: dict[str, list[float]] = {queue: [] for queue in self.s.queues}
        complete: dict[str, list[float]] = {queue: [] for queue in self.s.queues}
        errors: dict[str, str] = {}
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
                    except Exception as exc:  # a back-end that cannot start is reported, not fatal
                        errors[queue] = f"{type(exc).__name__}: {exc}"
                        self.log(f"queue {queue}: {exc}")
                for round_no in range(max(1, self.s.rounds - 1)):
                    shift = round_no % max(1, len(live))
                    for queue, server, client in live[shift:] + live[:shift]:
                        n = self.s.queue_jobs
                        tag = b"r%d" % round_no
                        if queue in errors:
                            continue
                        try:
                            submit[queue].append(n / client.background(b"nobody", NOP_PAYLOAD, n, unique=tag))
                            started = time.monotonic()
                            client.background(b"nop", NOP_PAYLOAD, n, unique=tag)
                            complete[queue].append(n / (wait_drained(server.port, "nop") - started))
                        except Exception as exc:  # reported in its row; the other queue types go on
                            errors[queue] = f"round {round_no + 1}: {type(exc).__name__}: {exc}"
                            self.log(f"queue {queue}: {errors[queue]}")
                    self.log(f"queue round {round_no + 1}/{max(1, self.s.rounds - 1)} done")
            finally:
                self.procs.stop_all()
        self.fig.queues = [
            QueueRow(queue, error=errors[queue])
            if queue in errors
            else QueueRow(queue, statistics.median(submit[queue]), statistics.median(complete[queue]))
            for queue in self.s.queues
        ]

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
            runs.append(DeployRun(label, seconds, done.returncode, sum(map(int, changed))))
            self.log(f"deploy {label}: {seconds:.1f} s, rc {done.returncode}")
        self.fig.deployment = runs

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
        elif queue == "sqlite":  # created by gearmand: rollback journal (gearmand's own default)
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


def revision(tree: Path) -> str:
    """``git describe`` of a checkout, or its path when it is not one."""
    done = subprocess.run(
        ["git", "-C", str(tree), "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or str(tree)


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


# --- the run ---------------------------------------------------------------------------------------------------


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


def _php_runner(bench: Bench) -> None:
    """The persistent PHP runner's own section (benchmarks/php_runner.py), written to the docs on a full run."""
    from benchmarks import php_runner

    text = php_runner.render(php_runner.run(bench.s.quick))
    print(text, file=sys.stderr)
    if not bench.s.quick:
        php_runner.write_doc(text)


SECTIONS: dict[str, Callable[[Bench], None]] = {
    "dispatch": Bench.dispatch_and_latency,
    "bridge": Bench.bridge,
    "payload": Bench.payload_sweep,
    "queues": Bench.queue_types,
    "deployment": Bench.deployment,
    "runner": _php_runner,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and jobs: under two minutes")
    parser.add_argument("--only", action="append", choices=list(SECTIONS), help="run only these sections")
    parser.add_argument("--queues", help=f"comma-separated queue types (default: {','.join(QUEUES)})")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not touch docs/")
    parser.add_argument("--write", action="store_true", help="with --quick: write docs/ too (a full run always does)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of another revision with its own .venv (make venv): its 1-process worker runs beside ours",
    )
    parser.add_argument("--save-figures", type=Path, help="also keep the figures as JSON (python -m benchmarks.report)")
    options = parser.parse_args()
    s = settings(options.quick, options.queues.split(",") if options.queues else None)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        if options.baseline is not None and not (options.baseline / ".venv" / "bin" / "python").exists():
            parser.error(f"--baseline {options.baseline}: no .venv/bin/python there (run make venv in it)")
        bench = Bench(s, workdir, options.baseline)
        try:
            for name, section in SECTIONS.items():
                if options.only and name not in options.only:
                    continue
                bench.log(f"{name} ...")
                section(bench)
        finally:
            bench.procs.stop_all()
    fig = bench.fig
    fig.machine, fig.versions = machine(), versions()
    fig.generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    fig.seconds = time.monotonic() - started
    if options.save_figures:
        fig.save(options.save_figures)
    text = report.render(fig)
    print(text)
    if not options.no_write and (options.write or not options.quick):
        report.write_doc(text)
        charts.draw(fig)
        print(f"wrote {report.DOC.relative_to(REPO)} and {charts.IMG.relative_to(REPO)}/*.png", file=sys.stderr)
    print(f"total {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
