"""Faults of the command bridge and of payloads, end to end: a real gearmand, a real worker pool, real processes.

Issue 10: a bad uid killed worker processes; a timed-out or killed command left its process tree behind; a payload's
``func`` picked another job than its Gearman function's; a deeply nested return value killed the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from islandora_job import exit_codes
from islandora_job.worker.deadletters import DeadLetterStore
from tests.support.gearmand import Gearmand
from tests.support.peers import PlainClient, payload, wait_for
from tests.support.pool import REPO, Pool, running_pool

FAKE_ROUTER = Path(__file__).resolve().parents[1] / "unit" / "fake_router.py"
PHP_CLIENT = Path(__file__).parent / "php" / "func_override_client.php"
MODULES = ("tests.integration.jobs_for_tests", "tests.integration.bridge_jobs")
#: The issue's reproduction: a command that leaves a background child, in its own session. It writes its process
#: group id (its pid: the bridge starts it as a session leader) to the file given as $0, and runs only once: a
#: requeued job (its worker process was killed) ends at once instead of waiting for a warm stop.
LEAKY = 'test -e "$0.ran" && exit 0; touch "$0.ran"; echo $$ > "$0"; sleep 41 & sleep 42'


def _command_job(name: str, argv: list[str], timeout: float, extra: str = "") -> str:
    return f"[[command_jobs]]\nname = {json.dumps(name)}\nargv = {json.dumps(argv)}\ntimeout = {timeout}\n{extra}"


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


@contextlib.contextmanager
def leaky_pool(tmp_path: Path, gearmand: Gearmand, timeout: float) -> Iterator[tuple[Pool, Path]]:
    """A pool of one process serving ``leaky`` (the LEAKY command); yields it and the command's pgid file."""
    pid_file = tmp_path / "leaky.pgid"
    tail = _command_job("leaky", ["sh", "-c", LEAKY, str(pid_file)], timeout)
    # dead letters disabled, as in the reproduction (recording one is no excuse for a leak)
    env = {"ISLANDORA_JOB_DEAD_LETTERS_PATH": ""}
    with running_pool(tmp_path, [gearmand.address], concurrency=1, tail=tail, env=env) as pool:
        pool.wait_registered(gearmand.port, "leaky", count=1)
        yield pool, pid_file


