"""A Drupal site's database for the status-table tests: a real MariaDB or PostgreSQL on a free loopback port, with
the module's table as Drupal 7's schema API makes it, and a password-protected user the worker connects as.

Each server is started once per test session (a fixture of session scope in the test module) and can be frozen
(SIGSTOP) to show a database that stops answering.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.gearmand import free_port
from tests.support.peers import wait_for
from tests.support.processes import stop_process

USER = "drupal"
PASSWORD = "s3cret-pass-w0rd"  # distinctive: the tests grep logs and outputs for it
DATABASE = "drupal"
PREFIX = "site1_"
TABLE = f"{PREFIX}islandora_job_job_status"
# Drupal 7's schema API for the module's hook_schema(): serial → int auto_increment / serial, blob big → longblob /
# bytea, int tiny → tinyint / smallint, not null with default 0.
MYSQL_DDL = (
    f"CREATE TABLE {TABLE} (status_id int NOT NULL auto_increment, data longblob NOT NULL, "
    "state tinyint NOT NULL DEFAULT 0, PRIMARY KEY (status_id)) ENGINE = InnoDB DEFAULT CHARACTER SET utf8 "
    "COMMENT 'Holds the state of the jobs in the queue.'"
)
PGSQL_DDL = (
    f"CREATE TABLE {TABLE} (status_id serial, data bytea NOT NULL, state smallint NOT NULL DEFAULT 0, "
    f"PRIMARY KEY (status_id))"
)


@dataclass
class Site:
    """A running database server holding a Drupal site's database."""

    kind: str  # "mysql" or "postgresql"
    port: int
    pid: int
    run_sql: list[str]  # a client command line (as the superuser) that reads SQL on stdin

    @property
    def url(self) -> str:
        return f"{self.kind}://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def pdo_dsn(self) -> str:
        driver = "mysql" if self.kind == "mysql" else "pgsql"
        return f"{driver}:host=127.0.0.1;port={self.port};dbname={DATABASE}"

    def sql(self, statement: str) -> str:
        result = subprocess.run(self.run_sql, input=statement, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def rows(self) -> list[tuple[int, str, int]]:
        """(status_id, data as text, state) of every row, oldest first."""
        data = "data" if self.kind == "mysql" else "convert_from(data, 'UTF8')"
        out = self.sql(f"SELECT status_id, state, {data} FROM {TABLE} ORDER BY status_id")
        rows = []
        for line in out.splitlines():
            status_id, state, text = line.split("\t", 2)
            rows.append((int(status_id), text, int(state)))
        return rows

    def clear(self) -> None:
        self.sql(f"DELETE FROM {TABLE}")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server stopped (SIGSTOP), with every process it started (PostgreSQL serves each connection in a
        process of its own): connections are accepted by the kernel, then nothing answers."""
        pids = [self.pid, *_descendants(self.pid)]
        try:
            stop(pids)  # inside: whatever it stopped is resumed even when it fails
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)


def stop(pids: list[int], timeout: float = 10.0) -> None:
    """SIGSTOP each process and wait until every thread of each is stopped: the group stop is asynchronous, and on a
    loaded machine a thread that is running finishes what it does (a query, a grab) before it stops."""
    for pid in pids:
        # A backend that exits between the listing and the signal (a killed worker's connection) needs no stop.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)

    def all_stopped() -> bool:
        for pid in pids:
            tasks = Path(f"/proc/{pid}/task")
            for task in tasks.iterdir() if tasks.exists() else ():
                with contextlib.suppress(OSError):
                    if (
                        task.joinpath("stat").read_text().rpartition(")")[2].split()[0] not in "TtZX"
                    ):  # stopped (or already dead)
                        return False
        return True

    wait_for(all_stopped, timeout, interval=0.01, message=f"processes {pids} stopped")


def _descendants(pid: int) -> list[int]:
    try:
        children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [grand for child in children for grand in (child, *_descendants(child))]


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _shared_home(prefix: str) -> tuple[Path, list[str]]:
    """A directory the database's own user can reach (pytest keeps /tmp/pytest-of-root 0700) and the command prefix
    that runs as that user when we are root."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    home.chmod(0o755)
    return home, []


@contextlib.contextmanager
def mariadb() -> Iterator[Site]:
    install = shutil.which("mariadb-install-db")
    server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    assert install and os.path.exists(server), "mariadb-server is required (make system-deps)"
    home, _ = _shared_home("ij-drupal-mariadb-")
    data, sock = home / "data", home / "mysql.sock"
    user = "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    process = None
    try:
        subprocess.run(
            [install, "--no-defaults", f"--datadir={data}", f"--user={user}", "--skip-test-db",
             "--auth-root-authentication-method=normal"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        port = free_port()
        log = open(home / "error.log", "ab")  # noqa: SIM115 - the server's output, kept until the end
        process = subprocess.Popen(
            [server, "--no-defaults", f"--datadir={data}", f"--port={port}", "--bind-address=127.0.0.1",
             f"--socket={sock}", f"--user={user}", f"--pid-file={home / 'mariadb.pid'}",
             "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"],
            stdout=log, stderr=log,
        )  # fmt: skip
        wait_for(lambda: _listening(port), 60, interval=0.05, message=f"MariaDB listening on {port}")
        client = shutil.which("mariadb") or "mysql"
        site = Site(
            "mysql", port, process.pid, [client, "--no-defaults", f"--socket={sock}", "-N", "-B", "-r", "-u", "root"]
        )
        site.sql(
            f"CREATE DATABASE {DATABASE}; CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; "
            f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'127.0.0.1';"
        )
        site.run_sql = [*site.run_sql, DATABASE]
        site.sql(MYSQL_DDL)
        yield site
    finally:
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
            stop_process(process, 30)
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def postgresql() -> Iterator[Site]:
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    assert bindirs, "PostgreSQL is required (Debian postgresql)"
    bindir = bindirs[0]
    home, _ = _shared_home("ij-drupal-pg-")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = home / "pgdata"
    data.mkdir()
    if as_user:
        postgres = pwd.getpwnam("postgres")
        os.chown(data, postgres.pw_uid, postgres.pw_gid)
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "--auth-local=trust", "--auth-host=scram-sha-256",
             "-U", "postgres"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        port = free_port()
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
        subprocess.run(
            [*pg_ctl, "-o", options, "-l", str(data / "log"), "-w", "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        started = True
        pid = int((data / "postmaster.pid").read_text().split()[0])
        psql = [*as_user, str(bindir / "psql"), "-h", str(data), "-p", str(port), "-U", "postgres", "-X", "-q", "-A",
                "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"]  # fmt: skip
        site = Site("postgresql", port, pid, [*psql, "-d", "postgres"])
        site.sql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        site.sql(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        site.run_sql = [*psql, "-d", DATABASE]
        site.sql(f"SET ROLE {USER}; {PGSQL_DDL}")
        yield site
    finally:
        if started:
            with contextlib.suppress(ProcessLookupError, UnboundLocalError):
                os.kill(pid, signal.SIGCONT)
            subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True, check=False, timeout=60)
        shutil.rmtree(home, ignore_errors=True)
