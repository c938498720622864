"""Dead letters that cannot be written, end to end: a real pool and gearmand, a full disk, a store locked by
another process. The failures are logged whole, and the pool goes on serving without stalling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.gearmand import Gearmand
from tests.support.peers import PlainClient
from tests.support.pool import running_pool
from tests.unit.test_deadletters import LOCKER, tmpfs


def test_a_full_disk_loses_no_failure_and_the_pool_serves_on(tmp_path: Path, gearmand: Gearmand) -> None:
    with tmpfs(tmp_path / "full", "64k") as mount:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        env = {"ISLANDORA_JOB_DEAD_LETTERS_PATH": str(mount / "dl.sqlite3")}
        with running_pool(tmp_path, [gearmand.address], concurrency=1, env=env) as pool:
            pool.wait_registered(gearmand.port, "t.pid", count=1)
            with PlainClient(gearmand.address) as client:
                failed = client.submit_many("t.pid", [b"not json %d " % n + b"x" * 10_000 for n in range(5)])
                served = client.call("t.pid")
            log = pool.wait_log(*(f"handle={a.handle.decode()} " for a in failed))
    assert not any(a.ok for a in failed) and served.ok
    lines = [line for line in log.splitlines() if "dead letter NOT recorded" in line]
    assert len(lines) == 5, log
    for n, line in enumerate(sorted(lines, key=lambda text: text.split("not json ")[1])):
        assert " ERROR " in line and "function=t.pid" in line and "unique=" in line
        assert f"payload (first 4096 of 10011 bytes)=not json {n} xxx" in line


def test_a_locked_store_does_not_stall_the_pool(tmp_path: Path, gearmand: Gearmand) -> None:
    """A lock held elsewhere cost 10 s per failed job (and the record); now at most the 0.2 s lock timeout."""
    store = tmp_path / "dl.sqlite3"
    env = {"ISLANDORA_JOB_DEAD_LETTERS_PATH": str(store)}
    with running_pool(tmp_path, [gearmand.address], concurrency=1, env=env) as pool:
        pool.wait_registered(gearmand.port, "t.pid", count=1)
        with PlainClient(gearmand.address) as client:
            assert not client.submit("t.pid", b"not json").ok  # the store now exists
            with subprocess.Popen(
                [sys.executable, "-c", LOCKER, str(store)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            ) as locker:
                assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
                started = time.monotonic()
                failed = client.submit_many("t.pid", [b"locked out %d" % n for n in range(3)])
                served = client.call("t.pid")
                elapsed = time.monotonic() - started
                locker.communicate("")
        log = pool.wait_log(*(f"handle={a.handle.decode()} " for a in failed))
    assert not any(a.ok for a in failed) and served.ok
    assert elapsed < 10, f"three failures and a ping took {elapsed:.1f}s"  # 30 s before: 10 s per failure
    assert log.count("dead letter NOT recorded") == 3 and "database is locked" in log
