"""``islandora-job submit`` shows a job's progress (WORK_STATUS) as a bar on stderr when stderr is a terminal, and
stdout stays the result's (issue 14). The reports come from a worker we did not write: a PHP GearmanWorker calling
``sendStatus``. The terminal is a real pseudo-terminal."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from islandora_job.client import JobClient
from tests.integration.peers import php_worker
from tests.support.gearmand import Gearmand

PHP_STATUS_WORKER = Path(__file__).parent / "php" / "status_worker.php"
CLI = str(Path(sys.executable).with_name("islandora-job"))


def php_status_worker(address: str) -> contextlib.AbstractContextManager[object]:
    return php_worker(address, PHP_STATUS_WORKER, "php_progress")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}


def test_the_client_hands_each_progress_report_to_its_caller(gearmand: Gearmand) -> None:
    reports: list[tuple[int, int]] = []
    with php_status_worker(gearmand.address), JobClient([gearmand.address]) as client:
        result = client.submit("php_progress", timeout=20, on_status=lambda n, d: reports.append((n, d)))
    assert result == b"done"
    assert reports == [(1, 4), (2, 4), (4, 4)]


def test_submit_draws_a_bar_on_a_terminal_and_keeps_stdout_for_the_result(gearmand: Gearmand) -> None:
    primary, secondary = pty.openpty()
    try:
        with php_status_worker(gearmand.address):
            process = subprocess.Popen(
                [CLI, "submit", "php_progress", "--server", gearmand.address, "--timeout", "20"],
                stdout=subprocess.PIPE,
                stderr=secondary,
                env=_env(),
            )
            os.close(secondary)
            secondary = -1
            terminal = b""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                ready, _, _ = select.select([primary], [], [], 0.5)
                if ready:
                    try:
                        chunk = os.read(primary, 4096)
                    except OSError:  # the pty's other end is closed: the CLI has exited
                        break
                    if not chunk:
                        break
                    terminal += chunk
                elif process.poll() is not None:
                    break
            out, _ = process.communicate(timeout=20)
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert process.returncode == 0
    assert out == b"done"  # the result alone, as for any pipe
    text = terminal.decode()
    assert "\r[#######-----------------------] 1/4  25%" in text, text
    assert "\r[###############---------------] 2/4  50%" in text, text
    assert "\r[##############################] 4/4 100%" in text, text
    assert text.endswith("\r\n")  # the bar's line is ended (the pty turns "\n" into "\r\n")


def test_submit_draws_nothing_when_stderr_is_not_a_terminal(gearmand: Gearmand) -> None:
    with php_status_worker(gearmand.address):
        done = subprocess.run(
            [CLI, "submit", "php_progress", "--server", gearmand.address, "--timeout", "20"],
            capture_output=True,
            env=_env(),
            timeout=30,
        )
    assert done.returncode == 0 and done.stdout == b"done"
    assert done.stderr == b""
