"""The pool supervisor: N worker processes kept alive, recycled, reloaded and stopped on signals.

Theory of operation
-------------------
The supervisor runs no job and holds no Gearman connection. It owns a list of *slots* (``concurrency`` slots that
serve every job, then one slot per ``pool.dedicated`` process) and keeps one child process (``python -m
islandora_job.worker.child``) in each. Children are started with ``exec``, so a reload picks up new code as well as new
configuration; each one gets the configuration on its stdin and reports on a status pipe (ready, busy, idle,
stats, exit reason).

Everything happens in one loop that blocks in ``select`` on the status pipes and the signal wake-up socket; signal
handlers only queue the signal number. Nothing polls.

* A child decides itself when to recycle (``max_jobs``, ``max_lifetime`` + a random share of ``lifetime_splay``,
  ``max_rss_mb``), always between jobs, and exits 0: it is replaced at once.
* A child whose watchdog answered a hung job exits with :data:`~islandora_job.exit_codes.HUNG_JOB`: replaced at
  once (the job was answered and is not run again).
* Any other death (a signal, a crash) is restarted after a capped, jittered backoff that resets once a child has
  lived a while. The job it held is requeued by gearmand (at-least-once, up to gearmand's ``--job-retries``).

Leftovers of commands: a command job runs in its own session (so that its whole tree can be killed), which also
means it is not killed with the worker process that started it. The worker kills the groups of its commands itself
(when a command ends, and in its watchdog before it exits), but a worker process killed with SIGKILL (by the stuck
job backstop, a cold stop, the OOM killer, an operator) runs no code. So the supervisor makes itself a *child
subreaper* (``PR_SET_CHILD_SUBREAPER``): whatever a dead worker process leaves behind is re-parented to the
supervisor instead of PID 1, and the supervisor kills it, with its process group, and reaps it
(:meth:`Supervisor._sweep_orphans`). Every process adopted this way is a job's leftover: the supervisor itself starts
only worker processes. This needs no message from the worker, so nothing can be missed between the command's fork
and a report, and it also catches a process that left the command's group (``setsid``). An adoption sends no
signal, so besides after every SIGCHLD the sweep also runs when a check every :data:`ORPHAN_CHECK_INTERVAL` seconds
finds a child that is not a worker process (:func:`has_other_children`: the kernel's list of our children, not a
scan of /proc). The other way round, each worker process dies with the supervisor (``--supervisor-pid``, see
:mod:`islandora_job.worker.child`), killing its commands' groups first.

Signals: SIGTERM → warm stop (children finish their job in hand within ``shutdown_timeout``, then the rest are
killed), exit 0. A second SIGTERM, or SIGINT → cold stop: children are killed now (gearmand requeues their jobs),
exit 1. SIGHUP → reload: the configuration is read and checked in a fresh process; if it is good the children
are replaced one at a time, each new child started and registered before the old one is asked to stop warm, so no
job in flight is killed and capacity never drops (:class:`RollingReload`). A SIGHUP during a reload starts it over
with the newer configuration, after the hand-over in progress.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import enum
import json
import logging
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from islandora_job import exit_codes
from islandora_job.backoff import Backoff
from islandora_job.worker.config import WorkerConfig
from islandora_job.worker.deadlines import DeadlineSlot
from islandora_job.worker.metrics import JobStats, PoolMetrics
from islandora_job.worker.sdnotify import SUPERVISOR_ONLY, Notifier

log = logging.getLogger(__name__)

#: A replacement child that has not registered after this long is accepted anyway (servers may be down).
READY_TIMEOUT: Final = 10.0
#: A child that lived this long resets its slot's restart backoff.
STABLE_AFTER: Final = 30.0
#: A child still in a job this long past the job's limit has a watchdog that cannot run (the GIL is held): kill it.
#: The watchdog itself answers within about a second of the limit, so this never races it.
STUCK_GRACE: Final = 5.0
#: How often the supervisor looks at its children's job deadlines (a few microseconds each time).
STUCK_CHECK_INTERVAL: Final = 1.0
#: prctl(2) options: adopt the orphaned descendants of our children instead of PID 1.
PR_SET_CHILD_SUBREAPER: Final = 36
PR_GET_CHILD_SUBREAPER: Final = 37
#: On a stop, how long the supervisor waits for the leftovers it killed to be gone (they die at once unless stuck
#: in the kernel, e.g. on a dead NFS mount; then they are left to the service manager).
ORPHAN_REAP_WAIT: Final = 2.0
#: How often the supervisor looks for processes it adopted while none of its worker processes died (a process a
#: command detached with setsid, a double-forked daemon). Costs one small read per supervisor thread.
ORPHAN_CHECK_INTERVAL: Final = 2.0


def set_child_subreaper(on: bool) -> bool | None:
    """Turn ``PR_SET_CHILD_SUBREAPER`` on or off; returns the previous setting, or None where it is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        previous = ctypes.c_int(0)
        if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0) != 0:
            return None
        if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
            return None
    except (OSError, AttributeError):  # not Linux
        return None
    return bool(previous.value)


