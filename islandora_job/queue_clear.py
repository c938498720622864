"""Clear a function's queue on a running gearmand, keeping a record of every job cleared.

gearmand has no command to empty a function's queue, and deleting rows of its persistent queue is safe only with
gearmand stopped (docs/runbook.md). So the clearer takes the jobs the way a worker does (``CAN_DO`` the function,
``GRAB_JOB_UNIQ``), writes each job's function, handle, unique key and payload to a record (the dead-letter store or
a file) and only then ends it with ``WORK_FAIL``, without running it. ``WORK_FAIL`` rather than ``WORK_COMPLETE``: a
client waiting for a foreground job is told it failed instead of receiving an empty success; for a background job
both delete it from the persistent queue alike.

Nothing is lost: a job is ended only after its record is written (and, for a file, synced to disk); if recording
fails or the clearer dies, the jobs it holds and has not ended go back to the queue when its connection closes.

Jobs without a unique key: gearmand 1.1.20's persistent queues delete by (function, unique key), so ending one
keyless job deletes the stored rows of *every* keyless job of that function. Keyless jobs are therefore held, and
recorded and ended together once the function's queue is empty; if ``limit`` stops the clear first, they are handed
back (and counted as left) rather than have some of them survive only in gearmand's memory.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from islandora_job.address import ServerAddress
from islandora_job.admin import AdminClient
from islandora_job.codec import Command, Packet, encode
from islandora_job.connection import ConnectFailed, Connection
from islandora_job.errors import IslandoraJobError, ProtocolError, ServerUnavailable
from islandora_job.queue_move import _error_text

CLIENT_ID_PREFIX: Final = "islandora-job-clear"
#: The reason written with each job cleared into the dead-letter store.
CLEARED: Final = "cleared by islandora-job clear"
#: Jobs taken at once: recorded together (one sync of the file), then ended together, and confirmed by an echo.
#: A clear stopped part way may have recorded up to this many jobs that stay queued (recorded twice if run again).
BATCH: Final = 100
#: ... and fewer when the payloads are large: a batch's expected size (from the payloads seen so far) stays under this.
BATCH_BYTES: Final = 32 * 1024 * 1024


class ClearRefused(IslandoraJobError):
    """The clear was not started: workers serve the function, or the record cannot be written."""


class ClearFailed(IslandoraJobError):
    """The clear stopped part way (a record could not be written). Jobs not cleared stay queued."""


@dataclass(frozen=True, slots=True)
class ClearedJob:
    function: str
    handle: str
    unique: str
    payload: bytes
    #: The handle as gearmand sent it, for the WORK_FAIL.
    raw_handle: bytes = b""


class Recorder(Protocol):
    """Where cleared jobs go; :meth:`record_all` returns only once the jobs are safely kept, else raises
    ClearFailed."""

    where: str

    def record_all(self, jobs: list[ClearedJob]) -> None: ...


@dataclass(slots=True)
class ClearResult:
    server: str
    function: str
    #: Jobs waiting when the clear began (``status``: queued, not running).
    waiting: int
    cleared: int = 0
    #: Jobs still queued after it (beyond the limit, held by a worker, scheduled for later, keyless handed back).
    left: int = 0
    keyless_returned: int = 0


Progress = Callable[[str, int, int, bool], None]


class FileRecorder:
    """JSON lines appended to a file (mode 0600: payloads may be private), each synced before its job is ended."""

    def __init__(self, path: str) -> None:
        self.where = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ClearRefused(f"{path}: cannot write the record: {exc.strerror}") from None

    def record_all(self, jobs: list[ClearedJob]) -> None:
        data = b"".join(_line(job) for job in jobs)
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
            _sync(self._fd)
        except OSError as exc:
            raise ClearFailed(f"{self.where}: cannot write the record: {exc.strerror or exc}") from None

    def close(self) -> None:
        os.close(self._fd)


class QueueClearer:
    """Takes one function's jobs from one gearmand as a worker. Closing hands back every job held and not ended."""

    def __init__(self, server: ServerAddress, *, io_timeout: float = 60.0, connect_timeout: float = 5.0) -> None:
        self.server = server
        self.client_id = f"{CLIENT_ID_PREFIX}-{uuid.uuid4().hex[:12]}"
        self._timeout = connect_timeout
        self._io_timeout = io_timeout
        self._worker = Connection(server, connect_timeout=connect_timeout, io_timeout=io_timeout)
        self._seen_jobs = 0  # jobs taken so far, and their bytes: the payload size that sizes batches
        self._seen_bytes = 0

    def __enter__(self) -> QueueClearer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._worker.close()

    def waiting(self, function: str) -> tuple[int, int]:
        """(jobs waiting, workers) for ``function``, from the admin ``status``."""
        with AdminClient(self.server, timeout=self._io_timeout) as admin:
            for status in admin.status():
                if status.function == function:
                    return status.waiting, status.workers
        return 0, 0

    def clear(
        self,
        function: str,
        recorder: Recorder,
        *,
        limit: int | None = None,
        allow_workers: bool = False,
        progress: Progress | None = None,
    ) -> ClearResult:
        waiting, workers = self.waiting(function)
        if workers and not allow_workers:
            raise ClearRefused(
                f"{workers} worker(s) on {self.server} serve {function!r}: they would race the clear "
                "(stop them, or pass --allow-workers)"
            )
        result = ClearResult(str(self.server), function, waiting)
        try:
            self._worker.connect()
        except ConnectFailed as exc:
            raise ServerUnavailable([(str(exc.address), exc.reason)]) from exc
        self._worker.send_packet(Command.SET_CLIENT_ID, self.client_id)
        self._worker.send_packet(Command.CAN_DO, function)
        expected = waiting if limit is None else min(waiting, limit)
        if progress:
            progress(function, 0, expected, False)
        keyless: list[ClearedJob] = []
        exhausted = False
        while not exhausted and (limit is None or result.cleared + len(keyless) < limit):
            want = self._batch() if limit is None else min(self._batch(), limit - result.cleared - len(keyless))
            jobs, exhausted = self._grab(function, want)
            self._seen_jobs += len(jobs)
            self._seen_bytes += sum(len(job.payload) for job in jobs)
            keyed = [job for job in jobs if job.unique]
            keyless.extend(job for job in jobs if not job.unique)
            self._end(keyed, recorder)
            result.cleared += len(keyed)
            if progress:
                progress(function, result.cleared, expected, False)
        if keyless and exhausted:
            self._end(keyless, recorder)
            result.cleared += len(keyless)
        elif keyless:
            result.keyless_returned = len(keyless)
        self._worker.close()  # hands back the keyless jobs held, if any
        result.left = self.waiting(function)[0]
        if progress:
            progress(function, result.cleared, expected, True)
        return result

    def _batch(self) -> int:
        average = self._seen_bytes / self._seen_jobs if self._seen_jobs else 0
        return max(1, min(BATCH, int(BATCH_BYTES // average) if average else BATCH))

    def _end(self, jobs: list[ClearedJob], recorder: Recorder) -> None:
        """Record the jobs, then end them; returns once gearmand has processed every WORK_FAIL (rows deleted)."""
        if not jobs:
            return
        recorder.record_all(jobs)
        self._worker.send(b"".join(encode(Command.WORK_FAIL, job.raw_handle) for job in jobs))
        self._echo()

    def _grab(self, function: str, want: int) -> tuple[list[ClearedJob], bool]:
        """Ask for ``want`` jobs at once (pipelined); the jobs handed out, and whether the queue ran dry."""
        self._worker.send(encode(Command.GRAB_JOB_UNIQ) * want)
        jobs: list[ClearedJob] = []
        dry = False
        answers = 0
        while answers < want:
            for packet in self._worker.receive():
                if packet.command is Command.NO_JOB:
                    answers += 1
                    dry = True
                elif packet.command is Command.JOB_ASSIGN_UNIQ:
                    answers += 1
                    jobs.append(self._job(packet, function))
                elif packet.command is Command.ERROR:
                    raise ClearFailed(f"{self.server} answered ERROR {_error_text(packet)}")
                elif packet.command is not Command.NOOP:
                    raise ProtocolError(f"{self.server} sent an unexpected {packet.command.name}")
        return jobs, dry

    def _job(self, packet: Packet, function: str) -> ClearedJob:
        task = packet["task"].decode("utf-8", "replace")
        if task != function:
            raise ProtocolError(f"{self.server} handed out a job of {task!r}, asked for {function!r}")
        return ClearedJob(
            function,
            packet["job_handle"].decode("utf-8", "replace"),
            packet["unique"].decode("utf-8", "replace"),
            packet["data"],
            packet["job_handle"],
        )

    def _echo(self) -> None:
        token = uuid.uuid4().hex.encode()
        self._worker.send_packet(Command.ECHO_REQ, token)
        while True:
            for packet in self._worker.receive():
                if packet.command is Command.ECHO_RES and packet["data"] == token:
                    return
                if packet.command is Command.ERROR:
                    raise ClearFailed(f"{self.server} answered ERROR {_error_text(packet)}")


def _sync(fd: int) -> None:
    """fsync, except where there is nothing to sync: a pipe or a device such as /dev/null (EINVAL)."""
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise


def _line(job: ClearedJob) -> bytes:
    """One job as a JSON line: the payload as text when it is UTF-8, else in base64."""
    line: dict[str, Any] = {
        "function": job.function,
        "handle": job.handle,
        "unique": job.unique,
        "size": len(job.payload),
        "cleared_at": time.time(),
    }
    try:
        line["payload"] = job.payload.decode("utf-8")
    except UnicodeDecodeError:
        line["payload_base64"] = base64.b64encode(job.payload).decode("ascii")
    return (json.dumps(line, ensure_ascii=True) + "\n").encode()
