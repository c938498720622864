"""The persistent PHP runner: a ``[[command_jobs]]`` entry with ``persistent = true`` bootstraps once, serves many jobs.

The per-job bridge (:mod:`islandora_job.worker.bridge`) pays a full Drupal bootstrap for every job. A persistent
entry's ``argv`` (``drush ... php-script RUNNER`` or ``php RUNNER --bootstrap FILE``, RUNNER being what
``islandora-job php-runner`` prints) is started when the worker process starts, and each job of the entry's
functions is sent to it as a frame on the runner's fd 3 (:mod:`islandora_job.worker.runner_protocol`). What the
per-job bridge gets from a fresh process, this module restores by supervision:

* the allowlists are checked before a job reaches the runner (:meth:`CommandJob.allowed`);
* a job past ``timeout`` fails within the limit + 1 s: the runner's whole process group (its own session) is killed
  and a new runner started for the next job. The worker's watchdog is armed 1 s later, as a backstop;
* ``exit()``, a fatal error or a crash of the runner fails that job only; the runner is started again, with a log line;
* recycling: after ``max_jobs`` jobs, or once the runner's RSS passes ``max_rss_mb``, it is replaced between jobs
  (a Drupal site leaks static caches), with a log line;
* the runner's group is in the bridge's running groups, so the worker's watchdog, the supervisor-gone handler and the
  supervisor's subreaper kill it with the worker process; at a normal exit it is asked to stop (fd 3 closed).

A replacement is spawned at once but waited for only by the next job, so its bootstrap overlaps the worker's idle
time or its next grab. A worker process serves one job at a time, so a runner is never used by two threads.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import select
import shutil
import signal
import threading
import time
from typing import Final

from islandora_job.errors import IslandoraJobError, ProtocolError
from islandora_job.payload import Payload
from islandora_job.worker import bridge
from islandora_job.worker.config import CommandJobConfig
from islandora_job.worker.router import Assignment, Outcome
from islandora_job.worker.runner_protocol import Frame, FrameReader, encode

log = logging.getLogger(__name__)

#: The worker's watchdog (which ends the whole worker process) is armed this much later than the runner's own limit.
WATCHDOG_GRACE: Final = 1.0
#: How long a runner asked to stop (fd 3 closed) may take before its group is killed.
STOP_GRACE: Final = 2.0
#: How long the worker process waits for its runners' bootstrap at start-up, at most.
START_TIMEOUT: Final = 120.0
_RUNNERS: list[PersistentRunner] = []


class RunnerGone(IslandoraJobError):
    """The runner ended (crash, ``exit()``, a broken frame) or could not start; the message says how."""


class _Process:
    """One started runner: its process (leader of its own session), the two pipe ends, what it said when ready."""

    def __init__(self, argv: list[str]) -> None:
        program = argv[0] if "/" in argv[0] else shutil.which(argv[0])
        if program is None:
            raise RunnerGone(f"cannot run {argv[0]!r}: not found on PATH ({os.environ.get('PATH', os.defpath)})")
        request_read, self.request = os.pipe()
        self.reply, reply_write = os.pipe()
        # Above 4, so that putting them on 3 and 4 in the child cannot overwrite one with the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (request_read, reply_write)]
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # Nothing but 0-4 inherited (our fds are close-on-exec); its own session: killing the group kills
            # whatever the job started too.
            self.pid = bridge.spawn_in_session([program, *argv[1:]], [(devnull, 0), (high[0], 3), (high[1], 4)])
        except OSError as exc:
            for fd in (self.request, self.reply):
                os.close(fd)
            raise RunnerGone(f"cannot run {program!r}: {exc.strerror or exc}") from exc
        finally:
            for fd in (request_read, reply_write, devnull, *high):
                os.close(fd)
        bridge._RUNNING_GROUPS.add(self.pid)
        os.set_blocking(self.request, False)
        os.set_blocking(self.reply, False)
        self.pidfd: int | None = None
        with contextlib.suppress(OSError, AttributeError):  # Linux 5.3+; else we poll
            self.pidfd = os.pidfd_open(self.pid)
        self.reader = FrameReader()
        self.ready: Frame | None = None
        self.php_pid = self.pid
        self.jobs = 0
        self.status: int | None = None

    def send(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.request, view[:65536])
            except BlockingIOError:
                self._wait(self.request, select.POLLOUT, deadline)
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise RunnerGone(self._ended("before it read the job")) from exc
            view = view[written:]

    def receive(self, deadline: float) -> Frame:
        while True:
            try:
                chunk = os.read(self.reply, 65536)
            except BlockingIOError:
                self._wait(self.reply, select.POLLIN, deadline)
                continue
            if not chunk:
                raise RunnerGone(self._ended("without answering"))
            try:
                frames = self.reader.feed(chunk)
            except ProtocolError as exc:
                self.kill()
                raise RunnerGone(f"runner broke the protocol: {exc}") from exc
            if frames:
                if len(frames) > 1 or self.reader.pending:
                    self.kill()
                    raise RunnerGone("runner sent more than one answer")
                return frames[0]

    def _wait(self, fd: int, event: int, deadline: float) -> None:
        """Until ``fd`` is ready; TimeoutError at the deadline. A dead runner ends the wait too (its pidfd, or a poll
        every 0.2 s): a process the job started may hold the runner's fds open after the runner died."""
        poller = select.poll()
        poller.register(fd, event)
        if self.pidfd is not None:
            poller.register(self.pidfd, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            wait = remaining if self.pidfd is not None else min(remaining, 0.2)
            ready = poller.poll(wait * 1000)
            if any(fd_ == fd for fd_, _ in ready):
                return
            if self.reap(block=False):
                raise RunnerGone(self._ended("during the job"))

    def _ended(self, when: str) -> str:
        self.reap(block=True, timeout=STOP_GRACE)
        if self.status is None:
            self.kill()
            return f"runner closed its channel {when}; killed it"
        if os.WIFSIGNALED(self.status):
            return f"runner died {when} (signal {os.WTERMSIG(self.status)})"
        return f"runner exited {when} (status {os.waitstatus_to_exitcode(self.status)})"

    def reap(self, *, block: bool, timeout: float = 0.0) -> bool:
        """Whether the runner's process has ended (and is reaped); ``block`` waits up to ``timeout``."""
        if self.status is not None:
            return True
        end = time.monotonic() + timeout
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.status = status
                self._close()
                return True
            if not block or time.monotonic() >= end:
                return False
            if self.pidfd is not None:
                select.select([self.pidfd], [], [], max(0.0, end - time.monotonic()))
            else:
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL the runner's whole process group, and reap the runner."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        bridge._RUNNING_GROUPS.discard(self.pid)  # before the reap, after which the id may name another group
        self.reap(block=True, timeout=5.0)

    def stop(self) -> None:
        """Ask the runner to exit (its fd 3 reaches the end), then kill whatever is left of its group."""
        with contextlib.suppress(OSError):
            os.close(self.request)
        self.request = -1
        self.reap(block=True, timeout=STOP_GRACE)
        self.kill()

    def _close(self) -> None:
        for fd in (self.request, self.reply, self.pidfd):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.request = self.reply = -1
        self.pidfd = None

    def rss_mb(self) -> float | None:
        """The runner's resident memory (the PHP process it named when ready), from /proc."""
        try:
            with open(f"/proc/{self.php_pid}/status", "rb") as file:
                for line in file:
                    if line.startswith(b"VmRSS:"):
                        return int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            return None
        return None


class PersistentRunner:
    """The runner of one entry in this worker process: started, supervised, recycled, restarted."""

    def __init__(self, config: CommandJobConfig) -> None:
        self.config = config
        self.process: _Process | None = None
        self.started = 0
        _RUNNERS.append(self)

    @property
    def label(self) -> str:
        return " ".join(self.config.argv)

    def spawn(self, why: str | None = None) -> None:
        """Start a runner now without waiting for its bootstrap; ``why`` (a restart, a replacement) is logged."""
        self.process = None
        self.process = _Process(list(self.config.argv))
        self.started += 1
        if why is not None:
            log.warning("php runner %s: %s; started a new one (pid %d)", self.label, why, self.process.pid)

    def wait_ready(self, deadline: float) -> _Process:
        """The running runner, bootstrapped; started first when there is none. Raises RunnerGone or TimeoutError."""
        if self.process is None:
            self.spawn()
        process = self.process
        assert process is not None
        if process.ready is None:
            try:
                frame = process.receive(deadline)
            except RunnerGone as exc:
                self.process = None
                raise RunnerGone(f"runner did not start: {exc}") from None
            if frame.type != "ready":
                self.process = None
                process.kill()
                raise RunnerGone(f"runner did not start: {frame.header.get('reason') or frame.header}")
            process.ready = frame
            pid = frame.header.get("pid")
            process.php_pid = pid if isinstance(pid, int) and pid > 0 else process.pid
            log.info(
                "php runner %s ready: pid %d, %s mode, PHP %s",
                self.label,
                process.php_pid,
                frame.header.get("mode"),
                frame.header.get("php"),
            )
        return process

    def run(self, header: dict[str, object], payload: bytes) -> Outcome:
        deadline = time.monotonic() + self.config.timeout
        for attempt in (1, 2):
            try:
                process = self.wait_ready(deadline)
                process.send(encode(header, payload), deadline)
                frame = process.receive(deadline)
            except TimeoutError:
                self._replace(f"job past its timeout of {self.config.timeout:g}s; killed its process group", kill=True)
                reason = f"command timed out after {self.config.timeout:g}s; runner's process group killed"
                return Outcome.failure(reason, 1)
            except RunnerGone as exc:
                self._replace(str(exc), kill=True)
                return Outcome.failure(str(exc), 1)
            if frame.type == "result" and frame.header.get("status") == "retry" and attempt == 1:
                # The runner found its database connection gone before it started the job: a fresh runner runs it.
                self._replace(str(frame.header.get("reason")), kill=False)
                continue
            return self._result(process, frame)
        raise AssertionError("unreachable")  # pragma: no cover

    def _result(self, process: _Process, frame: Frame) -> Outcome:
        process.jobs += 1
        if frame.type != "result":
            self._replace(f"runner answered with a {frame.type!r} frame", kill=True)
            return Outcome.failure(f"runner answered with a {frame.type!r} frame, not a result", 1)
        if frame.header.get("runner_ending"):
            self._replace(f"job ended the runner ({frame.header.get('reason')})", kill=False)
        else:
            self._recycle(process)
        if frame.header.get("truncated"):
            log.warning("php runner %s: output over %d bytes was cut", self.label, self.config.max_output_bytes)
        if frame.header.get("status") == "complete":
            return Outcome("complete", data=frame.data, attempts=1)
        return Outcome.failure(str(frame.header.get("reason") or "job failed"), 1)

    def _recycle(self, process: _Process) -> None:
        if process.jobs >= self.config.max_jobs:
            self._replace(f"replaced after {process.jobs} jobs (max_jobs)", kill=False)
            return
        rss = process.rss_mb()
        if rss is not None and rss >= self.config.max_rss_mb:
            self._replace(f"replaced at {rss:.0f} MiB RSS (max_rss_mb {self.config.max_rss_mb})", kill=False)

    def _replace(self, why: str, *, kill: bool) -> None:
        process, self.process = self.process, None
        if process is not None:
            if kill:
                process.kill()
            else:
                # Its exit (drush's shutdown, up to STOP_GRACE) is waited for beside the job's answer, not before it.
                threading.Thread(target=process.stop, name="runner-stop", daemon=True).start()
        try:
            self.spawn(why)
        except RunnerGone as exc:  # the next job tries again, and fails with the reason
            log.error("php runner %s: %s; cannot start a new one: %s", self.label, why, exc)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.stop()


class PersistentJob(bridge.CommandJob):
    """One Gearman function of a persistent entry: checked here, run by the entry's shared runner."""

    def __init__(self, function: str, config: CommandJobConfig, runner: PersistentRunner) -> None:
        super().__init__(function, config)
        self.runner = runner
        self.timeout = config.timeout + WATCHDOG_GRACE  # what the router arms the watchdog with: a backstop

    def run(self, assignment: Assignment, payload: Payload | None) -> Outcome:
        try:
            _site, uid = self.allowed(payload)
            if uid is None and payload is not None and payload.uid is not None:
                uid = bridge._as_uid(payload.uid)
                if uid is None:
                    raise bridge.BridgeRefused(f"uid {payload.uid!r} is not a user id")
        except bridge.BridgeRefused as exc:
            return Outcome.failure(f"command job {self.name!r} refused: {exc}")
        header: dict[str, object] = {
            "type": "job",
            "function": assignment.function,
            "handle": assignment.handle,
            "uid": uid,
            "max_output": self.config.max_output_bytes,
        }
        return self.runner.run(header, assignment.data)


def start_runners(jobs: dict[str, bridge.CommandJob], timeout: float = START_TIMEOUT) -> None:
    """Start the runner of every persistent entry and wait for their bootstrap (in parallel), so the first job does
    not pay it and a reload's new worker process is ready before the old one stops. A runner that cannot start is
    logged; each job then tries again and fails with the reason."""
    runners = list({id(job.runner): job.runner for job in jobs.values() if isinstance(job, PersistentJob)}.values())
    for runner in runners:
        try:
            runner.spawn()
        except RunnerGone as exc:
            log.error("php runner %s: %s", runner.label, exc)
    deadline = time.monotonic() + timeout
    for runner in runners:
        if runner.process is None:
            continue
        try:
            runner.wait_ready(deadline)
        except (RunnerGone, TimeoutError) as exc:
            log.error("php runner %s: %s", runner.label, exc or "bootstrap took too long")
            if runner.process is not None:
                runner.process.kill()
            runner.process = None


@atexit.register
def stop_runners() -> None:
    """Ask every runner of this process to stop: a warm stop or a reload ends the worker process this way."""
    for runner in _RUNNERS:
        with contextlib.suppress(Exception):
            runner.stop()
