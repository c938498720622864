"""Writing the command's output: one error for a stdout that is closed or full, whatever the sub-command."""

from __future__ import annotations

import contextlib
import os
import sys

from islandora_job.errors import IslandoraJobError


class OutputFailed(IslandoraJobError):
    """stdout (or stderr) is closed or full: the command's work is done, its output is lost (exit code 5)."""


def write_result(data: bytes) -> None:
    """A job's output on stdout: the bytes as they are for a pipe or a file, text for a terminal.

    For a terminal the text goes through ``sys.stdout``, which the entry point has wrapped to escape control
    characters; a closed stdout (``sys.stdout`` is None when fd 1 was closed at start) or a full one raises
    :class:`OutputFailed`.
    """
    stream = sys.stdout
    if stream is None:
        raise OutputFailed("stdout is closed")
    try:
        if stream.isatty():
            text = data.decode("utf-8", "replace")
            stream.write(text if text.endswith("\n") else text + "\n")
        else:
            stream.flush()
            stream.buffer.write(data)
        stream.flush()
    except OSError as exc:
        raise OutputFailed(f"cannot write to stdout: {exc}") from exc


def silence_stdout() -> None:
    """After a failed write, point fd 1 at /dev/null so that the interpreter's own flush at exit stays quiet."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
