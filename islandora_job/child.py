"""``python -m islandora_job.child``: the former name of a worker process's entry point, still answered.

The entry point is :mod:`islandora_job.worker.child`, which the supervisor starts today. This name stays because a
running supervisor keeps its code in memory across a package upgrade and starts its next children (and the
``--check`` of a reload) by the name it knew, from the code now on disk.
"""

from __future__ import annotations

import sys

from islandora_job.worker.child import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
