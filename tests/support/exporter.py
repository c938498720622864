"""An ``islandora-job exporter`` process, and gearmand stand-ins that misbehave, for the exporter's tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.gearmand import free_port
from tests.support.processes import stop_process

CLI = [sys.executable, "-m", "islandora_job.cli.main"]


def fetch(url: str, timeout: float = 30.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return str(answer.read().decode("utf-8"))


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus exposition (labels in the order written), or None."""
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{inner}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


@contextlib.contextmanager
def running_exporter(args: Sequence[str], log: Path) -> Iterator[str]:
    """Start the exporter on a free port with ``args``; yields its base URL once ``/metrics`` answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*CLI, "exporter", "--listen", f"127.0.0.1:{port}", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the exporter exited with {process.returncode}: {log.read_text()}")
            with contextlib.suppress(OSError):
                fetch(url + "/metrics", timeout=30)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the exporter did not answer within 30s: {log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        stop_process(process, 10)


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


class HostileServer:
    """A port that answers the admin protocol badly: ``trickle`` (a byte every 0.2 s, never a newline),
    ``flood`` (valid status lines without end), ``huge`` (one line that never ends, as fast as it is read).

    Each connection is served at most ``lifetime`` seconds; ``close()`` stops everything.
    """

    def __init__(self, mode: str, lifetime: float = 60.0) -> None:
        self.mode = mode
        self.lifetime = lifetime
        self.port = free_port()
        self._stop = threading.Event()
        self._count = threading.Lock()
        #: Connections open now, and the most ever open at once (a client that leaves exchanges hanging piles up).
        self.open = 0
        self.max_open = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        until = time.monotonic() + self.lifetime
        block = {
            "flood": b"".join(f"ij_flood_{i}\t1\t0\t0\n".encode() for i in range(2000)),
            "huge": b"x" * 65536,
        }.get(self.mode, b"f")
        with self._count:
            self.open += 1
            self.max_open = max(self.max_open, self.open)
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            conn.recv(1024)
            while not self._stop.is_set() and time.monotonic() < until:
                conn.sendall(block)
                if self.mode == "trickle":
                    time.sleep(0.2)
        with self._count:
            self.open -= 1

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
