"""Writing the command's output: one error for a stdout that is closed or full, whatever the sub-command."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Final, TextIO

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


class JobProgress:
    """A foreground job's progress reports (WORK_STATUS) as a bar redrawn on stderr, when stderr is a terminal.

    stdout stays the result's alone, so ``islandora-job submit ... > out`` on a terminal shows the bar and keeps the
    file clean; on a pipe or a log nothing is drawn (a line per report would bury the result). The bar is written to
    the raw stream: the entry point's escaping wrapper would print its carriage return as ``\\r``.
    """

    WIDTH: Final = 30

    def __init__(self, stream: TextIO | None) -> None:
        self.stream: TextIO | None = getattr(stream, "raw_stream", None) or stream
        try:
            self.enabled = stream is not None and stream.isatty()
        except (OSError, ValueError):
            self.enabled = False
        self.drawn = False

    def __call__(self, numerator: int, denominator: int) -> None:
        if not self.enabled:
            return
        if denominator > 0:
            share = min(max(numerator / denominator, 0.0), 1.0)
            filled = int(self.WIDTH * share)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self._write(f"\r[{bar}] {numerator}/{denominator} {share:4.0%}")
        else:  # a job that reports a count without a total
            self._write(f"\r{numerator} done")
        self.drawn = True

    def end(self) -> None:
        """End the bar's line, so that what follows (an error, the shell's prompt) starts on a line of its own."""
        if self.drawn:
            self._write("\n")
            self.drawn = False

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        with contextlib.suppress(OSError, ValueError):  # a lost terminal must not fail the job's result
            self.stream.write(text)
            self.stream.flush()
