"""Shared pieces of the benchmarks and the soak: process groups that are always cleaned up, a lean load generator,
RSS sampling, and islandora-job worker pools with a benchmark configuration.

Everything talks to 127.0.0.1 only. Every process started here is in its own session (process group) and is
registered with a :class:`Processes` owner that kills the whole group on exit, also after an error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from islandora_job.connection import ReadBuffer
from tests.support.gearmand import admin

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
RAW_WORKER = str(Path(__file__).with_name("raw_worker.py"))
PYGEARMAN_WORKER = str(Path(__file__).with_name("pygearman_worker.py"))

HEADER = struct.Struct("!4sII")
REQ = b"\0REQ"
SUBMIT_JOB, JOB_CREATED, WORK_COMPLETE, WORK_FAIL, SUBMIT_JOB_BG, WORK_EXCEPTION = 7, 8, 13, 14, 18, 25
WORK_STATUS, WORK_DATA, WORK_WARNING = 12, 28, 29
#: The no-op job's islandora_job payload (the job ``nop`` of benchmarks.bench_jobs): 24 bytes.
NOP_PAYLOAD = b'{"func":"nop","args":[]}'


def bench_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ISLANDORA_JOB_ALLOW_ROOT": "true", **extra}
    env.pop("ISLANDORA_JOB_SERVERS", None)
    return env


class Processes:
    """Owner of every process a benchmark starts: ``stop_all`` (also run by ``__exit__``) kills their groups."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        process = subprocess.Popen(list(argv), start_new_session=True, **kwargs)  # type: ignore[call-overload]
        self.procs.append(process)
        return process  # type: ignore[no-any-return]

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL, timeout: float = 20.0) -> None:
        """Signal the process (SIGTERM lets a pool stop warm), then kill whatever is left of its group."""
        with contextlib.suppress(ProcessLookupError):
            if process.poll() is None:
                os.kill(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        if process in self.procs:
            self.procs.remove(process)

    def stop_all(self) -> None:
        for process in list(self.procs):
            self.stop(process)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def status_counts(port: int) -> dict[str, tuple[int, int, int]]:
    """Admin ``status``: function → (total queued or running, running, workers)."""
    counts = {}
    for line in admin(port, "status").splitlines():
        fields = line.split("\t")
        if len(fields) == 4:
            counts[fields[0]] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return counts


def wait_workers(port: int, function: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status_counts(port).get(function, (0, 0, 0))[2] >= count:
            return
        time.sleep(0.02)
    raise RuntimeError(f"{count} worker(s) for {function!r} did not register on port {port} within {timeout}s")


def wait_drained(port: int, function: str, timeout: float = 600.0, interval: float = 0.002) -> float:
    """Wait until gearmand has no job of ``function`` left; return the monotonic time it was seen empty."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if status_counts(port).get(function, (0, 0, 0))[0] == 0:
            return now
        if now > deadline:
            raise RuntimeError(f"{function!r} not drained within {timeout}s: {status_counts(port).get(function)}")
        time.sleep(interval)


def packet(command: int, *args: bytes) -> bytes:
    body = b"\0".join(args)
    return HEADER.pack(REQ, command, len(body)) + body


class LoadClient:
    """A minimal pipelined Gearman client on a raw socket, so the load generator costs as little as possible.

    It reads into one buffer (:class:`~islandora_job.connection.ReadBuffer`): a ``recv(1 MiB)`` per read cost an
    ``mmap``, an ``mremap`` and a ``munmap`` each time, CPU taken from the worker under test on a 2-core machine.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.inbox = ReadBuffer(1 << 20)

    def close(self) -> None:
        self.sock.close()

    def _packets(self) -> Iterator[tuple[int, bytes]]:
        chunk = self.inbox.read(self.sock)
        if not chunk:
            raise ConnectionError("gearmand closed the connection")
        self.buffer += chunk
        view, offset = self.buffer, 0
        while len(view) - offset >= 12:
            _, command, length = HEADER.unpack_from(view, offset)
            if len(view) - offset < 12 + length:
                break
            yield command, view[offset + 12 : offset + 12 + length]
            offset += 12 + length
        self.buffer = view[offset:]

    def foreground(self, function: bytes, payload: bytes, count: int, window: int = 200) -> tuple[float, int]:
        """Run ``count`` foreground jobs with up to ``window`` in flight; (seconds, failures)."""
        submit = packet(SUBMIT_JOB, function, b"", payload)
        sent = done = failed = 0
        started = time.perf_counter()
        while done < count:
            burst = min(window - (sent - done), count - sent)
            if burst > 0:
                self.sock.sendall(submit * burst)
                sent += burst
            for command, body in self._packets():
                if command == WORK_COMPLETE:
                    done += 1
                elif command in (WORK_FAIL, WORK_EXCEPTION):
                    done += 1
                    failed += 1
                del body
        return time.perf_counter() - started, failed

    def round_trips(self, function: bytes, payload: bytes, count: int) -> list[float]:
        """One job at a time; the round trip of each in seconds."""
        submit = packet(SUBMIT_JOB, function, b"", payload)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            self.sock.sendall(submit)
            finished = False
            while not finished:
                for command, _ in self._packets():
                    if command in (WORK_COMPLETE, WORK_FAIL, WORK_EXCEPTION):
                        finished = True
            times.append(time.perf_counter() - started)
        return times

    def background(
        self, function: bytes, payload: bytes, count: int, window: int = 1000, unique: bytes | None = None
    ) -> float:
        """Submit ``count`` background jobs, pipelined; seconds until gearmand acknowledged all of them.

        ``unique``: a prefix; each job gets the unique key ``PREFIX-N`` (what makes a job durable in a stored
        queue; libgearman gives every background job a UUID). None: empty unique keys.
        """
        submit = packet(SUBMIT_JOB_BG, function, b"", payload)
        sent = acked = 0
        started = time.perf_counter()
        while acked < count:
            burst = min(window - (sent - acked), count - sent)
            if burst > 0:
                if unique is None:
                    self.sock.sendall(submit * burst)
                else:
                    self.sock.sendall(
                        b"".join(
                            packet(SUBMIT_JOB_BG, function, b"%s-%d" % (unique, n), payload)
                            for n in range(sent, sent + burst)
                        )
                    )
                sent += burst
            for command, _ in self._packets():
                if command == JOB_CREATED:
                    acked += 1
        return time.perf_counter() - started


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            children = [int(p) for p in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except OSError:
            children = []
        out += children
        todo += children
    return out


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """CPU seconds (user + system) of these processes and their descendants so far, reaped children included.

    A live process's own times plus those of its reaped children (``cutime``, ``cstime``): a child still alive is
    counted once, from its own entry, and a reaped one once, from its parent's. On a shared machine a worker's CPU
    per job varies much less than its jobs per second, which also count the time it waited for a core.
    """
    ticks = 0
    for pid in [*roots, *(child for root in roots for child in descendants(root))]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone between the listing and the read
        ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    """Samples the RSS of a process tree every ``interval``: peak of any one process, and of the tree's sum."""

    def __init__(self, root: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_process_kb = 0
        self.peak_total_kb = 0
        self.samples: list[tuple[float, int, int]] = []  # (time, largest child kb, total kb)
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        pids = [self.root, *descendants(self.root)]
        sizes = [rss_kb(p) for p in pids]
        children = sizes[1:] or [0]
        self.peak_process_kb = max(self.peak_process_kb, *sizes)
        self.peak_total_kb = max(self.peak_total_kb, sum(sizes))
        self.samples.append((time.monotonic(), max(children), sum(sizes)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def worker_config(
    path: Path,
    servers: Sequence[str],
    *,
    concurrency: int,
    modules: Sequence[str] = ("benchmarks.bench_jobs",),
    pool: str = "max_jobs = 0\n",
    level: str = "INFO",
    tail: str = "",
    dead_letters: str = "",
    top: str = "",
) -> Path:
    """An islandora-job worker configuration for a benchmark (no entry points, so only our jobs load)."""
    quoted = ", ".join(f'"{s}"' for s in servers)
    mods = ", ".join(f'"{m}"' for m in modules)
    path.write_text(
        f"servers = [{quoted}]\n"
        f"concurrency = {concurrency}\n"
        f"jobs_modules = [{mods}]\n"
        "entry_points = false\n"
        "allow_root = true\n"
        f"{top}\n"
        "[pool]\n"
        f"{pool}\n"
        "[logging]\n"
        f'level = "{level}"\n'
        "[dead_letters]\n"
        f'path = "{dead_letters}"\n'
        f"{tail}\n"
    )
    return path


def start_pool(
    procs: Processes, config: Path, log: Path, env: dict[str, str] | None = None, python: str = PYTHON
) -> subprocess.Popen[bytes]:
    """``islandora-job worker --config FILE`` as its own process group, output appended to ``log``."""
    with open(log, "ab") as out:
        return procs.start(
            [python, "-m", "islandora_job.cli.main", "worker", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env or bench_env(),
            cwd=str(config.parent),
        )


def machine() -> dict[str, str]:
    import platform

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    return {
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "idle": cpu_idle(),
    }


def cpu_idle(sysfs: Path = Path("/sys")) -> str:
    """How an idle CPU waits: the cpuidle driver, and for a virtual machine's ``haltpoll`` its polling window.

    It decides the dispatch figures of one worker process: between two jobs the process sleeps while gearmand
    answers, and a CPU that halts at once (``haltpoll`` with ``guest_halt_poll_ns`` 0) must be woken by the
    hypervisor, which costs tens of microseconds per job (docs/benchmarks.md, "The direct log line, and a CPU that
    halts when idle").
    """
    try:
        driver = (sysfs / "devices/system/cpu/cpuidle/current_driver").read_text().strip()
    except OSError:
        return "unknown"
    try:
        window = (sysfs / "module/haltpoll/parameters/guest_halt_poll_ns").read_text().strip()
    except OSError:
        return driver
    return f"{driver}, guest_halt_poll_ns {window}"
