"""Logging for the worker: one line per event on stderr (the journal), plain or JSON, with the PID.

Text that comes from the network (job exception texts, function names, client ids, payloads) is logged with its
control characters escaped (:func:`escape_controls`): an ESC sequence must not reach an operator's terminal, and a
newline must not forge a log line. A traceback keeps its line breaks, with every line after the first indented,
so that each record still starts at the left margin with its time stamp and nothing else does.

A busy worker logs a line per job, thousands a second, and one ``write(2)`` per line is a large share of a no-op
job's time (docs/worker.md, section ``[logging]``, has the measurement). So lines below WARNING are gathered and
written together, at the latest :data:`BATCH_SECONDS` after the first of them; a WARNING or worse writes at once,
with everything before it, so a failure is never held back and the order of lines is kept. A process killed with
SIGKILL can lose at most that last fraction of a second of INFO lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import threading
import time
from typing import Any, Final, TextIO

#: The longest an INFO line waits before it is written.
BATCH_SECONDS = 0.2
#: Write at once when this much is waiting.
BATCH_BYTES = 64 * 1024

PLAIN_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

#: C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidirectional overrides and
#: isolates (which reorder what a terminal shows).
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT.get(char) or f"\\u{ord(char):04x}"


def escape_controls(text: str, keep: str = "") -> str:
    """``text`` with control characters written as escapes (``\\n``, ``\\u001b``), except those in ``keep``.

    The escapes are valid inside a JSON string and mean the same character there, so JSON output can be escaped
    as a whole without changing what it decodes to.
    """
    if keep:
        return _CONTROLS.sub(lambda match: match.group() if match.group() in keep else _escape(match), text)
    return _CONTROLS.sub(_escape, text)


class PlainFormatter(logging.Formatter):
    """:data:`PLAIN_FORMAT`, one record per line: the message escaped, a traceback indented under it.

    The line is put together by hand, not through logging's ``%``-template machinery: a busy worker writes a line
    per job, and the generic path (the template, and a ``localtime`` and ``strftime`` per record for the time) was
    half the cost of formatting it. The time stamp's seconds are formatted once a second. The result is the same
    text, character for character (``tests/unit/test_logsetup.py`` compares the two).
    """

    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT)
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        record.message = message = escape_controls(record.getMessage())
        second = int(record.created)
        if second != self._second:  # the time as Formatter.formatTime writes it, without its milliseconds
            self._stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        line = f"{self._stamp},{int(record.msecs):03d} {record.levelname} [{record.process}] {record.name}: {message}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line.replace("\n", "\n    ")

    def formatException(self, ei: Any) -> str:
        return escape_controls(super().formatException(ei), keep="\n")

    def formatStack(self, stack_info: str) -> str:
        return escape_controls(super().formatStack(stack_info), keep="\n")


#: The LogRecord attribute that carries a line's structured fields (see :func:`fields`).
FIELDS_ATTRIBUTE: Final = "islandora_job_fields"
#: Keys of the JSON document itself, which a field may not replace.
_RESERVED: Final = frozenset({"time", "level", "pid", "logger", "message", "exception"})


def fields(message: str, **values: object) -> dict[str, Any]:
    """``extra=`` for a log call whose facts are fields of their own in JSON (``job``, ``outcome``...).

    The plain format keeps the call's own message (which names the same facts as ``key=value``); the JSON format
    writes ``message`` as this short text and each value as a key of the document, so Loki or Elasticsearch can
    select on them without parsing the text.
    """
    return {FIELDS_ATTRIBUTE: {"message": message, **values}}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra: dict[str, Any] = dict(getattr(record, FIELDS_ATTRIBUTE, None) or {})
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "pid": record.process,
            "logger": record.name,
            "message": str(extra.pop("message", "")) or record.getMessage(),
        }
        document.update((key, value) for key, value in extra.items() if key not in _RESERVED)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        # json escapes C0 controls but leaves DEL, C1 and the separators raw with ensure_ascii=False.
        return escape_controls(json.dumps(document, ensure_ascii=False))


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
    """Log to stderr in this process (ours: the worker, the exporter), in the plain or the JSON format.

    Neither format shows where a call was made, nor the thread or multiprocessing process name, so the record
    does not collect them: the logging HOWTO's "Optimization" section names these switches. Finding the caller
    walks the stack on every record; with the three off, a job's INFO line costs about a third less (measured
    with a worker's own line, 13.6 against 9.1 µs).
    """
    logging._srcfile = None  # the HOWTO's documented switch for findCaller
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = BatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
