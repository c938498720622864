"""The rate of ``islandora-job queue move``, against the rate of submitting the same jobs.

``python -m benchmarks.queue_move --jobs 100000 --queue builtin`` queues JOBS background jobs (three priorities,
each with its own unique key, two functions) on a source gearmand, moves them with the real command to a target
gearmand with the same queue type, and prints both rates: the pipelined submission of the jobs to the source
(the baseline: what gearmand and the back-end take per job) and the move, which has to grab, submit and complete
each job. The ratio is what the mover costs over the back-end's own submission rate. Measure, do not assert.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import status_counts
from islandora_job.address import ServerAddress
from islandora_job.codec import Command, encode
from islandora_job.connection import Connection
from tests.support.gearmand import Gearmand

SUBMITS = (Command.SUBMIT_JOB_HIGH_BG, Command.SUBMIT_JOB_BG, Command.SUBMIT_JOB_LOW_BG)


def queue_args(queue: str, workdir: Path, name: str) -> list[str]:
    if queue == "builtin":
        return []
    if queue == "sqlite":
        return ["-q", "libsqlite3", f"--libsqlite3-db={workdir / f'{name}.sqlite3'}"]
    raise SystemExit(f"--queue {queue!r}: builtin or sqlite")


def submit(port: int, jobs: int, chunk: int = 5000) -> float:
    """Pipelined background submissions; returns the seconds until every one was acknowledged."""
    connection = Connection(ServerAddress("127.0.0.1", port), io_timeout=120)
    connection.connect()
    started = time.monotonic()
    try:
        for first in range(0, jobs, chunk):
            count = min(chunk, jobs - first)
            connection.send(
                b"".join(
                    encode(SUBMITS[i % 3], f"bench_move_{i % 2}", f"k{i}", b'{"func":"nop","args":[%d]}' % i)
                    for i in range(first, first + count)
                )
            )
            acknowledged = 0
            while acknowledged < count:
                acknowledged += len(connection.receive())
    finally:
        connection.close()
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--queue", default="builtin", help="builtin or sqlite (both servers)")
    parser.add_argument("--window", type=int, default=None, help="the mover's --window (default: its own)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-queue-move-"))
    source = Gearmand(workdir, extra_args=queue_args(args.queue, workdir, "source"))
    target = Gearmand(workdir, extra_args=queue_args(args.queue, workdir, "target"))
    try:
        source.start(timeout=30)
        target.start(timeout=30)
        submit_seconds = submit(source.port, args.jobs)
        before = status_counts(source.port)
        command = [sys.executable, "-m", "islandora_job.cli.main", "queue", "move"]
        command += ["--from", source.address, "--to", target.address]
        if args.window:
            command += ["--window", str(args.window)]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        move_seconds = time.monotonic() - started
        after = status_counts(target.port)
        if done.returncode != 0 or after != before:
            print(done.stdout, done.stderr, before, after, sep="\n", file=sys.stderr)
            return 1
    finally:
        source.stop()
        target.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    submit_rate = args.jobs / submit_seconds
    move_rate = args.jobs / move_seconds
    print(f"queue {args.queue}, {args.jobs} jobs")
    print(f"submit to the source (baseline): {submit_seconds:7.1f} s  {submit_rate:9.0f} jobs/s")
    print(f"queue move (whole command):      {move_seconds:7.1f} s  {move_rate:9.0f} jobs/s")
    print(f"move / submit rate:              {move_rate / submit_rate:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
