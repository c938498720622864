"""The command bridge: jobs implemented by another program (the Drupal site's drush router).

The payload goes to the command's stdin, its stdout is the result; a non-zero exit is a failure whose stderr tail
is the reason. This is what ``gearman -w -f NAME -- drush ... islandora-job-router`` did, with the guards it lacked:

* never a shell: argv is executed as given;
* the only substitutions are ``{site}`` and ``{uid}``, done only after validation: the payload's site must be one of
  the entry's ``allowed_sites`` and its uid an integer in ``allowed_uids`` (what the original multisite router
  checked); a substituted value is never split, so it stays inside its one argument;
* its own time limit: on expiry the whole process group is killed (drush starts php, which must die too); the
  groups of the commands running in this process are known (:func:`kill_command_groups`), so the worker's watchdog
  kills them too before it ends the process, and the pool supervisor (a child subreaper) kills whatever a worker
  process that died left behind;
* a uid is accepted only as a JSON integer or a string of at most :data:`MAX_UID_DIGITS` ASCII digits: anything
  else (``"--5"``, ``"¹"``, 5,000 digits) is refused as a job failure, never an exception in the worker;
* stdout is capped at ``max_output_bytes`` (the rest is read and dropped), stderr keeps its last 2 KiB.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import selectors
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from islandora_job.errors import IslandoraJobError
from islandora_job.payload import Payload
from islandora_job.worker.config import CommandJobConfig
from islandora_job.worker.router import Assignment, Outcome

log = logging.getLogger(__name__)

STDERR_TAIL = 2048
#: After the command exits, how long its pipes may stay open (held by a leftover grandchild) before we stop.
PIPE_GRACE = 1.0
#: A uid is a Drupal user id: a 32-bit unsigned integer at most, so 10 digits.
MAX_UID_DIGITS = 10
_UID_TEXT = re.compile(rf"[0-9]{{1,{MAX_UID_DIGITS}}}", re.ASCII)
#: Process groups of the commands running now in this process (one per thread that runs a command).
_RUNNING_GROUPS: set[int] = set()
#: Back to their default in a command, as ``subprocess`` does (Python ignores SIGPIPE and SIGXFSZ).
_DEFAULT_SIGNALS: Final = (signal.SIGPIPE, signal.SIGXFSZ)


class BridgeRefused(IslandoraJobError):
    """The payload's site or uid is not allowed for this command."""


@dataclass(frozen=True, slots=True)
class Completed:
    returncode: int | None
    stdout: bytes
    stderr_tail: bytes
    timed_out: bool
    truncated: bool


class CommandJob:
    """One ``[[command_jobs]]`` entry serving one Gearman function."""

    def __init__(self, function: str, config: CommandJobConfig) -> None:
        self.name = function
        self.config = config
        self.timeout = config.timeout

    def argv(self, payload: Payload | None) -> list[str]:
        """The command line for a payload: ``{site}``/``{uid}`` filled in after validation."""
        site, uid = self.allowed(payload)
        return [_fill(arg, site, uid) for arg in self.config.argv]

    def allowed(self, payload: Payload | None) -> tuple[str | None, int | None]:
        """The payload's site and uid when the entry needs them, checked against its allowlists.

        Raises :class:`BridgeRefused` when the payload may not run here: before anything is started.
        """
        argv = self.config.argv
        wants_site = any("{site}" in arg for arg in argv)
        wants_uid = any("{uid}" in arg for arg in argv)
        site: str | None = None
        uid: int | None = None
        if wants_site or self.config.allowed_sites:
            if payload is None or payload.site is None:
                raise BridgeRefused("payload has no site")
            if payload.site not in self.config.allowed_sites:
                raise BridgeRefused(f"site {payload.site!r} is not in allowed_sites")
            site = payload.site
        if wants_uid or self.config.allowed_uids:
            if payload is None:
                raise BridgeRefused("payload has no uid (it is not a valid islandora_job payload)")
            raw = payload.uid
            uid = _as_uid(raw)
            if uid is None:
                shown = raw if not isinstance(raw, str) or len(raw) <= 40 else f"{raw[:40]}… ({len(raw)} characters)"
                expected = f"an integer, or 1 to {MAX_UID_DIGITS} ASCII digits"
                raise BridgeRefused(f"uid {shown!r} is not a user id ({expected})")
            if uid not in self.config.allowed_uids:
                raise BridgeRefused(f"uid {uid} is not in allowed_uids")
        return site, uid

    def run(self, assignment: Assignment, payload: Payload | None) -> Outcome:
        try:
            argv = self.argv(payload)
        except BridgeRefused as exc:
            return Outcome.failure(f"command job {self.name!r} refused: {exc}")
        except Exception as exc:  # a bug here must cost one job, never the worker process
            log.exception("command job %s handle=%s: cannot build the command line", self.name, assignment.handle)
            return Outcome.failure(f"command job {self.name!r} refused: {type(exc).__name__}: {exc}")
        try:
            done = run_command(argv, assignment.data, self.timeout, self.config.max_output_bytes)
        except OSError as exc:
            return Outcome.failure(f"cannot run {argv[0]!r}: {exc.strerror or exc}", attempts=1)
        if done.truncated:
            log.warning(
                "command job %s handle=%s: output over %d bytes was cut",
                self.name,
                assignment.handle,
                self.config.max_output_bytes,
            )
        tail = done.stderr_tail.decode("utf-8", "replace").strip()
        if done.timed_out:
            return Outcome.failure(f"command timed out after {self.timeout:g}s; process group killed", 1)
        if done.returncode != 0:
            if tail:
                log.warning("command job %s handle=%s stderr: %s", self.name, assignment.handle, tail)
            reason = f"command exited with status {done.returncode}"
            return Outcome.failure(f"{reason}: {tail}" if tail else reason, 1)
        return Outcome("complete", data=done.stdout, attempts=1)


