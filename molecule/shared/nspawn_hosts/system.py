"""Commands, the harness's lock and what /proc says: the few system facts every other module needs."""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


class HarnessError(Exception):
    """A failure the command line reports as one message (exit 2), never as a traceback."""


def log(msg: str) -> None:
    print(f"nspawn-hosts: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], *, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (an argv list, never a shell line); with check, a failure raises with its output."""
    res = subprocess.run(cmd, text=True, capture_output=True, check=False, timeout=timeout)
    if check and res.returncode != 0:
        raise HarnessError(f"command failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout}{res.stderr}")
    return res


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on path (created if missing), saying so when another command holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another harness command holding {path}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def is_zombie(pid: int) -> bool:
    """True for an exited process not yet reaped, and for one that is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and not is_zombie(pid)


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(p) for p in (task / "children").read_text().split()]
    return out


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to timeout seconds for pids to exit; returns those still running."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if running(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if running(p)]
    return left


def mounts_under(base: Path) -> list[str]:
    """Mount points at or below base, deepest first (the order to unmount them in)."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target == str(base) or target.startswith(str(base) + "/"):
            out.append(target)
    return sorted(out, key=len, reverse=True)


def nspawn_pids_under(root: Path) -> list[int]:
    """Every systemd-nspawn process booting a directory under root (found by its argv, to be killed by pid)."""
    marker = str(root) + "/"
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"systemd-nspawn") and any(a.decode(errors="replace").startswith(marker) for a in argv):
            pids.append(int(proc.name))
    return pids
