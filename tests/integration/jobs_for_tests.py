"""Jobs the worker integration tests run (imported by the worker processes through ``jobs_modules``)."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from islandora_job import current_job, job

_attempts: dict[str, int] = {}


@job("t.pid")
def pid() -> int:
    return os.getpid()


@job("t.slow")
def slow(seconds: float, marker: str = "") -> int:
    """Write ``marker`` + ".started", sleep, then append one line to ``marker`` (each run is counted)."""
    if marker:
        Path(marker + ".started").write_text(str(os.getpid()))
    time.sleep(seconds)
    if marker:
        with open(marker, "a") as file:
            file.write(f"{os.getpid()}\n")
    return os.getpid()


@job("t.hang", timeout=1)
def hang(marker: str) -> None:
    with open(marker, "a") as file:
        file.write("ran\n")
    time.sleep(3600)


@job("t.spin", timeout=1)
def spin() -> None:
    while True:
        pass


@job("t.gil_hog", timeout=1)
def gil_hog(marker: str) -> None:
    """Stuck in C code that holds the GIL: the regular expression engine backtracking for ever (2**40 steps)."""
    with open(marker, "a") as file:
        file.write("ran\n")
    re.match(r"(a+)+$", "a" * 40 + "b")


@job("t.flaky", retries=2, min_backoff=0.01, max_backoff=0.05)
def flaky(key: str, failures: int) -> str:
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] <= failures:
        raise RuntimeError(f"attempt {_attempts[key]} fails")
    return f"ok after {_attempts[key]} attempts (context says {current_job().attempt})"


@job("t.needs_file", retries=1, min_backoff=0.01, max_backoff=0.02)
def needs_file(path: str, done: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    with open(done, "a") as file:
        file.write("done\n")
    return "found"


@job("t.progress")
def progress() -> str:
    context = current_job()
    context.progress(1, 2)
    context.send_data("partial")
    context.progress(2, 2)
    return f"{context.handle}|{context.site}|{context.uid}"


@job("t.exit")
def exit_job() -> None:
    sys.exit(3)


@job("t.print")
def print_job() -> str:
    print("this goes to the log, not to the client")
    return "printed"


@job("t.unserialisable")
def unserialisable() -> Any:
    return object()


@job("t.segfault")
def segfault(marker: str) -> None:
    """Die like a C extension that crashed, the first time only (the marker file remembers)."""
    if not os.path.exists(marker):
        Path(marker).write_text("crashed once\n")
        os.kill(os.getpid(), signal.SIGSEGV)


@job("t.scalar")
def scalar(kind: str) -> object:
    """A scalar result by name, for the PHP echo rules seen from PHP (issue 11)."""
    return {"true": True, "false": False, "none": None, "int": -7, "float": 1e20, "tiny": 0.00001}[kind]
