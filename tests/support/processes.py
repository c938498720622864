"""Stopping a process a test started: politely first, then for certain."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any], timeout: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` (if it still runs) and wait up to ``timeout`` seconds; then SIGKILL it and reap it."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