def children_of(pid: int) -> list[tuple[int, int, str]]:
    """(pid, process group, state) of every process whose parent is ``pid``, read from /proc."""
    found: list[tuple[int, int, str]] = []
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc (not Linux, or not mounted): nothing to find, and never a crash
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(b")") + 2 :].split()  # the name may hold spaces and parentheses
        if len(fields) >= 3 and int(fields[1]) == pid:
            found.append((int(entry), int(fields[2]), fields[0].decode()))
    return found


def has_other_children(known: Collection[int]) -> bool:
    """Whether this process has a child not in ``known``, from /proc/self/task/*/children (one short read per
    thread, however many processes the machine runs). True where that file is missing (a kernel without
    CONFIG_PROC_CHILDREN), so that the caller falls back to its full scan of /proc."""
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children", "rb") as file:
                if any(int(pid) not in known for pid in file.read().split()):
                    return True
    except FileNotFoundError:
        return True  # a thread gone meanwhile, or no such file: let the full scan decide
    except OSError:
        return False  # no /proc at all: children_of finds nothing either
    return False


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """What a slot's process serves: everything (``only`` is None) or the named jobs/functions."""

    only: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return "all jobs" if self.only is None else ",".join(self.only)


def slot_specs(config: WorkerConfig) -> list[SlotSpec]:
    specs = [SlotSpec() for _ in range(config.concurrency)]
    for name, count in config.pool.dedicated.items():
        specs += [SlotSpec((name,)) for _ in range(count)]
    return specs


@dataclass(eq=False)
class Child:
    process: subprocess.Popen[bytes]
    slot: int
    spec: SlotSpec
    status_fd: int
    deadline: DeadlineSlot
    started: float = field(default_factory=time.monotonic)
    #: Killed by the supervisor for staying in a job far past its time limit (see _kill_stuck).
    stuck: bool = False
    ready: bool = False
    retiring: bool = False
    exit_reason: str | None = None
    buffer: bytes = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def close_status(self, selector: selectors.BaseSelector) -> None:
        """Stop reading the status pipe and close it (once: a closed pipe's fd is -1)."""
        if self.status_fd != -1:
            selector.unregister(self.status_fd)
            os.close(self.status_fd)
            self.status_fd = -1

    def close(self, selector: selectors.BaseSelector) -> None:
        """Release what the supervisor holds for a child that has exited: its status pipe and its deadline slot."""
        self.close_status(selector)
        self.deadline.close()


