"""Batched log writes: INFO lines wait a moment and go out together; WARNING and worse go out at once, in order."""

from __future__ import annotations

import io
import logging
import time

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
