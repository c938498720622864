"""A host deployed with the layout of before issue 17 converges to the new one without losing a job (init-script mode).

Before issue 17 the role wrote the queue type and every queue option, password included, to /etc/gearmand.conf and
only the listen and tuning options to PARAMS. Here the role's configure.yml and its restart handler run for real
(ansible-playbook, include_role), in init-script mode, with every path moved into a temporary directory and the
init wrapper replaced by the test's own, which starts gearmand as Debian's init script does: as root, sourcing the
defaults file, with --user=gearman and $PARAMS. The old layout is written by hand, gearmand started on it and jobs
queued; then:

* a --check run reports the change and changes no file, restarts nothing;
* the first run moves the settings (PARAMS holds the queue, the config file only a password or nothing), restarts
  gearmand once, and every job is still queued;
* the second run changes nothing and does not restart gearmand (same pid).

sqlite (no secret: the config file goes) and redis with a password (the config file keeps the password alone),
against a redis-server started by the test.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ansible.helpers import (
    GEARMAND,
    ROLES,
    gearman_tree,
    init_wrapper,
    playbook,
    process,
    queued,
    recap,
    run,
    system_binary,
    wait_port,
)
from tests.support.gearmand import free_port

ROLE = ROLES / "gearman_server"
PASSWORD = "M0ve-p4ss:w/rd"


class Host:
    """The test's stand-in for a host: defaults and config files, queue, log and pid directories under top."""

    def __init__(self, top: Path, queue: str, redis_port: int) -> None:
        self.top = top
        self.queue = queue
        self.port = free_port()
        self.defaults = top / "etc" / "gearman-job-server"
        self.config = top / "etc" / "gearmand.conf"
        self.db = top / "lib" / "queue.sqlite3"
        # Debian's init script's start: root, the defaults file sourced, --user=gearman, $PARAMS split. gearmand
        # reads /etc/gearmand.conf when no option names a config file: never the host's here.
        self.initctl = init_wrapper(
            top / "initctl",
            top / "run" / "gearmand.pid",
            f"""PARAMS=""
            . {self.defaults}
            case " $PARAMS " in *" --config-file="*) conf="" ;; *) conf="--config-file=/dev/null" ;; esac
            {system_binary(GEARMAND, "gearman-job-server")} --pid-file="$PIDFILE" --user=gearman $PARAMS $conf""",
        )
        self.variables = {
            "gearman_server_queue_type": queue,
            "gearman_server_sqlite_db": str(self.db),
            "gearman_server_redis_port": redis_port,
            "gearman_server_redis_password": PASSWORD if queue == "redis" else "",
            "gearman_server_port": self.port,
            "gearman_server_log_file": str(top / "log" / "gearmand.log"),
            "gearman_server_start_timeout": 20,
            "__gearman_server_config_file": str(self.config),
            "__gearman_server_defaults_file": str(self.defaults),
            "__gearman_server_pgpass_file": str(top / "etc" / "pgpass"),
            "__gearman_server_preflight_log": str(top / "log" / "preflight.log"),
            "__gearman_server_check_script": str(ROLE / "files" / "gearman-server-check-queue"),
            "__gearman_server_wal_script": str(ROLE / "files" / "gearman-server-sqlite-wal"),
            "__gearman_server_initctl": str(self.initctl),
            "__gearman_server_systemd": False,
            "__gearman_server_user": "gearman",
            "__gearman_server_group": "gearman",
            "__gearman_server_local_address": "127.0.0.1",
            "__gearman_server_writable_dirs": [str(top / "lib"), str(top / "log")],
        }

    def write_old_layout(self) -> None:
        """The files as the role wrote them before issue 17."""
        queue = {
            "sqlite": ["--queue-type=libsqlite3", f"--libsqlite3-db={self.db}", "--libsqlite3-table=gearman_queue"],
            "redis": [
                "--queue-type=redis",
                "--redis-server=127.0.0.1",
                f"--redis-port={self.variables['gearman_server_redis_port']}",
                f"--redis-password={PASSWORD}",
            ],
        }[self.queue]
        self.config.write_text("# Ansible managed\n" + "\n".join(queue) + "\n")
        self.config.chmod(0o640)
        params = (
            f"--daemon --listen=127.0.0.1 --port={self.port} --threads=4 --backlog=32 --job-retries=3"
            f" --worker-wakeup=0 --verbose=WARNING --log-file={self.top / 'log' / 'gearmand.log'}"
            f" --config-file={self.config}"
        )
        self.defaults.write_text(f'# Ansible managed\nPARAMS="{params}"\n')
        if self.queue == "sqlite":
            result = run(
                [
                    "python3",
                    self.variables["__gearman_server_wal_script"],
                    str(self.db),
                    "--create",
                    "--user",
                    "gearman",
                ]
            )
            assert result.returncode == 0, result.stdout

    def ctl(self, action: str) -> None:
        result = run([str(self.initctl), action], timeout=60)
        assert result.returncode == 0, result.stdout

    def pid(self) -> int:
        return int((self.top / "run" / "gearmand.pid").read_text())

    def converge(self, *args: str) -> subprocess.CompletedProcess[str]:
        (self.top / "vars.json").write_text(json.dumps(self.variables))
        book = self.top / "configure.yml"
        book.write_text(
            json.dumps(
                [
                    {
                        "name": "Configure gearmand's queue and restart it if needed (the role's configure.yml)",
                        "hosts": "localhost",
                        "gather_facts": False,
                        "tasks": [
                            {
                                "name": "Configure",
                                "ansible.builtin.include_role": {
                                    "name": "gearman_server",
                                    "tasks_from": "configure.yml",
                                },
                            },
                            {"name": "Run the handlers", "ansible.builtin.meta": "flush_handlers"},
                        ],
                    }
                ]
            )
        )
        return playbook(book, "-e", f"@{self.top / 'vars.json'}", *args, timeout=300)

    def params(self) -> list[str]:
        result = run(["sh", "-c", '. "$1"; printf "%s\\n" $PARAMS', "sh", str(self.defaults)])
        return result.stdout.split()


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    argv = [system_binary("/usr/bin/redis-server", "redis-server"), "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", PASSWORD]
    with process(argv, tmp_path / "redis.log", port):
        yield port


