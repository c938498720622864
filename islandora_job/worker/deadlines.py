"""The deadline of the job a worker process is running, shared with its supervisor in 8 bytes of memory.

A worker's watchdog thread answers a job that overruns its time limit. A job stuck in C code that holds the GIL (a
regular expression backtracking for ever, a C extension in a loop) blocks that thread too, so the supervisor is the
backstop: each child publishes its current job's deadline (``time.monotonic()``: CLOCK_MONOTONIC, one clock for every
process on the machine) in a memfd that the supervisor maps as well, and a child still inside a job well past its
deadline is killed; gearmand then requeues the job, up to its ``--job-retries``. Publishing is a store into shared
memory: no system call on the job path.
"""

from __future__ import annotations

import mmap
import os
import struct

_DEADLINE = struct.Struct("d")


class DeadlineSlot:
    """One child's slot. 0.0 means "not in a job"."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, _DEADLINE.size)

    @classmethod
    def create(cls) -> DeadlineSlot:
        """A new slot for a child; pass ``fd`` to it (it is close-on-exec unless passed explicitly)."""
        fd = os.memfd_create("islandora-job-deadline", os.MFD_CLOEXEC)
        os.ftruncate(fd, _DEADLINE.size)
        return cls(fd)

    def publish(self, deadline: float) -> None:
        _DEADLINE.pack_into(self._map, 0, deadline)

    def read(self) -> float:
        return float(_DEADLINE.unpack_from(self._map, 0)[0])

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)
