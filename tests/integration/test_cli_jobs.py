"""The ``islandora-job`` client commands as operators run them: real processes, exit codes, stdout, stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from islandora_job.admin import AdminClient
from tests.integration.peers import cli_worker, php_worker
from tests.support.gearmand import Gearmand, free_port

CLI = str(Path(sys.executable).with_name("islandora-job"))


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}
    full_env.update(env or {})
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, env=full_env)


def test_submit_prints_the_result(gearmand: Gearmand) -> None:
    with cli_worker(gearmand.port, "echo", "cat"):
        done = run("submit", "echo", "42", "islandora:1", '{"a": [1]}', "--site", "http://s", "--uid", "1",
                   "--server", gearmand.address)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "func": "echo",
        "args": [42, "islandora:1", {"a": [1]}],
        "site": "http://s",
        "uid": 1,
    }


def test_submit_failure_exits_1_with_the_reason(gearmand: Gearmand) -> None:
    with php_worker(gearmand.address):
        failed = run("submit", "php_fail", "--server", gearmand.address)
        raised = run("submit", "php_exception", "--server", gearmand.address)
    assert failed.returncode == 1 and "failed" in failed.stderr and failed.stdout == ""
    assert raised.returncode == 1 and "php says no" in raised.stderr


def test_background_prints_the_handle_and_status_shows_it(gearmand: Gearmand) -> None:
    done = run("submit", "later", "x", "--background", "--priority", "low", "--server", gearmand.address)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("H:")
    table = run("status", "--server", gearmand.address)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["SERVER", "FUNCTION", "WAITING", "RUNNING", "WORKERS", "HIGH",
                                                    "NORMAL", "LOW"]  # fmt: skip
    assert [gearmand.address, "later", "1", "0", "0", "0", "0", "1"] in [
        line.split() for line in table.stdout.splitlines()
    ]
    as_json = json.loads(run("status", "--json", "--server", gearmand.address).stdout)
    assert as_json[0]["server"] == gearmand.address and as_json[0]["error"] is None
    assert {"function": "later", "queued": 1, "running": 0, "waiting": 1, "workers": 0, "high": 0, "normal": 0,
            "low": 1} in as_json[0]["functions"]  # fmt: skip


def test_servers_from_the_environment(gearmand: Gearmand) -> None:
    done = run("submit", "envjob", "--background", env={"ISLANDORA_JOB_SERVERS": gearmand.address})
    assert done.returncode == 0, done.stderr
    with AdminClient(gearmand.address) as admin:
        assert "envjob" in {s.function for s in admin.status()}


def test_dedupe_and_unique(gearmand: Gearmand) -> None:
    handles = {
        run("submit", "d", "1", "--background", "--dedupe", "--server", gearmand.address).stdout for _ in range(3)
    }
    assert len(handles) == 1
    too_long = run("submit", "d", "--background", "--unique", "k" * 64, "--server", gearmand.address)
    assert too_long.returncode == 2 and "at most 63" in too_long.stderr


def test_unreachable_exits_3_naming_every_address() -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    done = run("submit", "x", "--server", dead[0], "--server", dead[1])
    assert done.returncode == 3
    assert all(address in done.stderr for address in dead)
    assert "Traceback" not in done.stderr
    for command in (["status"], ["workers"], ["version"], ["cancel", "H:x:1"]):
        other = run(*command, "--server", dead[0])
        assert other.returncode == 3, command
        assert "Traceback" not in other.stderr


def test_bad_usage_exits_2() -> None:
    done = run("submit", "x", "--priority", "asap")
    assert done.returncode == 2 and done.stderr.startswith("islandora-job submit: argument --priority: invalid choice")
    assert done.stderr.count("\n") == 1


def test_timeout_exits_1(gearmand: Gearmand) -> None:
    done = run("submit", "nobody", "--timeout", "0.3", "--server", gearmand.address)
    assert done.returncode == 1 and "timed out" in done.stderr


def test_workers_version_and_cancel(gearmand: Gearmand) -> None:
    with cli_worker(gearmand.port, "echo", "cat"):
        workers = run("workers", "--json", "--server", gearmand.address)
    assert workers.returncode == 0
    [entry] = json.loads(workers.stdout)
    assert [w["functions"] for w in entry["workers"]] == [["echo"]]
    version = run("version", "--server", gearmand.address)
    assert version.returncode == 0 and version.stdout.strip() == f"{gearmand.address}\t1.1.20+ds"
    handle = run("submit", "c", "--background", "--server", gearmand.address).stdout.strip()
    cancelled = run("cancel", handle, "--server", gearmand.address)
    assert cancelled.returncode == 0 and handle in cancelled.stdout
    unknown = run("cancel", "H:nowhere:1", "--server", gearmand.address)
    assert unknown.returncode == 1 and "no server has a queued job" in unknown.stderr


def test_status_watch_refreshes_until_interrupted(gearmand: Gearmand) -> None:
    env = {**os.environ, "ISLANDORA_JOB_SERVERS": gearmand.address}
    watcher = subprocess.Popen(
        [CLI, "status", "--watch", "--interval", "0.2"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert watcher.stdout is not None
        time.sleep(1.0)
        watcher.send_signal(signal.SIGINT)
        out, _ = watcher.communicate(timeout=10)
    finally:
        watcher.kill()
    assert watcher.returncode == 0
    assert out.count("Ctrl-C to stop") >= 2, out
