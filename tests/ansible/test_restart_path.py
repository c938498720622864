"""The gearman_server role's restart path converts an existing sqlite queue to WAL mode (issue 15), init-script mode.

The role's restart.yml runs for real (ansible-playbook, include_role tasks_from, as playbooks/rolling_restart.yml
does), in init-script mode, with the init wrapper replaced by a small one of the test's (the role's own wrapper
drives the host's service and /etc/default file): it starts gearmand as the init script does, as root with
--daemon and --user=gearman, on a queue file in a temporary directory. Nothing of the host's gearmand is touched.

* a rollback-journal queue holding jobs (left by a kill -9) is converted while gearmand is stopped, gearmand is
  started again with every job, the -wal and -shm files are gearman's; a second run is a plain restart;
* a queue the gearman user cannot write cannot be converted: the play fails naming the file, and gearmand runs
  again on its unchanged queue.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
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
    queued,
    run,
    system_binary,
    wait_port,
)
from tests.support.gearmand import free_port

WAL_TOOL = ROLES / "gearman_server" / "files" / "gearman-server-sqlite-wal"


class Host:
    def __init__(self, top: Path) -> None:
        self.top = top
        self.port = free_port()
        self.db = top / "lib" / "queue.sqlite3"
        # The start line's shape of the init script: root, --daemon, --user=gearman.
        gearmand = system_binary(GEARMAND, "gearman-job-server")
        self.initctl = init_wrapper(
            top / "initctl",
            top / "run" / "gearmand.pid",
            f"""{gearmand} --daemon --pid-file="$PIDFILE" --user=gearman --listen=127.0.0.1 --port={self.port} \\
                --config-file=/dev/null --log-file={top}/run/gearmand.log -q libsqlite3 --libsqlite3-db={self.db}""",
        )

    def ctl(self, action: str) -> None:
        result = run([str(self.initctl), action], timeout=60)
        assert result.returncode == 0, result.stdout

    def restart_play(self) -> subprocess.CompletedProcess[str]:
        variables = {
            "gearman_server_queue_type": "sqlite",
            "gearman_server_sqlite_db": str(self.db),
            "gearman_server_port": self.port,
            "gearman_server_start_timeout": 20,
            "__gearman_server_wal_script": str(WAL_TOOL),
            "__gearman_server_initctl": str(self.initctl),
            "__gearman_server_systemd": False,
            "__gearman_server_user": "gearman",
            "__gearman_server_local_address": "127.0.0.1",
        }
        (self.top / "vars.json").write_text(json.dumps(variables))
        book = self.top / "restart.yml"
        book.write_text(
            json.dumps(
                [
                    {
                        "name": "Restart gearmand (the role's restart path)",
                        "hosts": "localhost",
                        "gather_facts": False,
                        "tasks": [
                            {
                                "name": "Restart",
                                "ansible.builtin.include_role": {"name": "gearman_server", "tasks_from": "restart.yml"},
                            }
                        ],
                    }
                ]
            )
        )
        return playbook(book, "-e", f"@{self.top / 'vars.json'}", timeout=180)

    def pid(self) -> int:
        return int((self.top / "run" / "gearmand.pid").read_text())


@pytest.fixture
def host() -> Iterator[Host]:
    # the queue's and the pid file's directories, gearman's as on a host
    with gearman_tree("ij-restart-", "lib", "run") as top:
        yield Host(top)


def outcome(output: str, task: str) -> str:
    """ok, changed, skipping or fatal: what ansible-playbook printed for the role's task of that name."""
    match = re.search(r"(?:TASK|RUNNING HANDLER) \[gearman_server : " + re.escape(task) + r"\] \**\n(\w+)", output)
    assert match, f"task {task!r} not in the output"
    return match.group(1)


def rollback_queue_with_jobs(h: Host, jobs: int) -> None:
    """gearmand creates the queue (rollback journal, as before issue 15), jobs are queued, then a kill -9."""
    h.ctl("start")
    wait_port(h.port)
    for n in range(jobs):
        result = run(["gearman", "-h", "127.0.0.1", "-p", str(h.port), "-f", "ij_conv", "-b", "-u", f"c{n}", "--", "x"])
        assert result.returncode == 0, result.stdout
    os.kill(h.pid(), signal.SIGKILL)
    assert run(["python3", str(WAL_TOOL), str(h.db)]).stdout.strip() == "rollback"


def test_restart_path_converts_an_existing_queue_once(host: Host) -> None:
    rollback_queue_with_jobs(host, 20)
    host.ctl("start")
    first = host.restart_play()
    assert first.returncode == 0, first.stdout[-4000:]
    assert outcome(first.stdout, "Put the sqlite queue in WAL mode while gearmand is stopped") == "changed"
    # The steps of "Restart gearmand" (handlers/main.yml) in their order: queue move, stop, convert, start, wait.
    steps = [
        "Move the builtin queue's jobs before the restart",
        "Stop gearmand through the init-script wrapper (it waits for the process to end)",
        "Put the sqlite queue in WAL mode while gearmand is stopped",
        "Start gearmand through the init-script wrapper (after the conversion)",
        'Wait for gearmand to answer the admin "version" command',
        "Check that gearmand uses its sqlite queue in WAL mode",
    ]
    ran = re.findall(r"^(?:TASK|RUNNING HANDLER) \[gearman_server : (.*)\] \**$", first.stdout, re.MULTILINE)
    assert [step for step in ran if step in steps] == steps, ran
    assert run(["python3", str(WAL_TOOL), str(host.db), "--verify"]).stdout.strip() == "ok"
    assert queued(host.port, "ij_conv") == 20, "jobs lost by the conversion"
    gearman = pwd.getpwnam("gearman")
    for suffix in ("", "-wal", "-shm"):
        assert Path(f"{host.db}{suffix}").stat().st_uid == gearman.pw_uid, suffix

    second = host.restart_play()
    assert second.returncode == 0, second.stdout[-4000:]
    assert outcome(second.stdout, "Put the sqlite queue in WAL mode while gearmand is stopped") == "skipping"
    assert outcome(second.stdout, "Restart gearmand through the init-script wrapper") == "changed"
    assert queued(host.port, "ij_conv") == 20


def test_a_failed_conversion_fails_the_play_with_gearmand_running(host: Host) -> None:
    rollback_queue_with_jobs(host, 3)
    os.chown(host.db, 0, 0)  # the gearman user can read the queue, not write it: the conversion must fail
    host.db.chmod(0o644)
    host.ctl("start")
    result = host.restart_play()
    assert result.returncode != 0, result.stdout[-3000:]
    assert f"gearman_server: {host.db} (gearman_server_sqlite_db) could not be put in WAL mode" in result.stdout
    assert "readonly database" in result.stdout
    wait_port(host.port)
    assert queued(host.port, "ij_conv") == 3, "gearmand must run again on its unchanged queue"
    assert run(["python3", str(WAL_TOOL), str(host.db)]).stdout.strip() == "rollback"