class RollingReload:
    """A reload in progress: the old children still to replace, one at a time, and the replacement being started.

    Each step starts a new child in the slot of the first old one; once the new child has registered (or
    READY_TIMEOUT has passed, or it died), the old one is asked to stop warm and the next slot follows. So no job in
    flight is killed and capacity never drops. An old child whose slot is gone in the new configuration is asked to
    stop without a replacement.

    A reload that starts while another is under way (``previous``) first finishes the hand-over in progress: the
    old child already retiring still waits for its replacement and is then asked to stop, as it would have been.
    """

    def __init__(self, old: Sequence[Child], previous: RollingReload | None = None) -> None:
        self.old: collections.deque[Child] = collections.deque(sorted(old, key=lambda c: c.slot))
        self.new: Child | None = None
        if previous is not None and previous.old and previous.old[0].retiring:
            self.old.appendleft(previous.old[0])
            self.new = previous.new

    def advance(
        self,
        now: float,
        slots: int,
        spawn: Callable[[int], Child | None],
        terminate: Callable[[Child], None],
        alive: Callable[[Child], bool],
    ) -> bool:
        """Take the next steps that are due; True once every old child has been asked to stop."""
        while self.old:
            old = self.old[0]
            new = self.new
            if new is None:
                old.retiring = True
                if old.slot >= slots:  # the slot is gone in the new configuration
                    self.old.popleft()
                    terminate(old)
                    continue
                self.new = spawn(old.slot)
                return False
            if new.ready or now - new.started >= READY_TIMEOUT or not alive(new):
                self.old.popleft()
                self.new = None
                terminate(old)
                continue
            return False
        return True

    def wake_at(self) -> float | None:
        """When the replacement being started is taken as ready even if it has not registered."""
        return None if self.new is None else self.new.started + READY_TIMEOUT

    def forget(self, child: Child) -> None:
        """``child`` has exited: it is neither a replacement to wait for nor an old child to replace."""
        if self.new is child:
            self.new = None
        if child in self.old:
            self.old.remove(child)


class Phase(enum.Enum):
    RUNNING = "running"
    WARM_STOP = "warm stop"
    COLD_STOP = "cold stop"


ConfigLoader = Callable[[], WorkerConfig]


