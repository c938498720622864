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

The worker's line per job can skip the logging module's generic path (:func:`info_line`): a record, the walk of
the logger tree, the filter calls, about forty Python calls. It does so only while nothing but this module's own
plain handler would see the line, and writes the same text as that path would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
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
        line = self.line(record.created, record.msecs, record.levelname, record.process, record.name, message)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line.replace("\n", "\n    ")

    def line(self, created: float, msecs: float, level: str, process: int | None, name: str, message: str) -> str:
        """The first line of a record: time stamp, level, PID, logger and the (escaped) message."""
        second = int(created)
        if second != self._second:  # the time as Formatter.formatTime writes it, without its milliseconds
            self._stamp = time.strftime(self.default_time_format, self.converter(created))
            self._second = second
        return f"{self._stamp},{int(msecs):03d} {level} [{process}] {name}: {message}"

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
        self.add(line, record.levelno >= logging.WARNING)

    def add(self, line: str, at_once: bool = False) -> None:
        """Queue a formatted line (with its terminator); ``at_once``: write it and everything before it now."""
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line)
            self._size += len(line)
            if at_once or self._size >= BATCH_BYTES:
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


#: The handler :func:`configure` installed with the plain format, the one :func:`info_line` may write to; None
#: with the JSON format, or before :func:`configure`.
_plain_handler: BatchingHandler | None = None


def info_line(logger: logging.Logger, message: str) -> bool:
    """Write ``message`` as an INFO line of ``logger``, as ``logger.info`` would, if only our handler would see it.

    True: written, the same text ``logger.info`` would have put in the batch. False: nothing written, because
    INFO is off for ``logger``, or the plain handler of :func:`configure` is not the only thing that would see the
    record (the JSON format; a handler or filter added anywhere on the way to the root, as an error tracker's
    integration does; a logger that does not propagate). The caller then logs through ``logger`` as usual.
    A busy worker calls this once per job; the generic path costs several times as much (docs/worker.md,
    section ``[logging]``).
    """
    handler = _plain_handler
    if handler is None or not logger.isEnabledFor(logging.INFO) or logger.filters or logger.disabled:
        return False
    if handler.filters or handler.level > logging.INFO or not isinstance(handler.formatter, PlainFormatter):
        return False
    node: logging.Logger | None = logger
    while node is not None:  # Logger.callHandlers' walk: every handler on the way sees the record
        if node.parent is None:
            if len(node.handlers) != 1 or node.handlers[0] is not handler:
                return False
        elif node.handlers or not node.propagate:
            return False
        node = node.parent
    created = time.time()
    msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord computes it
    process = os.getpid() if logging.logProcesses else None
    handler.add(
        handler.formatter.line(created, msecs, "INFO", process, logger.name, escape_controls(message))
        + handler.terminator
    )
    return True


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
    global _plain_handler
    handler = BatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    _plain_handler = None if json_lines else handler
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
