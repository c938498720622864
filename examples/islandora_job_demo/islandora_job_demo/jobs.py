"""Demo jobs. Submit them with ``islandora-job submit islandora_job_demo.add 2 3`` (prints 5)."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from islandora_job import Fail, current_job, job


@job("islandora_job_demo.echo")
def echo(*args: Any) -> Any:
    """Return the arguments: one argument as itself, several as a JSON list."""
    return args[0] if len(args) == 1 else list(args)


@job("islandora_job_demo.add")
def add(*numbers: float) -> float:
    return sum(numbers)


@job("islandora_job_demo.fail")
def fail(reason: str = "failed on purpose") -> None:
    """Fail plainly: the client gets WORK_FAIL, as with a non-zero exit of the original router."""
    raise Fail(reason)


@job("islandora_job_demo.raise")
def raise_error(message: str = "raised on purpose") -> None:
    """Raise: the client gets WORK_EXCEPTION with the message (or WORK_FAIL if it did not ask for exceptions)."""
    raise RuntimeError(message)


@job("islandora_job_demo.sleep", timeout=3600)
def sleep(seconds: float = 1.0) -> str:
    """Sleep, reporting progress every tenth of the time."""
    context = current_job()
    steps = 10
    for step in range(steps):
        context.progress(step, steps)
        time.sleep(seconds / steps)
    context.progress(steps, steps)
    return f"slept {seconds}"


@job("islandora_job_demo.write_file")
def write_file(path: str, text: str) -> str:
    """Write ``text`` to ``path`` atomically (a temporary file renamed over it); returns the path."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".islandora_job_demo.")
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)
    return path


@job("islandora_job_demo.raw_upper", payload="raw")
def raw_upper(data: bytes) -> bytes:
    """A raw job: the bytes of any client (``gearman -f islandora_job_demo.raw_upper hello``), upper-cased."""
    return data.upper()
