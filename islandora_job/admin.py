"""gearmand's admin text protocol, parsed into typed results.

The admin protocol shares the job port: a line in, either one ``OK ...``/``ERR ...`` line or a list of lines ended
by ``.`` back. The parsers are plain functions over the text so they can be tested without a server; the
:class:`AdminClient` only moves lines.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import unquote_plus

from islandora_job.address import ServerAddress
from islandora_job.connection import describe_os_error
from islandora_job.errors import ConnectionLost, IslandoraJobError, ProtocolError, ServerUnavailable

_T = TypeVar("_T")

#: An admin answer larger than this is not an answer gearmand would give (a ``status`` line is ~50 bytes: this is
#: over 300,000 functions). It bounds the client's memory against a server that never ends its list.
MAX_ANSWER = 16 * 1024 * 1024
#: And at most this many lines (a line costs ~60 bytes of Python objects however short it is on the wire).
MAX_LINES = 200_000
#: The longest one command's whole answer may take, however steadily the bytes trickle in.
ANSWER_TIMEOUT = 30.0


class AdminError(IslandoraJobError):
    """gearmand answered ``ERR``: ``code`` is its error code (``UNKNOWN_JOB``, ``UNKNOWN_COMMAND``, ...)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"gearmand refused: {code} {text}".strip())
        self.code = code
        self.text = text


@dataclass(frozen=True, slots=True)
class FunctionStatus:
    """One line of ``status``: jobs queued (total, including running), running, and workers that can do it."""

    function: str
    total: int
    running: int
    workers: int

    @property
    def waiting(self) -> int:
        return max(self.total - self.running, 0)


@dataclass(frozen=True, slots=True)
class PriorityStatus:
    """One line of ``prioritystatus``: queued jobs by priority, and workers."""

    function: str
    high: int
    normal: int
    low: int
    workers: int


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One line of ``workers``: a connection, its client id (``-`` when unset) and the functions it can do.

    Every connection is listed, clients and admin sessions too: those have no functions.
    """

    fd: int
    ip: str
    client_id: str
    functions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """One line of ``show jobs``."""

    handle: str
    retries: int
    ignore_job: bool
    queued: bool


#: A record split over more lines than this, or longer than this many characters, is not one gearmand wrote
#: (function names are short): the fragments are dropped, so joining them stays cheap whatever the server sends.
MAX_RECORD_LINES: Final = 8
MAX_RECORD_CHARS: Final = 65536


def _fields(line: str, count: int, what: str) -> list[str]:
    """Split a tab-separated line whose *first* field is a name chosen by a client (a function name may hold a
    tab): the other fields are gearmand's own numbers, so split from the right."""
    parts = line.rsplit("\t", count - 1)
    if len(parts) != count:
        raise ProtocolError(f"{what}: expected {count} tab-separated fields, got {line!r}")
    return parts