@pytest.fixture(params=["sqlite", "redis"])
def host(request: pytest.FixtureRequest, redis_port: int) -> Iterator[Host]:
    with gearman_tree("ij-settings-move-", "lib", "run", "log") as top:
        (top / "etc").mkdir()
        yield Host(top, request.param, redis_port)


def test_old_layout_moves_without_losing_a_job_and_restarts_once(host: Host) -> None:
    host.write_old_layout()
    host.ctl("start")
    wait_port(host.port)
    for n in range(5):
        result = run(
            ["gearman", "-h", "127.0.0.1", "-p", str(host.port), "-f", "ij_move", "-b", "-u", f"m{n}", "--", "x"]
        )
        assert result.returncode == 0, result.stdout
    assert queued(host.port, "ij_move") == 5
    old_pid = host.pid()

    before = {p.name: p.read_bytes() for p in (host.top / "etc").iterdir()}
    check = host.converge("--check")
    assert check.returncode == 0, check.stdout[-5000:]
    assert recap(check.stdout)["localhost"]["changed"] > 0, "check mode must report the move"
    assert {p.name: p.read_bytes() for p in (host.top / "etc").iterdir()} == before, "check mode changed a file"
    assert host.pid() == old_pid, "check mode restarted gearmand"

    first = host.converge()
    assert first.returncode == 0, first.stdout[-5000:]
    assert recap(first.stdout)["localhost"]["changed"] > 0
    assert queued(host.port, "ij_move") == 5, "jobs lost by the move of the settings"
    new_pid = host.pid()
    assert new_pid != old_pid, "gearmand was not restarted on the new settings"
    cmdline = Path(f"/proc/{new_pid}/cmdline").read_bytes().decode().split("\0")
    module = {"sqlite": "libsqlite3", "redis": "redis"}[host.queue]
    assert f"--queue-type={module}" in host.params() and f"--queue-type={module}" in cmdline
    assert PASSWORD not in host.defaults.read_text() and not any(PASSWORD in word for word in cmdline)
    if host.queue == "sqlite":
        assert not host.config.exists(), "no secret: the config file must go (gearmand would still read it)"
    else:
        lines = [line for line in host.config.read_text().splitlines() if line.startswith("-")]
        assert lines == [f"--redis-password={PASSWORD}"], "the config file holds the password alone"
        assert f"--config-file={host.config}" in host.params()
    assert sorted(p.name for p in (host.top / "etc").iterdir() if p.name.endswith(".preflight")) == []

    second = host.converge()
    assert second.returncode == 0, second.stdout[-5000:]
    assert recap(second.stdout)["localhost"]["changed"] == 0, second.stdout[-5000:]
    assert host.pid() == new_pid, "the second run restarted gearmand"
    assert queued(host.port, "ij_move") == 5
