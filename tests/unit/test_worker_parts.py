"""Small parts of the runtime: the watchdog, systemd notify, pool metrics, the dead-letter store, slots."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

from islandora_job.worker.config import build
from islandora_job.worker.deadletters import DeadLetterStore
from islandora_job.worker.metrics import BUCKETS, JobStats, PoolMetrics
from islandora_job.worker.pool import SlotSpec, slot_specs
from islandora_job.worker.process import Watchdog
from islandora_job.worker.sdnotify import Notifier


def test_watchdog_fires_once_for_an_overrun_and_never_for_a_disarmed_job() -> None:
    fired: list[object] = []
    done = threading.Event()

    def on_expiry(token: object) -> None:
        fired.append(token)
        done.set()

    watchdog = Watchdog(on_expiry)
    watchdog.start()
    watchdog.arm("long", 60)  # the thread now waits for this deadline...
    watchdog.arm("quick", 0.05)  # ...and an earlier one must wake it
    assert watchdog.disarm()
    watchdog.arm("overrun", 0.1)
    started = time.monotonic()
    assert done.wait(5)
    assert 0.09 <= time.monotonic() - started < 2
    assert fired == ["overrun"]
    assert not watchdog.disarm()  # the caller learns that the watchdog answered


def test_sd_notify_sends_datagrams(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
        assert notifier.watchdog_interval == 2.0
        assert notifier.notify(READY=1, STATUS="serving")
        assert server.recv(1024) == b"READY=1\nSTATUS=serving"
    assert not Notifier.from_environment({}).notify(READY=1)


def test_sd_notify_abstract_socket() -> None:
    name = f"islandora-job-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        assert Notifier(f"@{name}").notify(WATCHDOG=1)
        assert server.recv(1024) == b"WATCHDOG=1"


def test_pool_metrics_survive_recycling() -> None:
    metrics = PoolMetrics()
    first = JobStats()
    first.observe("a", "complete", 0.001)
    first.observe("a", "exception", 2.0)
    metrics.update(101, JobStats.from_json(first.to_json()), busy=True)
    assert metrics.workers() == (1, 0)
    metrics.retire(101, "max_jobs")  # the child is recycled: its counts stay
    second = JobStats()
    second.observe("a", "complete", 0.5)
    metrics.update(102, second, busy=False)
    totals = metrics.totals()
    assert totals.counts == {("a", "complete"): 2, ("a", "exception"): 1}
    assert sum(totals.buckets["a"]) == 3
    assert totals.buckets["a"][BUCKETS.index(0.005)] == 1
    assert abs(totals.sums["a"] - 2.501) < 1e-9
    assert metrics.workers() == (0, 1)
    families = {family.name: family for family in metrics.collect()}
    assert {s.value for s in families["islandora_job_jobs"].samples if s.labels["outcome"] == "complete"} == {2}
    assert [s.value for s in families["islandora_job_worker_exits"].samples] == [1]


def test_dead_letter_store(tmp_path: Path) -> None:
    store = DeadLetterStore(str(tmp_path / "sub" / "dl.sqlite3"))
    first = store.record(
        function="f",
        name="n",
        handle="H:1",
        unique="u",
        payload=b"\x00p",
        error="e",
        attempts=3,
        failed_at=time.time() - 7200,
    )
    second = store.record(function="g", name="n", handle="H:2", unique="", payload=b"q", error="e2", attempts=1)
    assert [letter.id for letter in store.list()] == [second, first]
    assert [letter.id for letter in store.list(function="f")] == [first]
    letter = store.get(first)
    assert letter is not None and letter.payload == b"\x00p" and letter.attempts == 3
    store.mark_requeued(first, "H:9")
    assert [x.id for x in store.list(include_requeued=False)] == [second]
    assert store.purge(older_than=3600) == 1
    assert store.purge([second]) == 1
    assert store.list() == []


def test_slots_are_concurrency_then_dedicated() -> None:
    config = build({"concurrency": 2, "pool": {"dedicated": {"islandora_derivatives": 2}}}, "f")
    dedicated = SlotSpec(("islandora_derivatives",))
    assert slot_specs(config) == [SlotSpec(), SlotSpec(), dedicated, dedicated]


def test_events_of_a_worker_process_reach_the_supervisors_endpoint() -> None:
    """A dead letter that could not be written is counted in the child and exported by the supervisor."""
    from islandora_job.worker import metrics as metrics_module

    metrics_module.count_event("dead_letters_unrecorded", 2)
    snapshot = JobStats.from_json(json.loads(json.dumps(JobStats().to_json())))  # as sent over the status pipe
    pool = PoolMetrics()
    pool.update(101, snapshot, busy=False)
    pool.retire(101, "max_jobs")  # counters survive the process
    families = {family.name: family for family in pool.collect()}
    [sample] = families["islandora_job_dead_letters_unrecorded"].samples
    assert sample.name == "islandora_job_dead_letters_unrecorded_total" and sample.value >= 2
