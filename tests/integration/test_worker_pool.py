"""The pool: recycling, metrics across recycling, several servers, readiness, dedicated processes, the bridge."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.gearmand import Gearmand, free_port
from tests.support.peers import PlainClient, payload, wait_for
from tests.support.pool import REPO, Pool, children_of, registered_workers, running_pool

FAKE_ROUTER = Path(__file__).resolve().parents[1] / "unit" / "fake_router.py"


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_recycling_after_max_jobs_loses_nothing_and_metrics_keep_counting(tmp_path: Path, gearmand: Gearmand) -> None:
    port = free_port()
    extra = f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
    with running_pool(tmp_path, [gearmand.address], concurrency=2, pool="max_jobs = 7", extra=extra) as pool:
        pool.wait_registered(gearmand.port, "islandora_job_demo.add")
        first = set(pool.children())
        with PlainClient(gearmand.address) as client:
            answers = client.submit_many(
                "islandora_job_demo.add", [payload("islandora_job_demo.add", n, 1) for n in range(60)]
            )
        assert [a.data for a in answers] == [str(n + 1).encode() for n in range(60)]
        pool.wait_log("exited (max_jobs); replacing it")
        assert not first & set(pool.children())

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return str(response.read().decode())

        label = 'islandora_job_jobs_total{job="islandora_job_demo.add",outcome="complete"}'
        # at least 7 exits: the two live processes may hold up to 6 jobs each, so retired ones did 48 or more
        exits = 'islandora_job_worker_exits_total{reason="max_jobs"}'
        live = ('islandora_job_workers{state="idle"}', 'islandora_job_workers{state="busy"}')

        def settled(t: str) -> bool:
            # Recycle exits and the replacement's start reach the supervisor after the last answer: wait for both,
            # or a scrape in between sees 6 exits or one live process.
            return _metric(t, label) >= 60 and _metric(t, exits) >= 7 and sum(_metric(t, g) for g in live) == 2

        text = wait_for(lambda: (t := scrape()) and settled(t) and t, message="60 jobs, 7 recyclings, 2 live")
        assert _metric(text, label) == 60  # counted once each, across 8+ processes
        assert _metric(text, 'islandora_job_job_duration_seconds_count{job="islandora_job_demo.add"}') == 60
        assert (
            _metric(text, 'islandora_job_workers{state="idle"}') + _metric(text, 'islandora_job_workers{state="busy"}')
            == 2
        )
        assert not list(Path("/tmp").glob("prometheus_*"))  # no multiprocess files anywhere


def test_several_servers_one_down_at_start(tmp_path: Path, gearmand: Gearmand) -> None:
    (tmp_path / "second").mkdir()
    second_port = free_port()
    servers = [f"127.0.0.1:{second_port}", gearmand.address]
    with running_pool(tmp_path, servers, concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "islandora_job_demo.add", count=1)
        with PlainClient(gearmand.address) as client:
            assert client.call("islandora_job_demo.add", 1, 1).data == b"2"
        pool.wait_log(f"server 127.0.0.1:{second_port} unreachable")
        second = Gearmand(tmp_path / "second", port=second_port)
        second.start()
        try:
            wait_for(lambda: registered_workers(second_port, "islandora_job_demo.add"), timeout=15)
            # one process, two servers: jobs on both are served by the same process
            answers = []
            for address in servers:
                with PlainClient(address) as c:
                    answers.append(c.call("t.pid"))
            assert answers[0].data == answers[1].data
            pool.wait_log(f"server 127.0.0.1:{second_port} reachable again")
        finally:
            second.stop()


def test_readiness_is_signalled_once_registered(tmp_path: Path, gearmand: Gearmand) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(15)
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
        with running_pool(tmp_path, [gearmand.address], concurrency=1, env=env) as pool:
            messages = []
            while not any(m.startswith(b"READY=1") for m in messages):
                messages.append(notify.recv(4096))
            # CAN_DO was sent before READY; gearmand may take a moment to show it on its admin port
            wait_for(lambda: registered_workers(gearmand.port, "islandora_job_demo.add"), timeout=5)
            # watchdog pings every half interval from the supervisor; children never talk to systemd
            assert notify.recv(4096) == b"WATCHDOG=1"
            assert "NOTIFY_SOCKET" not in Path(f"/proc/{pool.children()[0]}/environ").read_bytes().decode()


def test_no_server_at_start_keeps_trying_and_is_not_ready(tmp_path: Path) -> None:
    port = free_port()
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(1.5)
        with running_pool(tmp_path, [f"127.0.0.1:{port}"], concurrency=1, env={"NOTIFY_SOCKET": path}) as pool:
            wait_for(lambda: "unreachable (1 attempt(s))" in pool.log_text(), message="the first failure logged")
            try:
                message = notify.recv(4096)
            except TimeoutError:
                message = b""
            assert not message.startswith(b"READY")
            server = Gearmand(tmp_path, port=port)
            server.start()
            try:
                wait_for(lambda: registered_workers(port, "islandora_job_demo.add"), timeout=15)
                assert notify.recv(4096).startswith(b"READY=1")
            finally:
                server.stop()
            assert pool.log_text().count("unreachable (") == 1  # one line per window, not per attempt


def test_dedicated_processes_serve_only_their_job(tmp_path: Path, gearmand: Gearmand) -> None:
    dedicated = 'dedicated = {"islandora_job_demo.sleep" = 1}'
    with running_pool(tmp_path, [gearmand.address], concurrency=1, pool=dedicated) as pool:
        wait_for(lambda: len(registered_workers(gearmand.port, "islandora_job_demo.sleep")) == 2)
        assert len(registered_workers(gearmand.port, "islandora_job_demo.add")) == 1
        assert len(pool.children()) == 2


def test_command_bridge_through_the_pool(tmp_path: Path, gearmand: Gearmand) -> None:
    extra = (
        "[[command_jobs]]\n"
        'name = "islandora_derivatives"\n'
        f'argv = ["{sys.executable}", "{FAKE_ROUTER}", "--user={{uid}}", "--uri={{site}}"]\n'
        'allowed_sites = ["http://localhost"]\n'
        "allowed_uids = [1]\n"
        "timeout = 5\n"
    )
    # [[command_jobs]] must be the last table of the file
    with running_pool(tmp_path, [gearmand.address], concurrency=1, tail=extra) as pool:
        pool.wait_registered(gearmand.port, "islandora_derivatives", count=1)
        with PlainClient(gearmand.address) as client:
            ok = client.submit("islandora_derivatives", payload("argv", site="http://localhost", uid=1))
            assert ok.data == b'["--user=1", "--uri=http://localhost"]'
            refused = client.submit("islandora_derivatives", payload("argv", site="http://evil", uid=1))
            assert not refused.ok
        pool.wait_log("refused: site 'http://evil' is not in allowed_sites")


def test_a_bad_configuration_on_sighup_is_refused_and_the_pool_keeps_running(
    tmp_path: Path, gearmand: Gearmand
) -> None:
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "t.pid", count=1)
        children = pool.children()
        pool.config.write_text(pool.config.read_text().replace("concurrency = 1", "concurrency = 0"))
        pool.signal(signal.SIGHUP)
        wait_for(lambda: "new configuration refused" in pool.log_text(), message="the refusal")
        pool.wait_log("concurrency: must be at least 1, not 0")
        assert pool.children() == children
        with PlainClient(gearmand.address) as client:
            assert client.call("t.pid").data == str(children[0]).encode()


def _worker_processes(pool: Pool) -> list[int]:
    """The pool's worker processes (a reload's ``--check`` process is a child too, for a moment)."""
    found = []
    for pid in pool.children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                if b"--status-fd" in file.read():
                    found.append(pid)
        except OSError:
            continue  # gone meanwhile
    return found


def test_a_second_sighup_during_a_reload_leaves_no_old_process_behind(tmp_path: Path, gearmand: Gearmand) -> None:
    """The second reload takes over the hand-over in progress: the old process that was waiting for its
    replacement is still asked to stop, so the pool ends with ``concurrency`` processes, all new."""
    with running_pool(tmp_path, [gearmand.address], concurrency=2) as pool:
        pool.wait_registered(gearmand.port, "t.pid", count=2)
        before = set(pool.children())
        pool.signal(signal.SIGHUP)
        # The first replacement is starting (three worker processes, not counting the configuration check's): its
        # old process waits for it to register.
        wait_for(lambda: len(_worker_processes(pool)) == 3, interval=0.005, message="the first replacement started")
        pool.signal(signal.SIGHUP)
        wait_for(
            lambda: pool.log_text().count("replacing 2 worker process(es) one at a time") == 2,
            timeout=20,
            message="both reloads",
        )
        pool.wait_log("reload done", timeout=30)
        wait_for(
            lambda: len(_worker_processes(pool)) == 2 and not (set(_worker_processes(pool)) & before),
            timeout=20,
            message="two processes, none of them old",
        )


def test_flags_override_the_configuration(tmp_path: Path, gearmand: Gearmand) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text('servers = ["127.0.0.1:1"]\nconcurrency = 5\n')
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "ISLANDORA_JOB_ALLOW_ROOT": "1",
        "ISLANDORA_JOB_CONFIG": str(empty),
        "ISLANDORA_JOB_DEAD_LETTERS_PATH": str(tmp_path / "dl.sqlite3"),
    }
    argv = [sys.executable, "-m", "islandora_job.cli.main", "worker", "--server", gearmand.address]
    argv += ["--jobs-module", "tests.integration.jobs_for_tests", "--concurrency", "1"]
    with open(tmp_path / "log", "wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: registered_workers(gearmand.port, "t.pid"), message="registration")
            assert len(children_of(process.pid)) == 1
        finally:
            process.terminate()
            assert process.wait(20) == 0


def test_recycling_on_lifetime_and_memory_and_json_logs(tmp_path: Path, gearmand: Gearmand) -> None:
    limits = "max_lifetime = 1\nlifetime_splay = 0\nmax_rss_mb = 1"  # every process is over 1 MB
    with running_pool(tmp_path, [gearmand.address], concurrency=1, pool=limits) as pool:
        pool.wait_registered(gearmand.port, "t.pid", count=1)
        pool.config.write_text(pool.config.read_text().replace('[logging]\nlevel = "INFO"', "[logging]\njson = true"))
        pool.signal(signal.SIGHUP)  # pick up the JSON logging too
        wait_for(lambda: "exited (max_lifetime); replacing it" in pool.log_text(), message="a lifetime recycle")
        pool.wait_registered(gearmand.port, "t.pid", count=1)
        with PlainClient(gearmand.address) as client:
            first = client.call("t.pid").data
            wait_for(lambda: "exited (max_rss_mb); replacing it" in pool.log_text(), message="a memory recycle")
            assert client.call("t.pid").data != first  # a job never runs in a process past its limits
        json_lines = [line for line in pool.log_text().splitlines() if line.startswith("{")]
        assert json_lines
        record = json.loads(json_lines[-1])
        assert {"time", "level", "pid", "logger", "message"} <= record.keys()