def _number(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ProtocolError(f"{what}: {text!r} is not a number")
    return int(text)


def _records(lines: list[str], parse: Callable[[str], _T]) -> list[_T]:
    """Parse one record per line, rejoining a record that a newline in a client-chosen name split.

    gearmand prints function names and client ids raw, so a name with a newline splits its record in two: the
    first part does not parse, and neither may the second. A line that does not parse is kept and tried again
    joined (with the newline it lost) to the next line; if that fails too but the next line parses alone, the
    kept fragment is dropped. So the name is restored exactly when it can be, and otherwise one hostile record is
    missing from the answer: the server is not taken for unreachable, nor the other records lost. An answer of
    which no line parses is not gearmand's (``workers`` always lists the asking connection): ProtocolError.
    """
    result: list[_T] = []
    pending: list[str] = []
    for line in lines:
        if pending:
            with contextlib.suppress(ProtocolError):
                result.append(parse("\n".join([*pending, line])))
                pending = []
                continue
        try:
            result.append(parse(line))
            pending = []
        except ProtocolError:
            pending.append(line)
            if len(pending) > MAX_RECORD_LINES or sum(map(len, pending)) > MAX_RECORD_CHARS:
                pending = [line]
    if lines and not result:
        parse(lines[0])  # nothing parsed at all: not gearmand's answer; raises the first line's ProtocolError
    return result


def _status_line(line: str) -> FunctionStatus:
    name, total, running, workers = _fields(line, 4, "status")
    return FunctionStatus(name, _number(total, "status"), _number(running, "status"), _number(workers, "status"))


def parse_status(lines: list[str]) -> list[FunctionStatus]:
    return _records(lines, _status_line)


def _priority_line(line: str) -> PriorityStatus:
    name, *numbers = _fields(line, 5, "prioritystatus")
    high, normal, low, workers = (_number(n, "prioritystatus") for n in numbers)
    return PriorityStatus(name, high, normal, low, workers)


def parse_priority_status(lines: list[str]) -> list[PriorityStatus]:
    return _records(lines, _priority_line)


def _worker_line(line: str) -> WorkerInfo:
    parts = line.split(" ", 3)
    if len(parts) != 4 or not parts[3].startswith(":"):
        raise ProtocolError(f"workers: cannot parse {line!r}")
    fd, ip, client_id, functions = parts
    return WorkerInfo(_number(fd, "workers"), ip, client_id, tuple(functions[1:].split()))


def parse_workers(lines: list[str]) -> list[WorkerInfo]:
    return _records(lines, _worker_line)


def _job_line(line: str) -> QueuedJob:
    handle, retries, ignore, queued = _fields(line, 4, "show jobs")
    return QueuedJob(handle, _number(retries, "show jobs"), ignore not in ("0", ""), queued not in ("0", ""))


def parse_show_jobs(lines: list[str]) -> list[QueuedJob]:
    return _records(lines, _job_line)


def parse_ok(line: str) -> str:
    """The text after ``OK`` of a one-line answer; ``ERR`` becomes :class:`AdminError`."""
    line = line.rstrip("\r")
    if line == "OK" or line.startswith("OK "):
        return line[3:]
    if line.startswith("ERR"):
        _, _, rest = line.partition(" ")
        code, _, text = rest.partition(" ")
        raise AdminError(code, unquote_plus(text))
    raise ProtocolError(f"unexpected admin answer {line!r}")


class AdminClient:
    """One admin session with one gearmand. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        address: ServerAddress | str,
        *,
        timeout: float = 5.0,
        max_answer: int = MAX_ANSWER,
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self.address = address if isinstance(address, ServerAddress) else ServerAddress.parse(address)
        self.timeout = timeout
        self.max_answer = max_answer
        self.answer_timeout = answer_timeout
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        #: Where the search for the next newline resumes: each byte is scanned once, not once per recv.
        self._scanned = 0
        self._answer_bytes = 0
        self._answer_by = 0.0

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer = bytearray()
        self._scanned = 0

    # -- commands ----------------------------------------------------------------------------------------------

    def status(self) -> list[FunctionStatus]:
        return parse_status(self._list("status"))

    def priority_status(self) -> list[PriorityStatus]:
        return parse_priority_status(self._list("prioritystatus"))

    def workers(self) -> list[WorkerInfo]:
        return parse_workers(self._list("workers"))

    def show_jobs(self) -> list[QueuedJob]:
        return parse_show_jobs(self._list("show jobs"))

    def show_unique_jobs(self) -> list[str]:
        return self._list("show unique jobs")

    def count_unique(self, keys: Collection[bytes]) -> Counter[bytes]:
        """How many jobs (of any function) ``show unique jobs`` lists under each of ``keys``.

        The answer lists every job's key, so it is streamed and only ``keys`` are counted: memory stays that of
        the keys asked about, however long the queue (the byte bound, ``max_answer``, still applies). Keys are
        compared as bytes, since gearmand keeps them as bytes.
        """
        wanted = frozenset(keys)
        self._send("show unique jobs")
        counts: Counter[bytes] = Counter()
        first = True
        while True:
            # every complete line received so far at once: counted in C (Counter), not line by line in Python
            lines = self._read_raw_lines()
            if first and lines[0].startswith(b"ERR"):
                parse_ok(lines[0].decode("utf-8", "replace"))
            first = False
            if b"." in lines:
                end = lines.index(b".")
                self._buffer[:0] = b"".join(line + b"\n" for line in lines[end + 1 :])  # not this answer's
                lines = lines[:end]
            else:
                end = -1
            block = Counter(lines)
            for key in wanted & block.keys():
                counts[key] += block[key]
            if end >= 0:
                return counts

    def version(self) -> str:
        return parse_ok(self._line("version"))

    def getpid(self) -> int:
        return _number(parse_ok(self._line("getpid")), "getpid")

    def cancel_job(self, handle: str) -> None:
        """Remove a queued job (also from the persistent queue). Raises AdminError ``UNKNOWN_JOB`` if absent."""
        _check_word(handle, "job handle")
        parse_ok(self._line(f"cancel job {handle}"))

    def maxqueue(self, function: str, size: int | tuple[int, int, int] | None = None) -> None:
        """Limit the queue of a function (one size, or high/normal/low); ``None`` removes the limit.

        gearmand 1.1.20 answers OK but ignores the limit for a function it does not know yet (no job or worker
        has named it); set it once the function exists. Submissions over the limit get ERROR QUEUE_ERROR.
        """
        _check_word(function, "function name")
        if size is None:
            sizes = ""
        elif isinstance(size, int):
            sizes = f" {size}"
        else:
            sizes = " " + " ".join(str(s) for s in size)
        parse_ok(self._line(f"maxqueue {function}{sizes}"))

    # -- transport ---------------------------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                self._sock = socket.create_connection((self.address.host, self.address.port), timeout=self.timeout)
            except OSError as exc:
                raise ServerUnavailable([(str(self.address), describe_os_error(exc))]) from exc
        return self._sock

    def _send(self, command: str) -> None:
        sock = self._connect()
        self._answer_bytes = len(self._buffer)
        self._answer_by = time.monotonic() + self.answer_timeout
        try:
            sock.sendall(command.encode("utf-8") + b"\n")
        except OSError as exc:
            self.close()
            raise ConnectionLost(str(self.address), describe_os_error(exc)) from exc

    def _read_raw_line(self) -> bytes:
        end = self._fill()
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        return line.removesuffix(b"\r")

    def _read_raw_lines(self) -> list[bytes]:
        """Every complete line in the buffer (at least one), without their line ends."""
        self._fill()
        end = self._buffer.rfind(b"\n")
        block = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        lines = block.split(b"\n")
        return [line.removesuffix(b"\r") for line in lines] if b"\r" in block else lines

    def _fill(self) -> int:
        """Receive until the buffer holds a newline; its index."""
        sock = self._connect()
        while (end := self._buffer.find(b"\n", self._scanned)) < 0:
            self._scanned = len(self._buffer)
            remaining = self._answer_by - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(min(self.timeout, remaining))
                chunk = sock.recv(65536)
            except OSError as exc:
                self.close()
                if isinstance(exc, TimeoutError) and remaining <= self.timeout:
                    reason = f"no complete admin answer within {self.answer_timeout:g}s"
                else:
                    reason = describe_os_error(exc)
                raise ConnectionLost(str(self.address), reason) from exc
            if not chunk:
                self.close()
                raise ConnectionLost(str(self.address), "closed by the server")
            self._answer_bytes += len(chunk)
            if self._answer_bytes > self.max_answer:
                self.close()
                raise ProtocolError(f"{self.address}: admin answer exceeds {self.max_answer} bytes")
            self._buffer += chunk
        return end

    def _read_line(self) -> str:
        """One answer line as text. Function names and client ids in it are any bytes a client chose (but NUL):
        bytes that are not UTF-8 become ``\\xff`` escapes, so one job submitted to such a name neither fails the
        whole answer (the server taken for down by ``status`` and the exporter) nor reaches a caller undecodable."""
        return self._read_raw_line().decode("utf-8", "backslashreplace")

    def _line(self, command: str) -> str:
        self._send(command)
        return self._read_line()

    def _list(self, command: str) -> list[str]:
        self._send(command)
        lines: list[str] = []
        while (line := self._read_line()) != ".":
            if not lines and line.startswith("ERR"):
                parse_ok(line)
            if len(lines) >= MAX_LINES:
                self.close()
                raise ProtocolError(f"{self.address}: admin answer exceeds {MAX_LINES} lines")
            lines.append(line)
        return lines


def _check_word(value: str, what: str) -> None:
    """Admin commands are space-separated lines: an argument with white space would smuggle in another command."""
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} must be non-empty and contain no white space")
