"""The ``islandora-job`` client commands as operators run them: real processes, exit codes, stdout, stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

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
                                                    "NORMAL", "LOW", "NOTE"]  # fmt: skip
    assert [gearmand.address, "later", "1", "0", "0", "0", "0", "1", "NO", "WORKER"] in [
        line.split() for line in table.stdout.splitlines()
    ]
    as_json = json.loads(run("status", "--json", "--server", gearmand.address).stdout)
    assert as_json[0]["server"] == gearmand.address and as_json[0]["error"] is None and as_json[0]["up"] is True
    assert {"function": "later", "queued": 1, "running": 0, "waiting": 1, "workers": 0, "high": 0, "normal": 0,
            "low": 1, "no_worker": True} in as_json[0]["functions"]  # fmt: skip


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
    assert cancelled.returncode == 0
    assert cancelled.stdout == f"marked {handle} cancelled on {gearmand.address}: gearmand only marks the job; it " \
        "drops it when a worker reaches it, and status counts it until then\n"  # fmt: skip
    # what the output says: gearmand 1.1.20 keeps counting a cancelled job until a worker reaches it
    with AdminClient(gearmand.address) as admin:
        assert [(s.total, s.workers) for s in admin.status() if s.function == "c"] == [(1, 0)]
    unknown = run("cancel", "H:nowhere:1", "--server", gearmand.address)
    assert unknown.returncode == 1 and "no server has a queued job" in unknown.stderr


def test_status_watch_refreshes_until_interrupted(gearmand: Gearmand) -> None:
    env = {**os.environ, "ISLANDORA_JOB_SERVERS": gearmand.address}
    watcher = subprocess.Popen(
        [CLI, "status", "--watch", "--interval", "0.2"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert watcher.stdout is not None
        seen = ""
        while seen.count("Ctrl-C to stop") < 2:  # two refreshes, however slow the machine
            line = watcher.stdout.readline()
            assert line, seen
            seen += line
        watcher.send_signal(signal.SIGINT)
        out, _ = watcher.communicate(timeout=10)
    finally:
        watcher.kill()
    assert watcher.returncode == 0
    assert (seen + out).count("Ctrl-C to stop") >= 2, seen + out


def test_status_marks_functions_waiting_without_a_worker_and_servers_down(gearmand: Gearmand) -> None:
    """Issue 14: the failure that piled up the original heartbeat unnoticed is marked, and so is a server down."""
    down = f"127.0.0.1:{free_port()}"
    assert run("submit", "orphan", "--background", "--server", gearmand.address).returncode == 0
    with cli_worker(gearmand.port, "served", "sleep", "5"):
        assert run("submit", "served", "--background", "--server", gearmand.address).returncode == 0
        assert run("submit", "served", "--background", "--server", gearmand.address).returncode == 0
        table = run("status", "--server", gearmand.address, "--server", down)
        as_json = json.loads(run("status", "--json", "--server", gearmand.address, "--server", down).stdout)
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in table.stdout.splitlines()[1:]}
    assert rows[(gearmand.address, "orphan")] == ["1", "0", "0", "0", "1", "0", "NO", "WORKER"]
    assert rows[(gearmand.address, "served")][-1] == "0"  # jobs and a worker: no note (last is LOW)
    assert table.stdout.splitlines()[-1].startswith(down) and table.stdout.splitlines()[-1].endswith("DOWN")
    assert table.returncode == 3 and down in table.stderr
    marks = {(e["server"], f["function"]): f["no_worker"] for e in as_json for f in e["functions"]}
    assert marks[(gearmand.address, "orphan")] is True and marks[(gearmand.address, "served")] is False
    assert [e["up"] for e in as_json] == [True, False]


def test_a_foreground_submit_says_at_once_that_no_worker_serves_the_function_then_waits(gearmand: Gearmand) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}
    waiting = subprocess.Popen(
        [CLI, "submit", "late", "hello", "--server", gearmand.address, "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert waiting.stderr is not None
        said = waiting.stderr.readline()  # before any worker exists: it must not wait for one to say this
        assert said == f"islandora-job: no worker serves function 'late' ({gearmand.address}); waiting until one " \
            "registers\n"  # fmt: skip
        assert waiting.poll() is None  # still waiting, as asked
        with cli_worker(gearmand.port, "late", "cat"):
            out, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 0 and json.loads(out)["args"] == ["hello"] and err == ""
    with cli_worker(gearmand.port, "echo", "cat"):
        served = run("submit", "echo", "x", "--server", gearmand.address)
    assert served.returncode == 0 and served.stderr == ""  # nothing said when a worker serves it


@pytest.mark.parametrize("text", ['{"dsid":', "[1, 2", '  {"a": }', "[nan]"])
def test_an_arg_that_looks_like_json_but_is_not_is_a_usage_error(gearmand: Gearmand, text: str) -> None:
    """Issue 14: '{"dsid":' was silently sent as a string; now exit 2, nothing submitted, unless --string."""
    refused = run("submit", "j", "ok", text, "--background", "--server", gearmand.address)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith(f"islandora-job: ARG 2 {text!r}: looks like JSON but is not valid JSON (")
    assert refused.stderr.endswith("); --string sends it as text\n")
    with AdminClient(gearmand.address) as admin:
        assert "j" not in {s.function for s in admin.status()}
    with cli_worker(gearmand.port, "j", "cat"):
        sent = run("submit", "j", "42", text, "--string", "--server", gearmand.address)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["args"] == ["42", text]  # --string: every ARG as text


def test_status_watch_into_head_ends_cleanly(gearmand: Gearmand) -> None:
    """``status --watch | head``: the reader leaving is the normal end of a watch, not an error."""
    command = f"{CLI} status --watch --interval 0.05 --server {gearmand.address} | head -n 3"
    pipeline = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=30)
    watcher = subprocess.Popen(
        [CLI, "status", "--watch", "--interval", "0.05", "--server", gearmand.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert watcher.stdout is not None and watcher.stderr is not None
    watcher.stdout.readline()
    watcher.stdout.close()  # as head does once it has its lines
    assert watcher.wait(timeout=30) == 0
    assert watcher.stderr.read() == b""
    assert (pipeline.returncode, len(pipeline.stdout.splitlines()), pipeline.stderr) == (0, 3, "")
