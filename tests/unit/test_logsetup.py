"""Batched log writes: INFO lines wait a moment and go out together; WARNING and worse go out at once, in order."""

from __future__ import annotations

import io
import json
import logging
import time

from islandora_job import logsetup
from islandora_job.logsetup import BATCH_SECONDS, BatchingHandler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def make_logger(stream: CountingStream) -> tuple[logging.Logger, BatchingHandler]:
    handler = BatchingHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test-batching-{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, handler


def test_info_lines_are_written_together_within_the_batch_time() -> None:
    stream = CountingStream()
    logger, handler = make_logger(stream)
    try:
        for i in range(100):
            logger.info("job %d done", i)
        assert stream.getvalue() == ""  # nothing written yet: one write for the lot comes later
        deadline = time.monotonic() + BATCH_SECONDS * 10
        while stream.getvalue().count("\n") < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.getvalue().splitlines() == [f"INFO job {i} done" for i in range(100)]
        assert stream.writes == 1
    finally:
        handler.close()


def test_a_warning_is_written_at_once_after_the_lines_before_it() -> None:
    stream = CountingStream()
    logger, handler = make_logger(stream)
    try:
        logger.info("first")
        logger.warning("trouble")
        assert stream.getvalue().splitlines() == ["INFO first", "WARNING trouble"]
    finally:
        handler.close()


def test_close_and_flush_write_what_is_waiting() -> None:
    stream = CountingStream()
    logger, handler = make_logger(stream)
    logger.info("last words")
    handler.flush()
    assert stream.getvalue() == "INFO last words\n"
    logger.info("after flush")
    handler.close()
    assert stream.getvalue().endswith("INFO after flush\n")


HOSTILE = "boom\x1b[2J\x1b]0;owned\x07\n2026-01-01 00:00:00,000 ERROR [1] forged: line\x9b31m\u2028end"


def _formatted(json_lines: bool, exc: BaseException | None = None) -> str:
    """One record with hostile text, formatted as the worker's configured handler formats it."""
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    logsetup.configure("INFO", json_lines)
    try:
        handler = root.handlers[0]
        record = logging.LogRecord("islandora_job.worker", logging.WARNING, __file__, 1, "reason=%s", (HOSTILE,), None)
        if exc is not None:
            record.exc_info = (type(exc), exc, exc.__traceback__)
        return handler.format(record)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_text_logs_escape_control_characters_and_forge_no_line() -> None:
    line = _formatted(json_lines=False)
    assert "\n" not in line and not any(c in line for c in "\x1b\x07\x9b\u2028")
    assert "boom\\u001b[2J\\u001b]0;owned\\u0007\\n2026-01-01" in line and "line\\u009b31m\\u2028end" in line


def test_a_traceback_keeps_its_lines_indented_under_its_record() -> None:
    try:
        raise ValueError(HOSTILE)
    except ValueError as exc:
        text = _formatted(json_lines=False, exc=exc)
    _first, *rest = text.split("\n")
    assert rest and all(line.startswith("    ") for line in rest), text  # only the record's own line at column 0
    assert "\x1b" not in text and "\x9b" not in text


def test_json_logs_escape_what_json_leaves_raw_and_decode_to_the_original() -> None:
    line = _formatted(json_lines=True)
    assert not any(c in line for c in "\x1b\x07\x9b\u2028\n")
    assert json.loads(line)["message"] == f"reason={HOSTILE}"


def test_the_plain_line_is_what_the_logging_template_would_write() -> None:
    """The hand-built line against logging's own ``%``-template formatting of the same records: the same text,
    across a change of second (the cached time stamp) and with a traceback."""
    ours = logsetup.PlainFormatter()
    template = logging.Formatter(logsetup.PLAIN_FORMAT)
    try:
        raise ValueError("bad\nvalue")
    except ValueError as exc:
        error = (type(exc), exc, exc.__traceback__)
    for created, exc_info in [(1_764_000_000.25, None), (1_764_000_000.999, None), (1_764_000_001.0, error)]:
        record = logging.LogRecord("islandora_job.x", logging.INFO, __file__, 1, "job %s done", ("nop",), exc_info)
        record.created, record.msecs = created, (created - int(created)) * 1000
        twin = logging.LogRecord("islandora_job.x", logging.INFO, __file__, 1, "job %s done", ("nop",), exc_info)
        twin.created, twin.msecs = record.created, record.msecs
        assert ours.format(record) == template.format(twin).replace("\n", "\n    ")
