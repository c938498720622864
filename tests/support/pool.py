"""A real ``islandora-job worker`` pool for integration tests, with its config, log and children at hand."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from tests.support.gearmand import admin
from tests.support.peers import wait_for

REPO = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def registered_workers(port: int, function: str) -> list[str]:
    """Client ids of the workers that have ``function`` on a gearmand (admin ``workers``)."""
    ids = []
    for line in admin(port, "workers").splitlines():
        if " : " in line:
            head, functions = line.split(" : ", 1)
            if function in functions.split():
                ids.append(head.split()[2])
    return ids


class Pool:
    def __init__(
        self,
        workdir: Path,
        servers: Sequence[str],
        *,
        concurrency: int = 2,
        extra: str = "",
        pool: str = "",
        modules: Sequence[str] = ("tests.integration.jobs_for_tests",),
        tail: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.config = workdir / "worker.toml"
        self.log = workdir / "worker.log"
        self.dead_letters = workdir / "dead-letters.sqlite3"
        self.servers = list(servers)
        self.concurrency = concurrency
        self.write_config(concurrency=concurrency, extra=extra, pool=pool, modules=modules, tail=tail)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "ISLANDORA_JOB_ALLOW_ROOT": "true",
            **(env or {}),
        }
        self.env.pop("ISLANDORA_JOB_SERVERS", None)
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: BinaryIO | None = None

    def write_config(
        self, *, concurrency: int, extra: str = "", pool: str = "", modules: Sequence[str] = (), tail: str = ""
    ) -> None:
        """``extra``: top-level keys or whole tables; ``pool``: keys of [pool]; ``tail``: [[command_jobs]]."""
        servers = ", ".join(f'"{s}"' for s in self.servers)
        module_list = ", ".join(f'"{m}"' for m in modules)
        self.config.write_text(
            f"servers = [{servers}]\n"
            f"concurrency = {concurrency}\n"
            f"jobs_modules = [{module_list}]\n"
            f"{extra}\n"
            "[pool]\n"
            "idle_grab_interval = 5\n"
            "shutdown_timeout = 20\n"
            f"{pool}\n"
            "[logging]\n"
            'level = "INFO"\n'
            "[dead_letters]\n"
            f'path = "{self.dead_letters}"\n'
            f"{tail}\n"
        )

    def start(self) -> Pool:
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "islandora_job.cli.main", "worker", "--config", str(self.config)],
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def children(self) -> list[int]:
        return children_of(self.pid)

    def wait_registered(self, port: int, function: str, count: int | None = None, timeout: float = 10.0) -> list[str]:
        want = self.concurrency if count is None else count
        ids: list[str] = wait_for(
            lambda: (found := registered_workers(port, function)) and len(found) >= want and found,
            timeout,
            message=f"{want} worker(s) registered for {function}",
        )
        return ids

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, *needles: str, timeout: float = 5.0) -> str:
        """The log once every needle is in it. INFO lines reach the log in batches (islandora_job.logsetup), up to
        a fraction of a second after the event, so a test waits for them rather than reading at once."""

        def complete() -> str:
            text = self.log_text()
            return text if all(needle in text for needle in needles) else ""

        return str(wait_for(complete, timeout=timeout, message=f"{needles!r} in the worker log"))

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Stop it and every process it started; never leaves one behind."""
        if self.process is None:
            return
        leftovers = set(self.children())
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                leftovers |= set(self.children())
                self.process.kill()
                self.process.wait()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process = None
        if self._log_file is not None:
            self._log_file.close()


@contextlib.contextmanager
def running_pool(workdir: Path, servers: Sequence[str], **kwargs: object) -> Iterator[Pool]:
    pool = Pool(workdir, servers, **kwargs).start()  # type: ignore[arg-type]
    try:
        yield pool
    finally:
        pool.stop()
