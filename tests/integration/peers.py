"""Real peers that no one here wrote: the gearman CLI worker and a PHP worker using the gearman extension."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.gearmand import admin

PHP_WORKER = Path(__file__).parent / "php" / "echo_worker.php"


def wait_for_workers(port: int, function: str, count: int = 1, timeout: float = 10.0) -> None:
    """Wait until gearmand lists ``count`` workers able to do ``function``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in admin(port, "status").splitlines():
            fields = line.split("\t")
            if fields[0] == function and len(fields) == 4 and int(fields[3]) >= count:
                return
        time.sleep(0.02)
    raise AssertionError(f"no worker registered {function!r} on port {port} within {timeout}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


@contextlib.contextmanager
def cli_worker(
    port: int, function: str, *command: str, extra: tuple[str, ...] = (), wait: bool = True
) -> Iterator[subprocess.Popen[bytes]]:
    """``gearman -w -f FUNCTION -- COMMAND``: a process per job, the original deployment's pattern.

    ``wait=False`` for a worker started with ``-c N`` over jobs already queued: it may be gone before it is seen.
    """
    gearman = shutil.which("gearman")
    assert gearman, "the gearman CLI is required (Debian gearman-tools; make system-deps installs it)"
    argv = [gearman, "-h", "127.0.0.1", "-p", str(port), "-w", "-f", function, *extra, "--", *command]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if wait:
            wait_for_workers(port, function)
        yield process
    finally:
        _stop(process)


@contextlib.contextmanager
def php_worker(
    address: str, script: Path = PHP_WORKER, function: str = "php_upper"
) -> Iterator[subprocess.Popen[bytes]]:
    """A PHP GearmanWorker script of ``tests/integration/php/`` (``HOST:PORT`` argument, prints "ready" once it has
    registered), until it serves ``function``."""
    php = shutil.which("php")
    assert php, "php-cli with php-gearman is required (make system-deps installs them)"
    process = subprocess.Popen([php, str(script), address], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n", f"the PHP worker {script.name} did not start"
        wait_for_workers(int(address.rsplit(":", 1)[1]), function)
        yield process
    finally:
        _stop(process)
