"""A worker pool at rest: CPU used by an idle pool, and each process's resident memory.

Starts gearmand on a free loopback port and ``islandora-job worker --concurrency N`` (demo jobs), waits until
every child has registered, then reads the whole process tree's CPU time from /proc over a window.
Run: ``.venv/bin/python -m benchmarks.idle_pool [--concurrency 4] [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.integration.peers import wait_for_workers
from tests.support.gearmand import Gearmand
from tests.support.pool import children_of

CLI = str(Path(sys.executable).with_name("islandora-job"))


def process_tree(pid: int) -> list[int]:
    return [pid, *(p for child in children_of(pid) for p in process_tree(child))]


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Gearmand(Path(tmp))
        server.start()
        env = {**os.environ, "ISLANDORA_JOB_ALLOW_ROOT": "true"}
        argv = [CLI, "worker", "--config", os.devnull, "--server", server.address]
        argv += ["--concurrency", str(options.concurrency), "--jobs-module", "islandora_job_demo.jobs"]
        pool = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
        try:
            wait_for_workers(server.port, "islandora_job.ping", options.concurrency, timeout=30)
            pids = process_tree(pool.pid)
            before = cpu_seconds(pids)
            time.sleep(options.seconds)
            used = cpu_seconds(pids) - before
            window = f"{options.seconds:g} s"
            print(f"idle pool of {options.concurrency} (+ supervisor) over {window}: {used:.3f} CPU-seconds")
            for pid in pids:
                role = "supervisor" if pid == pool.pid else "child"
                print(f"  {role:10} pid {pid}: RSS {rss_mb(pid):.1f} MB")
        finally:
            pool.terminate()
            pool.wait(30)
            server.stop()


if __name__ == "__main__":
    main()
