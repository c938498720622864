"""Batched log writes: INFO lines wait a moment and go out together; WARNING and worse go out at once, in order."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Callable

import pytest

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


class _Configured:
    """``configure()`` writing to a string; the root logger's handlers and level, and logging's switches, restored
    on exit."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, json_lines: bool = False) -> None:
        self.stream = io.StringIO()
        self.monkeypatch = monkeypatch
        self.json_lines = json_lines

    def __enter__(self) -> io.StringIO:
        root = logging.getLogger()
        self.saved = list(root.handlers), root.level
        for name in ("_srcfile", "logThreads", "logMultiprocessing"):
            self.monkeypatch.setattr(logging, name, getattr(logging, name))
        self.monkeypatch.setattr(sys, "stderr", self.stream)
        logsetup.configure("INFO", self.json_lines)
        return self.stream

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in self.saved[0]:
            root.addHandler(handler)
        root.setLevel(self.saved[1])
        logsetup._plain_handler = None


def _formatted(monkeypatch: pytest.MonkeyPatch, json_lines: bool, exc: BaseException | None = None) -> str:
    """One record with hostile text, formatted as the worker's configured handler formats it."""
    with _Configured(monkeypatch, json_lines=json_lines):
        record = logging.LogRecord("islandora_job.worker", logging.WARNING, __file__, 1, "reason=%s", (HOSTILE,), None)
        if exc is not None:
            record.exc_info = (type(exc), exc, exc.__traceback__)
        return logging.getLogger().handlers[0].format(record)


def test_text_logs_escape_control_characters_and_forge_no_line(monkeypatch: pytest.MonkeyPatch) -> None:
    line = _formatted(monkeypatch, json_lines=False)
    assert "\n" not in line and not any(c in line for c in "\x1b\x07\x9b\u2028")
    assert "boom\\u001b[2J\\u001b]0;owned\\u0007\\n2026-01-01" in line and "line\\u009b31m\\u2028end" in line


def test_a_traceback_keeps_its_lines_indented_under_its_record(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        raise ValueError(HOSTILE)
    except ValueError as exc:
        text = _formatted(monkeypatch, json_lines=False, exc=exc)
    _first, *rest = text.split("\n")
    assert rest and all(line.startswith("    ") for line in rest), text  # only the record's own line at column 0
    assert "\x1b" not in text and "\x9b" not in text


def test_json_logs_escape_what_json_leaves_raw_and_decode_to_the_original(monkeypatch: pytest.MonkeyPatch) -> None:
    line = _formatted(monkeypatch, json_lines=True)
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


def test_the_direct_info_line_is_the_line_logging_would_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`logsetup.info_line` against ``logger.info`` at the same instant: the same text, character for
    character, hostile text included (escaped by both)."""
    logger = logging.getLogger("islandora_job.worker.process")
    message = f"job nop handle=H:x:1 function={HOSTILE} outcome=complete duration=0.000s"
    with _Configured(monkeypatch) as stream:
        for now in (1_764_000_000.25, 1_764_000_000.999, 1_764_000_001.0):
            monkeypatch.setattr(time, "time", lambda now=now: now)
            monkeypatch.setattr(time, "time_ns", lambda now=now: int(now * 1e9))  # what LogRecord reads from 3.13
            assert logsetup.info_line(logger, message)
            logger.info("%s", message)
        logging.getLogger().handlers[0].flush()
    direct, generic = stream.getvalue().splitlines()[0::2], stream.getvalue().splitlines()[1::2]
    assert len(direct) == 3 and direct == generic
    assert direct[0].startswith(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_764_000_000)) + ",250 INFO [")
    assert "\x1b" not in stream.getvalue() and stream.getvalue().count("\n") == 6


def _add_handler(logger: logging.Logger) -> None:
    logger.addHandler(logging.NullHandler())


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(None, id="the JSON format"),
        pytest.param(lambda: _add_handler(logging.getLogger()), id="another handler on the root"),
        pytest.param(lambda: _add_handler(logging.getLogger("islandora_job")), id="a handler on the way"),
        pytest.param(lambda: _add_handler(logging.getLogger("islandora_job.worker.process")), id="a handler here"),
        pytest.param(lambda: logging.getLogger("islandora_job").__setattr__("propagate", False), id="no propagation"),
        pytest.param(
            lambda: logging.getLogger("islandora_job.worker.process").addFilter(lambda r: True), id="a logger filter"
        ),
        pytest.param(lambda: logging.getLogger().handlers[0].addFilter(lambda r: True), id="a handler filter"),
        pytest.param(lambda: logging.getLogger().handlers[0].setFormatter(logging.Formatter()), id="a formatter"),
        pytest.param(lambda: logging.getLogger().setLevel(logging.WARNING), id="level WARNING"),
        pytest.param(lambda: logging.disable(logging.INFO), id="logging.disable"),
    ],
)
def test_the_direct_info_line_steps_aside_when_anything_else_would_see_the_record(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[], None] | None
) -> None:
    """Whatever else would see the record (an error tracker's handler, a filter), or when INFO is off, nothing is
    written directly: the caller logs through ``logging`` as usual."""
    for name in ("islandora_job", "islandora_job.worker.process"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", [])
        monkeypatch.setattr(logger, "filters", [])
        monkeypatch.setattr(logger, "propagate", True)
    try:
        with _Configured(monkeypatch, json_lines=change is None) as stream:
            if change is not None:
                change()
            logger = logging.getLogger("islandora_job.worker.process")
            logger.manager._clear_cache()  # type: ignore[attr-defined]  # isEnabledFor's cache
            assert not logsetup.info_line(logger, "job nop outcome=complete")
            logging.getLogger().handlers[0].flush()
            assert stream.getvalue() == ""
    finally:
        logging.disable(logging.NOTSET)