class Supervisor:
    """Keeps ``slot_specs(config)`` children alive until a stop signal; :meth:`run` returns the exit status."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        reload: ConfigLoader | None = None,
        notifier: Notifier | None = None,
        metrics: PoolMetrics | None = None,
        python: str = sys.executable,
    ) -> None:
        self.config = config
        self._reload = reload
        self.notifier = notifier or Notifier(None)
        self.metrics = metrics
        self.python = python
        self.phase = Phase.RUNNING
        self.specs = slot_specs(config)
        self.children: dict[int, Child] = {}
        self._restart_at: dict[int, float] = {}
        self._backoff: dict[int, Backoff] = {}
        self._signals: collections.deque[int] = collections.deque()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop_deadline = 0.0
        self._announced_ready = False
        self._next_ping = 0.0
        self._rolling: RollingReload | None = None
        self._child_exited = False
        self._was_subreaper: bool | None = None
        self._next_orphan_check = 0.0

    # --- the loop -----------------------------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        self._was_subreaper = set_child_subreaper(True)
        if self._was_subreaper is None:
            log.warning("cannot become a child subreaper: leftovers of a killed worker process's commands may survive")
        log.info("supervisor %d starting %d worker process(es) for %s", os.getpid(), len(self.specs), self._servers())
        try:
            for slot in range(len(self.specs)):
                self._spawn(slot)
            while True:
                status = self._step()
                if status is not None:
                    return status
        finally:
            self._kill_all()
            if self._was_subreaper is False:
                set_child_subreaper(False)
            self._restore_signals()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _step(self) -> int | None:
        for key, _ in self._selector.select(self._timeout()):
            if key.data is None:
                self._drain_wakeups()
            else:
                self._read_status(key.data)
        while self._signals:
            self._on_signal(self._signals.popleft())
        self._reap()
        now = time.monotonic()
        if now >= self._next_orphan_check:  # an adoption sends no SIGCHLD
            self._next_orphan_check = now + ORPHAN_CHECK_INTERVAL
            self._child_exited |= has_other_children(self.children)
        if self._child_exited:
            self._child_exited = False
            self._sweep_orphans()
        self._kill_stuck(now)
        if self.phase is Phase.COLD_STOP:
            return exit_codes.COLD_STOP
        if self.phase is Phase.WARM_STOP:
            if not self.children:
                log.info("all worker processes finished; exiting")
                return exit_codes.OK
            if now >= self._stop_deadline:
                log.warning(
                    "shutdown_timeout (%gs) reached; killing %d worker process(es) (gearmand requeues their jobs)",
                    self.config.pool.shutdown_timeout,
                    len(self.children),
                )
                self._kill_all()
                return exit_codes.OK
        else:
            if self._rolling is not None and self._rolling.advance(
                now, len(self.specs), self._spawn, self._terminate, lambda child: child.pid in self.children
            ):
                self._rolling = None
                log.info("reload done: every worker process runs the new configuration")
                self.notifier.notify(READY=1, STATUS=f"serving on {self._servers()}")
            self._fill_slots(now)
        if self.notifier.watchdog_interval is not None and now >= self._next_ping:
            self.notifier.notify(WATCHDOG=1)
            self._next_ping = now + self.notifier.watchdog_interval
        return None

    def _kill_stuck(self, now: float) -> None:
        """The backstop of the children's watchdog threads: a job in C code that holds the GIL blocks the thread that
        would answer it, so a child still in a job STUCK_GRACE seconds past the job's limit is killed (gearmand
        requeues the job, up to its --job-retries)."""
        for child in self.children.values():
            deadline = child.deadline.read()
            if deadline and now > deadline + STUCK_GRACE and not child.stuck:
                child.stuck = True
                log.error(
                    "worker process %d is still in a job %.0fs past its time limit (code holding the GIL?); "
                    "killing it: gearmand requeues the job up to its --job-retries",
                    child.pid,
                    now - deadline,
                )
                child.process.kill()

    def _timeout(self) -> float:
        now = time.monotonic()
        timers = [STUCK_CHECK_INTERVAL, self._next_orphan_check - now]
        if self.phase is Phase.WARM_STOP:
            timers.append(self._stop_deadline - now)
        timers += [at - now for at in self._restart_at.values()]
        ready_by = None if self._rolling is None else self._rolling.wake_at()
        if ready_by is not None:
            timers.append(ready_by - now)
        if self.notifier.watchdog_interval is not None:
            timers.append(self._next_ping - now)
        return max(0.0, min(timers))

    # --- children -----------------------------------------------------------------------------------------------

    def _spawn(self, slot: int) -> Child | None:
        spec = self.specs[slot]
        self._restart_at.pop(slot, None)
        status_r, status_w = os.pipe()
        deadline = DeadlineSlot.create()
        argv = [
            self.python,
            "-m",
            "islandora_job.worker.child",
            "--status-fd",
            str(status_w),
            "--deadline-fd",
            str(deadline.fd),
            "--supervisor-pid",
            str(os.getpid()),
        ]
        if spec.only is not None:
            argv += ["--functions", json.dumps(list(spec.only))]
        pool = self.config.pool
        if pool.max_lifetime > 0:
            argv += ["--lifetime", f"{pool.max_lifetime + random.uniform(0, pool.lifetime_splay):.3f}"]
        env = {key: value for key, value in os.environ.items() if key not in SUPERVISOR_ONLY}
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, pass_fds=(status_w, deadline.fd), env=env)
        except OSError as exc:
            os.close(status_r)
            deadline.close()
            log.error("cannot start a worker process: %s", exc)
            self._schedule_restart(slot, crashed=True)
            return None
        finally:
            os.close(status_w)
        assert process.stdin is not None
        with contextlib.suppress(OSError):  # if it died already, _reap handles the exit
            process.stdin.write(self.config.to_json().encode() + b"\n")
            process.stdin.flush()
        os.set_blocking(status_r, False)
        child = Child(process, slot, spec, status_r, deadline)
        self.children[child.pid] = child
        self._selector.register(status_r, selectors.EVENT_READ, child)
        if self.metrics is not None:
            self.metrics.set_busy(child.pid, False)
        log.info("started worker process %d (slot %d: %s)", child.pid, slot, spec.label)
        return child

    def _read_status(self, child: Child) -> None:
        try:
            data = os.read(child.status_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            child.close_status(self._selector)
            return
        child.buffer += data
        *lines, child.buffer = child.buffer.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                log.warning("worker process %d sent an unreadable status line", child.pid)
                continue
            self._on_message(child, message)

    def _on_message(self, child: Child, message: dict[str, Any]) -> None:
        event = message.get("event")
        stats = message.get("stats")
        if event == "ready":
            child.ready = True
            if not self._announced_ready:
                self._announced_ready = True
                self.notifier.notify(READY=1, STATUS=f"serving on {self._servers()}")
                log.info("registered on a server; ready")
        elif event == "exit":
            child.exit_reason = str(message.get("reason", ""))
        if self.metrics is not None:
            if isinstance(stats, dict):
                self.metrics.update(child.pid, JobStats.from_json(stats), busy=event in ("busy", "stats"))
            elif event in ("busy", "idle"):
                self.metrics.set_busy(child.pid, event == "busy")

    def _reap(self) -> None:
        for child in list(self.children.values()):
            code = child.process.poll()
            if code is None:
                continue
            if child.status_fd != -1:  # read what it said last (its exit reason)
                self._read_status(child)
            child.close(self._selector)
            del self.children[child.pid]
            self._on_exit(child, code)

    def _on_exit(self, child: Child, code: int) -> None:
        lived = time.monotonic() - child.started
        if code == 0:
            reason = child.exit_reason or "exited"
        elif code == exit_codes.HUNG_JOB:
            reason = "hung job"
        elif child.stuck:
            reason = "killed: stuck in a job past its time limit"
        elif code == exit_codes.USAGE:
            reason = "configuration error"
        elif code < 0:
            reason = f"killed by {signal.Signals(-code).name}"
        else:
            reason = f"exit status {code}"
        if self.metrics is not None:
            self.metrics.retire(child.pid, reason)
        if self._rolling is not None:
            self._rolling.forget(child)
        if self.phase is not Phase.RUNNING or child.retiring or child.slot >= len(self.specs):
            log.info("worker process %d exited (%s)", child.pid, reason)
            return
        if self._slot_taken(child.slot):
            return
        crashed = code not in (exit_codes.OK, exit_codes.HUNG_JOB) and not child.stuck
        if crashed:
            log.error("worker process %d died (%s) after %.1fs; restarting", child.pid, reason, lived)
        else:
            log.info("worker process %d exited (%s); replacing it", child.pid, reason)
        if lived >= STABLE_AFTER:
            self._backoff_for(child.slot).reset()
        self._schedule_restart(child.slot, crashed=crashed)

    def _schedule_restart(self, slot: int, *, crashed: bool) -> None:
        delay = self._backoff_for(slot).next_delay() if crashed else 0.0
        self._restart_at[slot] = time.monotonic() + delay

    def _backoff_for(self, slot: int) -> Backoff:
        backoff = self._backoff.get(slot)
        if backoff is None:
            backoff = self._backoff[slot] = Backoff(initial=1.0, cap=self.config.pool.restart_backoff_max)
        return backoff

    def _slot_taken(self, slot: int) -> bool:
        return any(c.slot == slot and not c.retiring for c in self.children.values())

    def _fill_slots(self, now: float) -> None:
        for slot in range(len(self.specs)):
            if self._slot_taken(slot):
                continue
            due = self._restart_at.setdefault(slot, now)
            if now >= due:
                self._spawn(slot)

    # --- signals ------------------------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._previous_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        self._previous_handlers = {}
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            self._previous_handlers[signum] = signal.signal(signum, self._queue_signal)

    def _restore_signals(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_wakeup)

    def _queue_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            self._child_exited = True  # _reap runs after every wake-up; the orphans' sweep after this
            return
        if signum == signal.SIGHUP:
            if self.phase is Phase.RUNNING:
                self._start_reload()
            return
        if signum == signal.SIGTERM and self.phase is Phase.RUNNING:
            self.phase = Phase.WARM_STOP
            self._stop_deadline = time.monotonic() + self.config.pool.shutdown_timeout
            self.notifier.notify(STOPPING=1, STATUS="finishing jobs in flight")
            log.info(
                "SIGTERM: warm stop; %d worker process(es) finish their jobs (up to %gs)",
                len(self.children),
                self.config.pool.shutdown_timeout,
            )
            self._rolling = None
            for child in self.children.values():
                self._terminate(child)
            return
        self.phase = Phase.COLD_STOP
        self.notifier.notify(STOPPING=1, STATUS="cold stop")
        log.warning(
            "%s: cold stop; killing %d worker process(es) (gearmand requeues their jobs)",
            signal.Signals(signum).name,
            len(self.children),
        )
        self._kill_all()

    def _terminate(self, child: Child) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGTERM)

    def _kill_all(self) -> None:
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        for child in list(self.children.values()):
            child.process.wait()
            child.close(self._selector)
            if self.metrics is not None:
                self.metrics.retire(child.pid, "killed")
        self.children.clear()
        self._sweep_orphans(wait=ORPHAN_REAP_WAIT)

    def _sweep_orphans(self, wait: float = 0.0) -> None:
        """Kill and reap every process re-parented to us that is not a worker process: leftovers of a dead worker's
        commands. Each goes with its process group (the command's), unless that group is our own (a job's plain
        subprocess), where only the process itself is killed. ``wait``: how long to wait for them to be reaped."""
        own_group = os.getpgrp()
        deadline = time.monotonic() + wait
        killed: set[int] = set()
        while True:
            orphans = [o for o in children_of(os.getpid()) if o[0] not in self.children]
            for pid, pgid, state in orphans:
                if state != "Z" and pid not in killed:
                    killed.add(pid)
                    if pgid not in (0, own_group):
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(pgid, signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # a zombie now; one killed just now is reaped on its SIGCHLD
            remaining = [o for o in children_of(os.getpid()) if o[0] not in self.children]
            if not remaining or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        if killed:
            log.warning(
                "killed %d process(es) left behind by a worker process's commands: %s",
                len(killed),
                " ".join(str(pid) for pid in sorted(killed)),
            )

    # --- reload -------------------------------------------------------------------------------------------------

    def _start_reload(self) -> None:
        if self._reload is None:
            log.warning("SIGHUP: no configuration source to reload from; ignored")
            return
        self.notifier.notify(RELOADING=1, STATUS="reloading")
        try:
            config = self._reload()
            check_in_child(config, self.python)
        except Exception as exc:
            log.error("SIGHUP: new configuration refused, keeping the running one: %s", exc)
            self.notifier.notify(READY=1, STATUS=f"serving on {self._servers()} (reload refused)")
            return
        self.config = config
        self.specs = slot_specs(config)
        old = [c for c in self.children.values() if not c.retiring]
        self._rolling = RollingReload(old, self._rolling)
        log.info("SIGHUP: configuration reloaded; replacing %d worker process(es) one at a time", len(old))

    def _servers(self) -> str:
        return ", ".join(str(s) for s in self.config.servers)


def check_in_child(config: WorkerConfig, python: str = sys.executable, timeout: float = 60.0) -> None:
    """Build the runtime of ``config`` in a fresh interpreter (new code included); raise on any error."""
    result = subprocess.run(
        [python, "-m", "islandora_job.worker.child", "--check"],
        input=config.to_json().encode() + b"\n",
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        message = [line for line in result.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        raise RuntimeError("; ".join(message) if message else f"check exited with status {result.returncode}")
