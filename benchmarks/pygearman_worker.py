"""pygearman's own ``GearmanWorker`` echoing each job: the Python library contender.

The task is registered under a ``bytes`` name: with a ``str`` name pygearman 0.2.6 crashes at the first job
(``AssertionError: b'name' not found``). Run: ``python pygearman_worker.py HOST:PORT FUNCTION``.
"""

from __future__ import annotations

import contextlib
import sys

import gearman


def echo(_worker: object, job: object) -> bytes:
    return job.data  # type: ignore[attr-defined,no-any-return]


def main() -> None:
    worker = gearman.GearmanWorker([sys.argv[1]])
    worker.register_task(sys.argv[2].encode(), echo)
    worker.work()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
