"""Client micro-benchmark: foreground round trips, submit_batch throughput, background submission rate.

Runs against a real gearmand (builtin queue) on a free loopback port, with the raw-socket echo worker as the
peer, so the client is what is measured. Prints medians of several rounds; never asserts a time.
Run: ``.venv/bin/python -m benchmarks.client_bench [--rounds N]`` (``make bench`` does).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from islandora_job.client import JobClient
from tests.integration.peers import wait_for_workers
from tests.support.gearmand import Gearmand

PAYLOAD_ARGS = ("x",)  # {"func":"noop","args":["x"],...}: the islandora_job payload of a no-op job


def rate(count: int, action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return count / (time.perf_counter() - started)


def one_by_one(client: JobClient, count: int) -> None:
    for _ in range(count):
        client.submit("noop", *PAYLOAD_ARGS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2000)
    options = parser.parse_args()
    results: dict[str, list[float]] = {
        "foreground round trips/s": [],
        "submit_batch jobs/s": [],
        "background 10k s": [],
    }
    raw_worker = str(Path(__file__).with_name("raw_worker.py"))
    n = options.jobs
    with tempfile.TemporaryDirectory() as tmp:
        server = Gearmand(Path(tmp))
        server.start()
        worker = subprocess.Popen([sys.executable, raw_worker, server.address, "noop"])
        try:
            wait_for_workers(server.port, "noop")
            with JobClient([server.address]) as client:
                client.submit("noop", *PAYLOAD_ARGS)  # connect and warm up
                for _ in range(options.rounds):
                    results["foreground round trips/s"].append(rate(n, lambda: one_by_one(client, n)))
                    batch_rate = rate(n, lambda: client.submit_batch([("noop", PAYLOAD_ARGS)] * n))
                    results["submit_batch jobs/s"].append(batch_rate)
                    started = time.perf_counter()
                    client.submit_batch([("queued_only", PAYLOAD_ARGS)] * 10_000, background=True)
                    results["background 10k s"].append(time.perf_counter() - started)
        finally:
            worker.kill()
            worker.wait()
            server.stop()
    print(f"{'measure':32} {'median':>10} {'min':>10} {'max':>10}")
    for name, values in results.items():
        print(f"{name:32} {statistics.median(values):10.2f} {min(values):10.2f} {max(values):10.2f}")


if __name__ == "__main__":
    main()
