"""What a running job can know and do: its context, and progress reports to the client.

A job reaches its context with :func:`current_job` (a context variable set by the router for the length of the
call), so job functions keep the plain signature of the original PHP jobs: ``def job(*args)``.

Progress goes back to the client through the worker, which owns the connection: the context holds a
:class:`Reporter` (a protocol the worker implements), never a socket.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol


class Reporter(Protocol):
    """The worker side of progress reports; each call sends one packet for the job in hand."""

    def status(self, numerator: int, denominator: int) -> None: ...

    def data(self, chunk: bytes) -> None: ...

    def warning(self, chunk: bytes) -> None: ...


class NullReporter:
    def status(self, numerator: int, denominator: int) -> None:
        pass

    def data(self, chunk: bytes) -> None:
        pass

    def warning(self, chunk: bytes) -> None:
        pass


@dataclass(frozen=True, slots=True)
class JobContext:
    """The job in hand: Gearman ``function``, ``handle`` and ``unique`` key; ``site`` and ``uid`` from the payload;
    ``attempt`` counts from 1 when the job declares retries."""

    name: str
    function: str
    handle: str
    unique: str
    site: str | None = None
    uid: int | str | None = None
    attempt: int = 1
    reporter: Reporter = field(default_factory=NullReporter, repr=False, compare=False)

    def progress(self, numerator: int, denominator: int) -> None:
        """Report progress (WORK_STATUS): ``numerator`` of ``denominator`` done."""
        if numerator < 0 or denominator < 0:
            raise ValueError("progress values must not be negative")
        self.reporter.status(int(numerator), int(denominator))

    def send_data(self, chunk: bytes | str) -> None:
        """Send partial output to the client (WORK_DATA); the final result is still the job's return value."""
        self.reporter.data(chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk))

    def send_warning(self, chunk: bytes | str) -> None:
        """Send a warning to the client (WORK_WARNING)."""
        self.reporter.warning(chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk))


_CURRENT: ContextVar[JobContext | None] = ContextVar("islandora_job_current", default=None)


def current_job() -> JobContext:
    """The context of the job being run; raises ``RuntimeError`` outside a job."""
    context = _CURRENT.get()
    if context is None:
        raise RuntimeError("current_job() called outside a running job")
    return context


#: The router makes a job's context current for the call (``token = enter(context)``) and undoes it after
#: (``leave(token)``), in a ``try``/``finally``: a ``contextmanager`` would cost six Python calls of its own on the
#: path of every job.
enter = _CURRENT.set
leave = _CURRENT.reset
