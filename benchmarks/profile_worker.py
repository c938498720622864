"""Where a worker process's time goes: the real ``Worker`` (as ``islandora_job.worker.child`` builds it), profiled.

``python -m benchmarks.profile_worker [--jobs N] [--level INFO|WARNING] [--mode fg|bg] [--bridge]``: starts
gearmand on loopback, queues or streams N no-op jobs from a separate process, runs one worker in this process
until it has done N jobs (``max_jobs``), and prints pyinstrument's call tree and the share of the wall time spent
in each hot spot. ``--html FILE`` also writes pyinstrument's HTML report.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import NOP_PAYLOAD, PYTHON, LoadClient, Processes, worker_config
from islandora_job import logsetup
from islandora_job.worker import config as config_module
from islandora_job.worker import runtime
from islandora_job.worker.process import Worker
from tests.support.gearmand import Gearmand

LOAD = """
import sys
from benchmarks.common import LoadClient, NOP_PAYLOAD
client = LoadClient(int(sys.argv[1]))
client.foreground(sys.argv[2].encode(), NOP_PAYLOAD, int(sys.argv[3]))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--level", default="INFO")
    parser.add_argument("--mode", choices=["fg", "bg"], default="bg")
    parser.add_argument("--bridge", action="store_true", help="profile the command bridge running cat instead")
    parser.add_argument("--html", type=Path)
    options = parser.parse_args()
    from pyinstrument import Profiler

    with tempfile.TemporaryDirectory() as tmp, Processes() as procs:
        workdir = Path(tmp)
        server = Gearmand(workdir)
        server.start()
        try:
            tail = '[[command_jobs]]\nname = "bridge_cat"\nargv = ["cat"]\n' if options.bridge else ""
            path = worker_config(workdir / "w.toml", [server.address], concurrency=1, level=options.level, tail=tail)
            config = config_module.load(str(path), environ={})
            logsetup.configure(config.logging.level)
            sys.stderr = io.TextIOWrapper(open("/dev/null", "wb"), write_through=True)  # noqa: SIM115
            logsetup.configure(config.logging.level)  # log lines are formatted and written, to /dev/null
            built = runtime.build(config)
            function = "bridge_cat" if options.bridge else "nop"
            jobs = min(options.jobs, 2000) if options.bridge else options.jobs
            worker = Worker(config.servers, built.router, functions=[function], max_jobs=jobs)
            if options.mode == "bg":
                client = LoadClient(server.port)
                client.background(function.encode(), NOP_PAYLOAD, jobs)
                client.close()
            else:
                procs.start(
                    [PYTHON, "-c", LOAD, str(server.port), function, str(jobs)],
                    stdout=subprocess.DEVNULL,
                    cwd=str(Path(__file__).resolve().parents[1]),
                )
            profiler = Profiler(interval=0.0005)
            started = time.perf_counter()
            profiler.start()
            worker.run()
            profiler.stop()
            seconds = time.perf_counter() - started
        finally:
            server.stop()
    sys.stderr = sys.__stderr__
    print(
        f"{jobs} jobs in {seconds:.2f} s under the profiler: {jobs / seconds:,.0f} jobs/s, "
        f"{seconds / jobs * 1e6:.0f} µs/job"
    )
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if options.html:
        options.html.write_text(profiler.output_html())
    return 0


if __name__ == "__main__":
    sys.exit(main())
