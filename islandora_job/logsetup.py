"""Logging for the worker: one line per event on stderr (the journal), plain or JSON, with the PID.

A busy worker logs a line per job, thousands a second; one ``write(2)`` per line was 12% of a no-op job's time
(docs/benchmarks.md). So lines below WARNING are gathered and written together, at the latest
:data:`BATCH_SECONDS` after the first of them; a WARNING or worse writes at once, with everything before it,
so a failure is never held back and the order of lines is kept. A process killed with SIGKILL can lose at most
that last fraction of a second of INFO lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from typing import TextIO

#: The longest an INFO line waits before it is written.
BATCH_SECONDS = 0.2
#: Write at once when this much is waiting.
BATCH_BYTES = 64 * 1024

PLAIN_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes lines below WARNING in batches (see the module's docstring)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._size = 0
        self._due = threading.Event()
        self._closed = False
        threading.Thread(target=self._flush_when_due, name="log-flusher", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line)
            self._size += len(line)
            if record.levelno >= logging.WARNING or self._size >= BATCH_BYTES:
                self._write_pending()
            elif len(self._pending) == 1:
                self._due.set()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def close(self) -> None:
        self.flush()
        self._closed = True
        self._due.set()
        super().close()

    def _write_pending(self) -> None:
        if self._pending:
            text, self._pending, self._size = "".join(self._pending), [], 0
            try:
                self.stream.write(text)
            except (OSError, ValueError):
                return  # stderr gone (a closed pipe): nothing sensible to do with a log line
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def _flush_when_due(self) -> None:
        while not self._closed:
            self._due.wait()
            self._due.clear()
            time.sleep(BATCH_SECONDS)
            self.flush()


def configure(level: str = "INFO", json_lines: bool = False) -> None:
    handler = BatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