def _as_uid(value: object) -> int | None:
    """The uid of a payload, or None. Only a non-negative JSON integer of at most MAX_UID_DIGITS digits, or a string
    of that many ASCII digits (the module sends ``"1"``): ``str.isdigit`` accepts ``"¹"``, which ``int()`` refuses,
    and ``int()`` refuses over 4,300 digits, so neither may decide."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 10**MAX_UID_DIGITS else None
    if isinstance(value, str) and _UID_TEXT.fullmatch(value):
        return int(value)
    return None


def _fill(arg: str, site: str | None, uid: int | None) -> str:
    # str.replace, never str.format: a value is inserted as text and nothing in it is interpreted.
    if site is not None:
        arg = arg.replace("{site}", site)
    if uid is not None:
        arg = arg.replace("{uid}", str(uid))
    return arg


def spawn_in_session(argv: Sequence[str], fds: Sequence[tuple[int, int]]) -> int:
    """Start ``argv`` (a bare name looked up on PATH) as the leader of a new session; returns its pid.

    ``fds``: (our fd, the child's fd) pairs, put in place in the child; nothing else is inherited (every fd this
    process opens is close-on-exec). ``posix_spawn`` rather than ``subprocess.Popen``: Popen with
    ``start_new_session`` costs about twice as much per start here (docs/benchmarks.md, the runner section), which
    is most of the per-job bridge's overhead over ``gearman -w``. A failed exec raises OSError, as Popen does.
    """
    actions = [(os.POSIX_SPAWN_DUP2, ours, theirs) for ours, theirs in fds]
    spawn = os.posix_spawnp if "/" not in argv[0] else os.posix_spawn
    return spawn(argv[0], list(argv), os.environ, file_actions=actions, setsid=True, setsigdef=_DEFAULT_SIGNALS)


def run_command(argv: Sequence[str], stdin: bytes, timeout: float, max_output: int) -> Completed:
    """Run argv in its own session, feeding stdin and collecting output, within ``timeout`` seconds."""
    ends = [os.pipe() for _ in range(3)]
    try:
        # Its own session and process group, so we can kill everything it starts.
        pid = spawn_in_session(argv, [(ends[0][0], 0), (ends[1][1], 1), (ends[2][1], 2)])
    except BaseException:
        for fd in (ends[0][1], ends[1][0], ends[2][0]):
            os.close(fd)
        raise
    finally:
        for fd in (ends[0][0], ends[1][1], ends[2][1]):
            os.close(fd)
    process = _Spawned(pid, ends[0][1], ends[1][0], ends[2][0])
    _RUNNING_GROUPS.add(pid)
    try:
        return _collect(process, stdin, timeout, max_output)
    except BaseException:
        _kill_group(pid)  # an error here must not leave the command running
        _RUNNING_GROUPS.discard(pid)
        process.wait(None)
        raise
    finally:
        process.close()


class _Spawned:
    """A command started by :func:`run_command`: its pid and our ends of its stdin, stdout and stderr."""

    def __init__(self, pid: int, stdin: int, stdout: int, stderr: int) -> None:
        self.pid, self.stdin, self.stdout, self.stderr = pid, stdin, stdout, stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None) -> int | None:
        """The exit code, or None if it still runs after ``timeout`` seconds (None: wait as long as it takes)."""
        if timeout is None:
            if self.returncode is None:
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            return self.returncode
        if self.poll() is not None:
            return self.returncode
        try:
            pidfd = os.pidfd_open(self.pid)  # readable once it has exited: no sleeping in steps
        except OSError:
            pidfd = -1
        end = time.monotonic() + timeout
        try:
            while self.poll() is None:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return None
                if pidfd >= 0:
                    select.select([pidfd], [], [], remaining)
                else:
                    time.sleep(min(0.01, remaining))
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        return self.returncode

    def close(self) -> None:
        for fd in (self.stdin, self.stdout, self.stderr):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.stdin = self.stdout = self.stderr = -1


def _collect(process: _Spawned, stdin: bytes, timeout: float, max_output: int) -> Completed:
    deadline = time.monotonic() + timeout
    stdout = bytearray()
    stderr = bytearray()
    truncated = timed_out = False
    pending = memoryview(stdin)
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        for fd in (process.stdin, process.stdout, process.stderr):
            os.set_blocking(fd, False)
        if pending:
            selector.register(process.stdin, selectors.EVENT_WRITE)
        else:
            os.close(process.stdin)
            process.stdin = -1
        selector.register(process.stdout, selectors.EVENT_READ)
        selector.register(process.stderr, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if exited_at is None and process.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > PIPE_GRACE:
                break  # the command is gone; something it left behind holds the pipes
            wait = deadline - now if exited_at is None else min(deadline - now, PIPE_GRACE)
            for key, _ in selector.select(min(wait, 0.5)):
                if key.fd == process.stdin:
                    try:
                        written = os.write(process.stdin, pending[:65536])
                    except BrokenPipeError:
                        written = len(pending)
                    pending = pending[written:]
                    if not pending:
                        selector.unregister(process.stdin)
                        os.close(process.stdin)
                        process.stdin = -1
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                if key.fd == process.stdout:
                    room = max_output - len(stdout)
                    if len(chunk) > room:
                        truncated = True
                    stdout += chunk[: max(room, 0)]
                else:
                    stderr += chunk
                    del stderr[:-STDERR_TAIL]
    if not timed_out and process.wait(max(0.0, deadline - time.monotonic())) is None:
        timed_out = True  # it closed its output but kept running
    _kill_group(process.pid)  # whatever is left of its process group goes too
    _RUNNING_GROUPS.discard(process.pid)  # before the reap, after which the id may name another group
    returncode = process.wait(None)
    return Completed(
        returncode=None if timed_out else returncode,
        stdout=bytes(stdout),
        stderr_tail=bytes(stderr),
        timed_out=timed_out,
        truncated=truncated,
    )


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_command_groups() -> int:
    """SIGKILL the process group of every command running in this process; returns how many were signalled.

    For the worker's watchdog, which ends the process while a command may be running: the command runs in its own
    session, so without this its whole tree would outlive us, re-parented. Safe from any thread: it only signals.
    """
    killed = 0
    for pgid in tuple(_RUNNING_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
            killed += 1
    return killed


def discover_names(argv: Sequence[str], timeout: float = 60.0) -> list[str]:
    """Run a discovery command (e.g. ``drush islandora-job-list-functions``) and return the function names.

    The output is names separated by whitespace; ``-f`` tokens (the ``--param_format`` of the original) are
    skipped.
    """
    done = run_command(argv, b"", timeout, 1024 * 1024)
    if done.timed_out or done.returncode != 0:
        tail = done.stderr_tail.decode("utf-8", "replace").strip()
        raise OSError(f"{' '.join(argv)} failed ({'timed out' if done.timed_out else done.returncode}): {tail}")
    return [token for token in done.stdout.decode("utf-8", "replace").split() if token != "-f"]


def command_jobs(configs: Sequence[CommandJobConfig]) -> dict[str, CommandJob]:
    """One bridge job per function name of every entry; the names of a ``persistent`` entry share one runner
    (:mod:`islandora_job.worker.persistent`), which is not started here (``list-jobs`` and ``check-config`` build
    these too): the worker process calls :func:`~islandora_job.worker.persistent.start_runners`."""
    from islandora_job.worker.persistent import PersistentJob, PersistentRunner  # it imports this module

    jobs: dict[str, CommandJob] = {}
    for entry in configs:
        runner = PersistentRunner(entry) if entry.persistent else None
        for name in entry.names:
            jobs[name] = CommandJob(name, entry) if runner is None else PersistentJob(name, entry, runner)
    return jobs
