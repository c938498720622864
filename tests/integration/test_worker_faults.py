"""Faults: a child killed mid-job, gearmand restarted, a hung job, SIGTERM with a job in flight, SIGHUP under load."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from islandora_job.codec import Command
from islandora_job.errors import IslandoraJobError
from tests.support.gearmand import Gearmand
from tests.support.peers import Answer, PlainClient, payload, wait_for
from tests.support.pool import registered_workers, running_pool


def _submit_in_thread(address: str, func: str, *args: object) -> tuple[threading.Thread, list[Answer]]:
    """Submit one job from a thread; ``answers`` gets its answer (nothing if the connection was lost)."""
    answers: list[Answer] = []

    def run() -> None:
        client = PlainClient(address, timeout=60)
        try:
            answers.append(client.call(func, *args))
        except IslandoraJobError:
            pass  # the test asserts on what arrived
        finally:
            client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answers


def test_sigkill_of_a_child_mid_job_runs_the_job_again_elsewhere(tmp_path: Path, gearmand: Gearmand) -> None:
    marker = tmp_path / "slow"
    with running_pool(tmp_path, [gearmand.address], concurrency=2) as pool:
        pool.wait_registered(gearmand.port, "t.slow")
        thread, answers = _submit_in_thread(gearmand.address, "t.slow", 0.5, str(marker))
        started = Path(str(marker) + ".started")
        victim = int(wait_for(lambda: started.exists() and started.read_text(), message="the job to start"))
        os.kill(victim, signal.SIGKILL)
        thread.join(30)
        assert answers and answers[0].ok, answers
        survivor = int(answers[0].data)
        assert survivor != victim
        assert marker.read_text() == f"{survivor}\n"  # completed once, by the other process
        # the supervisor replaced the dead child and is still there
        wait_for(lambda: len(pool.children()) == 2 and victim not in pool.children(), message="a replacement")
        pool.wait_log(f"worker process {victim} died (killed by SIGKILL)")


def test_a_job_that_kills_its_process_follows_the_same_rule(tmp_path: Path, gearmand: Gearmand) -> None:
    marker = tmp_path / "segfault"
    with running_pool(tmp_path, [gearmand.address], concurrency=2) as pool:
        pool.wait_registered(gearmand.port, "t.segfault")
        with PlainClient(gearmand.address, timeout=30) as client:
            answer = client.call("t.segfault", str(marker))  # crashes once, then is run again and completes
            assert answer.ok
            assert client.call("islandora_job_demo.add", 1, 1).data == b"2"
        wait_for(lambda: "killed by SIGSEGV" in pool.log_text(), message="the supervisor to log the crash")


def test_gearmand_restart_workers_register_again_within_5s(tmp_path: Path, gearmand: Gearmand) -> None:
    with running_pool(tmp_path, [gearmand.address], concurrency=2) as pool:
        pool.wait_registered(gearmand.port, "islandora_job_demo.add")
        children = pool.children()
        gearmand.restart()
        restarted = time.monotonic()
        pool.wait_registered(gearmand.port, "islandora_job_demo.add", timeout=5)
        with PlainClient(gearmand.address) as client:
            assert client.call("islandora_job_demo.add", 20, 22).data == b"42"
        assert time.monotonic() - restarted < 5
        assert pool.children() == children  # the same processes reconnected; nothing crashed


def test_a_hung_job_fails_within_its_limit_and_the_slot_comes_back(tmp_path: Path, gearmand: Gearmand) -> None:
    marker = tmp_path / "hang"
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "t.hang", count=1)
        with PlainClient(gearmand.address, timeout=30) as client:
            started = time.monotonic()
            answer = client.call("t.hang", str(marker))  # timeout=1 declared on the job
            elapsed = time.monotonic() - started
            assert answer.command is Command.WORK_FAIL
            assert 1.0 <= elapsed < 3.0
            replaced = time.monotonic()
            assert client.call("islandora_job_demo.add", 1, 2).data == b"3"
            assert time.monotonic() - replaced < 5
            spin = client.call("t.spin")  # a CPU-bound hang is answered too
            assert spin.command is Command.WORK_FAIL
            assert client.call("islandora_job_demo.add", 2, 2).data == b"4"
        assert marker.read_text() == "ran\n"  # not run again
        pool.wait_log("outcome=timeout limit=1s")


def test_a_job_holding_the_gil_past_its_limit_is_killed_by_the_supervisor(tmp_path: Path) -> None:
    """The worker's watchdog thread cannot run while C code holds the GIL; the supervisor kills the child a few
    seconds past the limit, gearmand gives up at its --job-retries, and the slot serves again."""
    server = Gearmand(tmp_path, extra_args=["--job-retries=1"])
    server.start()
    marker = tmp_path / "gil"
    try:
        with running_pool(tmp_path, [server.address], concurrency=1) as pool:
            pool.wait_registered(server.port, "t.gil_hog", count=1)
            with PlainClient(server.address, timeout=60) as client:
                started = time.monotonic()
                answer = client.call("t.gil_hog", str(marker))  # timeout=1 declared on the job
                elapsed = time.monotonic() - started
                assert answer.command is Command.WORK_FAIL  # gearmand's, at --job-retries=1
                assert elapsed < 1 + 5 + 5, elapsed  # limit + the supervisor's grace + its check interval and slack
                assert client.call("islandora_job_demo.add", 1, 2).data == b"3"
            pool.wait_log("still in a job", "stuck in a job past its time limit")
        assert marker.read_text() == "ran\n"  # gearmand's retry limit of 1: it never ran again
    finally:
        server.stop()


def test_sigterm_with_a_job_in_flight_delivers_its_result(tmp_path: Path, gearmand: Gearmand) -> None:
    marker = tmp_path / "slow"
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "t.slow", count=1)
        thread, answers = _submit_in_thread(gearmand.address, "t.slow", 1.0, str(marker))
        wait_for(Path(str(marker) + ".started").exists, message="the job to start")
        pool.signal(signal.SIGTERM)
        assert pool.wait(20) == 0
        thread.join(10)
        assert answers and answers[0].ok
        assert marker.read_text().count("\n") == 1
        assert not registered_workers(gearmand.port, "t.slow")
        pool.wait_log("warm stop")


def test_second_sigterm_is_a_cold_stop(tmp_path: Path, gearmand: Gearmand) -> None:
    marker = tmp_path / "slow"
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "t.slow", count=1)
        children = pool.children()
        thread, _answers = _submit_in_thread(gearmand.address, "t.slow", 30, str(marker))
        wait_for(Path(str(marker) + ".started").exists, message="the job to start")
        pool.signal(signal.SIGTERM)
        time.sleep(0.2)  # let the first one be handled: two signals in one wake-up are still two
        pool.signal(signal.SIGTERM)
        assert pool.wait(10) == 1
        for pid in children:
            wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), message=f"child {pid} gone")
        pool.wait_log("cold stop")
    thread.join(0.1)


def test_sighup_under_load_fails_no_job_and_replaces_every_child(tmp_path: Path, gearmand: Gearmand) -> None:
    with running_pool(tmp_path, [gearmand.address], concurrency=2) as pool:
        pool.wait_registered(gearmand.port, "t.slow")
        before = set(pool.children())
        client = PlainClient(gearmand.address, timeout=60)
        results: list[Answer] = []
        done = threading.Event()

        def load() -> None:
            try:
                while not done.is_set():
                    results.extend(client.submit_many("t.slow", [payload("t.slow", 0.02)] * 10))
            finally:
                client.close()

        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        wait_for(lambda: len(results) >= 20, message="load")
        pool.write_config(concurrency=3, modules=["tests.integration.jobs_for_tests"])
        pool.signal(signal.SIGHUP)
        wait_for(
            lambda: len(pool.children()) == 3 and not (set(pool.children()) & before),
            timeout=30,
            message="every child replaced",
        )
        count = len(results)
        wait_for(lambda: len(results) >= count + 20, message="load after the reload")
        done.set()
        thread.join(30)
        assert results and all(answer.ok for answer in results)
        pool.wait_log("replacing 2 worker process(es) one at a time")
