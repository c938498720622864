"""The supervisor's cleanup of command processes when it or the command misbehaves (issue 10, attack items 5, 6).

From H9's attack branch (tests/integration/test_attack_pool.py): SIGKILL of the supervisor must take its worker
processes and their running commands with it (no systemd to clean up in init-script mode), and a process a command
detaches with ``setsid`` must not outlive the job by more than a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from islandora_job.exit_codes import SUPERVISOR_GONE
from tests.integration.test_bridge_faults import assert_group_gone, leaky_pool, started_command
from tests.support.gearmand import Gearmand
from tests.support.peers import PlainClient, payload, wait_for
from tests.support.pool import running_pool


def test_sigkill_of_the_supervisor_while_a_command_runs_leaves_no_process(tmp_path: Path, gearmand: Gearmand) -> None:
    """SIGKILL of the supervisor (an OOM kill, a `kill -9` by an operator) while a command job runs: its worker
    processes and the command's process group must not live on, re-parented to PID 1, with no one to stop them."""
    with leaky_pool(tmp_path, gearmand, timeout=60) as (pool, pid_file):
        workers = pool.children()
        with started_command(pool, gearmand, pid_file) as pgid:
            pool.signal(signal.SIGKILL)
            pool.wait(10)
            try:
                wait_for(
                    lambda: not [p for p in workers if Path(f"/proc/{p}").exists()],
                    timeout=10,
                    message="the worker processes gone",
                )
            finally:
                for pid in workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            assert_group_gone(pgid)


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if marker.encode() in cmdline and state != b"Z":
                found.append(int(entry))
    return found


def test_a_process_a_command_detached_with_setsid_does_not_outlive_the_job(tmp_path: Path, gearmand: Gearmand) -> None:
    """A command job that starts `setsid sleep` and exits 0: the sleep leaves the command's process group, so the
    bridge's kill of the group misses it; it is re-parented to the supervisor (the child subreaper), whose sweep
    runs only when one of its own children dies. With long-lived worker processes that never comes, and the
    detached process lives on. It must be gone within seconds of the job's end, as for the other paths."""
    marker = "4317.25"  # `sleep 4317.25`: found by its argv, killed at the end whatever happens
    tail = (
        '[[command_jobs]]\nname = "detaches"\n'
        f'argv = ["sh", "-c", "setsid sleep {marker} & echo started"]\ntimeout = 10\n'
    )
    env = {"ISLANDORA_JOB_DEAD_LETTERS_PATH": ""}
    try:
        with running_pool(tmp_path, [gearmand.address], concurrency=1, tail=tail, env=env) as pool:
            pool.wait_registered(gearmand.port, "detaches", count=1)
            with PlainClient(gearmand.address, timeout=20) as client:
                answer = client.submit("detaches", payload("x"))
            assert answer.ok and answer.data == b"started\n"
            wait_for(lambda: not _processes_with(marker), timeout=10, message="the detached sleep gone")
    finally:
        for pid in _processes_with(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_worker_process_whose_supervisor_died_before_it_asked_exits_at_once() -> None:
    """The race: the supervisor dies between the fork and the child's prctl, so no signal will come. The child
    sees that its parent is not the supervisor it was given and exits at once (it would otherwise wait on stdin)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    child = subprocess.run(
        [sys.executable, "-m", "islandora_job.worker.child", "--supervisor-pid", str(dead.pid)],
        stdin=subprocess.PIPE,  # kept open: only the supervisor check can end it
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert child.returncode == SUPERVISOR_GONE, child.stderr
    assert f"supervisor {dead.pid} is gone".encode() in child.stderr


def test_a_stray_sigusr1_does_not_stop_a_worker_process(tmp_path: Path, gearmand: Gearmand) -> None:
    """SIGUSR1 is the signal the kernel sends on the supervisor's death; sent by hand while the supervisor lives,
    it changes nothing: the same process serves the next job."""
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "t.pid", count=1)
        [worker] = pool.children()
        os.kill(worker, signal.SIGUSR1)
        with PlainClient(gearmand.address, timeout=15) as client:
            assert client.call("t.pid").data == str(worker).encode()
        assert pool.children() == [worker]
        assert "is gone" not in pool.log_text()