@contextlib.contextmanager
def started_command(pool: Pool, gearmand: Gearmand, pid_file: Path) -> Iterator[int]:
    """Submit ``leaky`` in the background; yields its process group once both sleeps run. Kills it afterwards, so
    a failing test (today's main) leaves nothing behind either."""
    with PlainClient(gearmand.address) as client:
        client.background("leaky", payload("x"))
    pgid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), message="the command's pgid"))
    wait_for(lambda: len(group_members(pgid)) == 3, message="sh and its two sleeps")
    try:
        yield pgid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def assert_group_gone(pgid: int, timeout: float = 5.0) -> None:
    """Fail if a process of the group is still alive after ``timeout``; kill the group then, so that a failing
    test (today's main) leaves nothing behind."""
    try:
        wait_for(lambda: not group_members(pgid), timeout=timeout, message=f"process group {pgid} gone")
    except AssertionError:
        survivors = group_members(pgid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        raise AssertionError(f"process group {pgid} survived: {survivors}") from None


def test_a_bad_uid_fails_the_job_and_the_process_lives(tmp_path: Path, gearmand: Gearmand) -> None:
    tail = _command_job(
        "bridged",
        [sys.executable, str(FAKE_ROUTER), "--user={uid}"],
        5,
        "allowed_uids = [1]\n",
    )
    with running_pool(tmp_path, [gearmand.address], concurrency=1, tail=tail, modules=MODULES) as pool:
        pool.wait_registered(gearmand.port, "bridged", count=1)
        [child] = pool.children()
        with PlainClient(gearmand.address, timeout=15) as client:
            for uid in ("--5", "\u00b9", "9" * 5000):
                answer = client.submit("bridged", payload("argv", uid=uid))
                assert not answer.ok
            assert client.submit("bridged", payload("argv", uid="1")).data == b'["--user=1"]'
            assert client.call("t.pid").data == str(child).encode()  # the same process served them all
        log = pool.wait_log("uid '--5' is not a user id", "uid '\u00b9' is not a user id", "(5000 characters)")
        assert "Traceback" not in log and "died" not in log
        assert pool.children() == [child]
        letters = DeadLetterStore(str(pool.dead_letters)).list(function="bridged")
        assert len(letters) == 3 and all("is not a user id" in letter.error for letter in letters)


def test_the_watchdog_kills_a_timed_out_commands_process_group(tmp_path: Path, gearmand: Gearmand) -> None:
    with leaky_pool(tmp_path, gearmand, timeout=2) as (pool, pid_file):
        with PlainClient(gearmand.address) as client:
            answer = client.submit("leaky", payload("x"))
        assert not answer.ok
        assert_group_gone(int(pid_file.read_text()))
        pool.wait_log("outcome=timeout")


def test_the_watchdog_alone_kills_the_group_without_a_supervisor(tmp_path: Path, gearmand: Gearmand) -> None:
    # one worker process started bare (no supervisor, so no subreaper): only its watchdog can kill the group
    pid_file = tmp_path / "leaky.pgid"
    settings = {
        "servers": [gearmand.address],
        "entry_points": False,
        "dead_letters": {"path": ""},
        "command_jobs": [{"name": "leaky", "argv": ["sh", "-c", LEAKY, str(pid_file)], "timeout": 2}],
    }
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen([sys.executable, "-m", "islandora_job.worker.child"], stdin=subprocess.PIPE, env=env)
    assert worker.stdin is not None
    try:
        worker.stdin.write(json.dumps({"source": "test", "settings": settings}).encode() + b"\n")
        worker.stdin.flush()
        with PlainClient(gearmand.address) as client:
            assert not client.submit("leaky", payload("x")).ok
        assert worker.wait(10) == exit_codes.HUNG_JOB
        assert_group_gone(int(pid_file.read_text()))
    finally:
        worker.kill()
        worker.wait()


def test_the_stuck_job_backstop_kills_the_commands_process_group(tmp_path: Path, gearmand: Gearmand) -> None:
    # a frozen worker process (SIGSTOP): its watchdog cannot run, so the supervisor kills it 5 s past the limit
    with leaky_pool(tmp_path, gearmand, timeout=1) as (pool, pid_file):
        [child] = pool.children()
        with started_command(pool, gearmand, pid_file) as pgid:
            os.kill(child, signal.SIGSTOP)
            pool.wait_log(f"worker process {child} is still in a job", timeout=15)
            assert_group_gone(pgid)
        pool.wait_log("left behind by a worker process's commands")


def test_a_worker_process_killed_with_sigkill_leaves_no_command_behind(tmp_path: Path, gearmand: Gearmand) -> None:
    with leaky_pool(tmp_path, gearmand, timeout=60) as (pool, pid_file):
        [child] = pool.children()
        with started_command(pool, gearmand, pid_file) as pgid:
            os.kill(child, signal.SIGKILL)  # runs no code: only the supervisor can clean up
            assert_group_gone(pgid)
        pool.wait_log(f"worker process {child} died (killed by SIGKILL)")
        pool.wait_registered(gearmand.port, "leaky", count=1)  # and the pool serves on


def test_a_cold_stop_leaves_no_command_behind(tmp_path: Path, gearmand: Gearmand) -> None:
    with leaky_pool(tmp_path, gearmand, timeout=60) as (pool, pid_file):
        with started_command(pool, gearmand, pid_file) as pgid:
            pool.signal(signal.SIGINT)
            assert pool.wait(20) == 1
            assert_group_gone(pgid, timeout=1.0)  # gone before the supervisor exited


def test_a_payload_func_cannot_pick_another_job_and_a_command_gets_func_unchanged(
    tmp_path: Path, gearmand: Gearmand
) -> None:
    # from outside: PHP's gearman extension, as the Drupal module submits
    tail = _command_job("ijh", [sys.executable, str(FAKE_ROUTER)], 10)
    with running_pool(tmp_path, [gearmand.address], concurrency=1, tail=tail) as pool:
        pool.wait_registered(gearmand.port, "ijh", count=1)
        run = subprocess.run(["php", str(PHP_CLIENT), str(gearmand.port)], capture_output=True, timeout=60, check=True)
        seen = json.loads(run.stdout)
        codes = seen["constants"]
        assert seen["override"]["code"] == codes["WORK_FAIL"]  # was SUCCESS with "5": add ran on echo's function
        assert seen["honest"] == {"result": "5", "code": codes["SUCCESS"]}
        assert seen["heartbeat"] == {"result": "1", "code": codes["SUCCESS"]}
        pool.wait_log(
            "payload func 'islandora_job_demo.add' names job 'islandora_job_demo.add', which Gearman function "
            "'islandora_job_demo.echo' does not serve"
        )


def test_a_deeply_nested_result_is_a_dead_letter_and_the_process_lives(tmp_path: Path, gearmand: Gearmand) -> None:
    with running_pool(tmp_path, [gearmand.address], concurrency=1, modules=MODULES) as pool:
        pool.wait_registered(gearmand.port, "t.deep", count=1)
        [child] = pool.children()
        with PlainClient(gearmand.address, timeout=15) as client:
            assert not client.call("t.deep", 5000).ok
            assert client.call("t.pid").data == str(child).encode()
        [letter] = DeadLetterStore(str(pool.dead_letters)).list(function="t.deep")
        assert letter.error == "job returned a value nested too deeply to encode as JSON"
        assert pool.children() == [child]
