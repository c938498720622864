"""A real gearmand (Debian's /usr/sbin/gearmand) on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.processes import stop_process

GEARMAND = shutil.which("gearmand") or "/usr/sbin/gearmand"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def admin(port: int, command: str, timeout: float = 5.0) -> str:
    """Send one admin command and return the raw answer (up to the '.' line for list answers)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(command.encode() + b"\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith((b"OK", b"ERR")) and data.endswith(b"\n"):
                break
            if data.endswith(b"\n.\n") or data == b".\n":
                break
        return data.decode()


class Gearmand:
    """One gearmand process. ``start()`` returns once it answers the admin ``version`` command."""

    def __init__(
        self, workdir: Path, port: int | None = None, extra_args: Sequence[str] = (), verbose: str = "WARNING"
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.verbose = verbose
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"gearmand-{self.port}.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        if not os.path.exists(GEARMAND):
            raise RuntimeError(f"{GEARMAND} is missing: install Debian's gearman-job-server (make system-deps)")
        argv = [
            GEARMAND,
            "--listen=127.0.0.1",
            f"--port={self.port}",
            f"--log-file={self.log}",
            f"--verbose={self.verbose}",
            "--config-file=/dev/null",
            *self.extra_args,
        ]
        if os.geteuid() == 0:
            argv.append("--user=root")
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gearmand exited with {self.process.returncode}; see {self.log}")
            with contextlib.suppress(OSError):
                if admin(self.port, "version", timeout=1.0).startswith("OK"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"gearmand did not answer on port {self.port} within {timeout}s")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        stop_process(self.process, timeout, sig)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def running_gearmand(workdir: Path, extra_args: Sequence[str] = ()) -> Iterator[Gearmand]:
    server = Gearmand(workdir, extra_args=extra_args)
    server.start()
    try:
        yield server
    finally:
        server.stop()
