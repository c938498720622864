"""``islandora-job queue move`` between real gearmands on real persistent queues (sqlite, redis, PostgreSQL).

Each test queues background jobs in the three priorities, with unique keys and without, on a gearmand whose queue
lives in one back-end, runs the real command (a subprocess, as an operator or the role would), and checks on the
target by grabbing every job with a worker: same function, unique key and payload, and priorities in the order
gearmand hands them out (every high before every normal before every low). The source's store must be empty:
restarting the source replays nothing. The crash test SIGKILLs the mover midway and runs it again.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from islandora_job.address import ServerAddress
from islandora_job.codec import Command, encode
from islandora_job.connection import Connection
from tests.integration.peers import wait_for_workers
from tests.support.gearmand import Gearmand, admin, free_port
from tests.support.processes import stop_process

MOVER = [sys.executable, "-m", "islandora_job.cli.main", "queue", "move"]
PRIORITY_SUBMIT = {
    "high": Command.SUBMIT_JOB_HIGH_BG,
    "normal": Command.SUBMIT_JOB_BG,
    "low": Command.SUBMIT_JOB_LOW_BG,
}
ORDER = {"high": 0, "normal": 1, "low": 2}


# -- back-ends -----------------------------------------------------------------------------------------------------


@contextmanager
def _process(argv: list[str], log: Path, port: int) -> Iterator[None]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        yield
    finally:
        stop_process(proc, 10)


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc is None or proc.poll() is None, f"{proc.args!r} exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextmanager
def redis_queue(base: Path) -> Iterator[list[str]]:
    server = shutil.which("redis-server")
    assert server, "redis-server is required (make system-deps installs it)"
    port = free_port()
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(base), "--save", "", "--appendonly", "no"]
    with _process(argv, base / "redis.log", port):
        yield ["-q", "redis", "--redis-server=127.0.0.1", f"--redis-port={port}", "--redis-prefix=ijmove_"]


@contextmanager
def postgres_queue(base: Path) -> Iterator[list[str]]:
    """A PostgreSQL cluster of its own (initdb, trust on loopback), as the postgres user when run as root."""
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    assert bindirs, "PostgreSQL is required (Debian postgresql)"
    bindir = bindirs[0]
    as_user: list[str] = []
    if os.geteuid() == 0:
        # The postgres user must reach the data directory. Not under tmp_path: every pytest process that starts
        # (another session on the machine) sets /tmp/pytest-of-root back to 0700.
        home = Path(tempfile.mkdtemp(prefix="ij-queue-move-pg-"))
        home.chmod(0o755)
        as_user = ["runuser", "-u", "postgres", "--"]
    else:
        home = base
    data = home / "pgdata"
    data.mkdir()
    if as_user:
        postgres = pwd.getpwnam("postgres")
        os.chown(data, postgres.pw_uid, postgres.pw_gid)
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
            check=True,
            capture_output=True,
        )
        port = free_port()
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
        subprocess.run(
            [*pg_ctl, "-o", options, "-l", str(data / "log"), "-w", "start"], check=True, capture_output=True
        )
        try:
            conninfo = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
            yield ["-q", "Postgres", f"--libpq-conninfo={conninfo}", "--libpq-table=ijmove"]
        finally:
            subprocess.run([*pg_ctl, "-m", "immediate", "-w", "stop"], capture_output=True, check=False)
    finally:
        if home is not base:
            shutil.rmtree(home, ignore_errors=True)


@contextmanager
def backend(kind: str, base: Path) -> Iterator[list[str]]:
    base.mkdir()
    if kind == "sqlite":
        yield ["-q", "libsqlite3", f"--libsqlite3-db={base / 'queue.sqlite3'}"]
    elif kind == "redis":
        with redis_queue(base) as args:
            yield args
    elif kind == "postgres":
        with postgres_queue(base) as args:
            yield args
    else:
        raise ValueError(kind)


@contextmanager
def gearmand(workdir: Path, args: list[str]) -> Iterator[Gearmand]:
    workdir.mkdir(exist_ok=True)
    server = Gearmand(workdir, extra_args=args)
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()


# -- jobs ------------------------------------------------------------------------------------------------------------


def jobs(count: int, functions: tuple[str, ...] = ("ij_move_a", "ij_move_b")) -> list[tuple[str, str, str, bytes]]:
    """(function, priority, unique, payload): every priority, mostly keyed, every 7th without a key."""
    result = []
    for i in range(count):
        priority = ("high", "normal", "low")[(i * 7 // 3) % 3]
        unique = "" if i % 7 == 3 else f"key-{i}"
        result.append((functions[i % len(functions)], priority, unique, f'{{"n": {i}, "bin": "\x01\t"}}'.encode()))
    return result


def submit(server: Gearmand, batch: list[tuple[str, str, str, bytes]]) -> None:
    connection = Connection(ServerAddress("127.0.0.1", server.port))
    connection.connect()
    try:
        connection.send(b"".join(encode(PRIORITY_SUBMIT[p], f, u, d) for f, p, u, d in batch))
        answers = 0
        while answers < len(batch):
            packets = connection.receive()
            assert all(p.command is Command.JOB_CREATED for p in packets), packets
            answers += len(packets)
    finally:
        connection.close()


def grab_all(server: Gearmand, function: str) -> list[tuple[bytes, bytes]]:
    """Every job gearmand hands out for ``function``, in its order, as (unique, payload); none is completed."""
    connection = Connection(ServerAddress("127.0.0.1", server.port))
    connection.connect()
    got: list[tuple[bytes, bytes]] = []
    try:
        connection.send_packet(Command.CAN_DO, function)
        while True:
            connection.send(encode(Command.GRAB_JOB_UNIQ) * 200)
            answers, empty = 0, False
            while answers < 200:
                for packet in connection.receive():
                    if packet.command is Command.NOOP:
                        continue
                    answers += 1
                    if packet.command is Command.NO_JOB:
                        empty = True
                    else:
                        assert packet.command is Command.JOB_ASSIGN_UNIQ, packet
                        assert packet["task"] == function.encode()
                        got.append((packet["unique"], packet["data"]))
            if empty:
                return got
    finally:
        connection.close()


def priority_status(server: Gearmand) -> dict[str, tuple[int, int, int]]:
    lines = admin(server.port, "prioritystatus").splitlines()
    result = {}
    for line in lines:
        fields = line.split("\t")
        if len(fields) == 5 and sum(map(int, fields[1:4])):
            result[fields[0]] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return result


def waiting(server: Gearmand) -> int:
    return sum(sum(counts) for counts in priority_status(server).values())


def check_target(server: Gearmand, batch: list[tuple[str, str, str, bytes]], *, keyed_once: bool = True) -> int:
    """Every job of ``batch`` is queued on ``server``; returns how many extra (duplicated) jobs it holds."""
    extra = 0
    for function in sorted({f for f, *_ in batch}):
        expected = [(p, u, d) for f, p, u, d in batch if f == function]
        priority_of = {d: p for p, _, d in expected}
        got = grab_all(server, function)
        # priorities: gearmand hands out all high, then normal, then low; so the sequence must not go back
        ranks = [ORDER[priority_of[d]] for _, d in got]
        assert ranks == sorted(ranks), f"{function}: priorities not kept (order of ranks {ranks[:50]}...)"
        keyed = {u.encode(): d for _, u, d in expected if u}
        got_keyed = [(u, d) for u, d in got if u in keyed]
        assert {u for u, _ in got_keyed} == set(keyed), f"{function}: missing keys"
        assert all(keyed[u] == d for u, d in got_keyed), f"{function}: a payload changed"
        if keyed_once:
            assert len(got_keyed) == len(keyed), f"{function}: a keyed job is duplicated"
        keyless = sorted(d for _, u, d in expected if not u)
        got_keyless = sorted(d for u, d in got if u not in keyed)
        assert set(keyless) <= set(got_keyless), f"{function}: keyless jobs missing"
        assert all(len(u) == 32 for u, _ in got if u not in keyed), "keyless jobs get a fresh key on the target"
        extra += len(got) - len(expected)
    return extra


def run_mover(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MOVER, *args], capture_output=True, text=True, timeout=timeout, check=False)


# -- tests -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), [("sqlite", "redis"), ("redis", "sqlite"), ("postgres", "sqlite")])
def test_move_keeps_every_job_key_payload_and_priority(tmp_path: Path, old: str, new: str) -> None:
    batch = jobs(600)
    if old == "postgres":  # its table refuses a second row with the same (empty) key: only keyed jobs there
        batch = [job for job in batch if job[2]]
    with backend(old, tmp_path / "old-store") as old_args, backend(new, tmp_path / "new-store") as new_args:
        with gearmand(tmp_path / "old", old_args) as source, gearmand(tmp_path / "new", new_args) as target:
            submit(source, batch)
            before = priority_status(source)
            assert sum(map(sum, before.values())) == len(batch)

            done = run_mover("--from", source.address, "--to", target.address, "--json")
            assert done.returncode == 0, done.stderr
            summary = json.loads(done.stdout)
            assert summary["moved"] == len(batch) and summary["left"] == 0
            for entry in summary["functions"]:
                assert (entry["high"], entry["normal"], entry["low"]) == before[entry["function"]]

            assert priority_status(target) == before, "the target's prioritystatus differs from the source's"
            assert waiting(source) == 0
            source.restart()
            assert waiting(source) == 0, f"the {old} store still holds jobs: they were replayed"
            target.restart()  # what the target holds, it holds in its store
            if new != "postgres":
                assert priority_status(target) == before
            assert check_target(target, batch) == 0


def test_sigkill_midway_loses_nothing_and_a_rerun_finishes(tmp_path: Path) -> None:
    """sqlite on both sides: each submission to the target is a disk write, slow enough to kill the mover midway."""
    batch = jobs(1000)
    with backend("sqlite", tmp_path / "old-store") as old_args, backend("sqlite", tmp_path / "new-store") as new_args:
        with gearmand(tmp_path / "old", old_args) as source, gearmand(tmp_path / "new", new_args) as target:
            submit(source, batch)
            mover = subprocess.Popen(
                [*MOVER, "--from", source.address, "--to", target.address, "--window", "50"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 120
            while waiting(target) < 150 and mover.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            mover.send_signal(signal.SIGKILL)
            mover.wait()
            moved_before = waiting(target)
            assert 0 < moved_before < len(batch), f"not killed midway ({moved_before} moved)"
            deadline = time.monotonic() + 10  # gearmand requeues the killed mover's jobs when it sees the EOF
            while waiting(source) + moved_before < len(batch) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert waiting(source) + moved_before >= len(batch), "jobs vanished when the mover died"

            done = run_mover("--from", source.address, "--to", target.address)
            assert done.returncode == 0, done.stderr
            source.restart()
            assert waiting(source) == 0, "the source store still holds jobs"
            target.restart()
            extra = check_target(target, batch)
            keyless = sum(1 for *_, u, _ in batch if not u)
            assert extra <= keyless + 50, f"{extra} duplicates: more than the jobs in flight"


def test_jobs_from_the_gearman_cli_and_php_are_served_by_a_gearman_worker_after_the_move(tmp_path: Path) -> None:
    function = "ij_move_outside"
    with backend("sqlite", tmp_path / "old-store") as old_args, backend("redis", tmp_path / "new-store") as new_args:
        with gearmand(tmp_path / "old", old_args) as source, gearmand(tmp_path / "new", new_args) as target:
            cli = ["gearman", "-h", "127.0.0.1", "-p", str(source.port), "-f", function, "-b"]
            for flag, n in (("-I", 1), ("", 2), ("-L", 3)):
                subprocess.run([*cli, *([flag] if flag else []), "--", f"cli-{n}"], check=True, timeout=30)
            subprocess.run([*cli, "-u", "cli-key", "--", "cli-keyed"], check=True, timeout=30)
            php = (
                "$c = new GearmanClient(); $c->addServer('127.0.0.1', (int)$argv[1]);"
                "$c->doHighBackground($argv[2], 'php-high', 'php-key-1');"
                "$c->doLowBackground($argv[2], 'php-low');"
                "echo $c->returnCode() === GEARMAN_SUCCESS ? 'ok' : 'failed';"
            )
            out = subprocess.run(
                ["php", "-r", php, str(source.port), function], capture_output=True, text=True, timeout=30, check=True
            )
            assert out.stdout == "ok", out.stdout + out.stderr
            assert priority_status(source) == {function: (2, 2, 2)}

            done = run_mover("--from", source.address, "--to", target.address, "--function", function)
            assert done.returncode == 0, done.stderr
            assert priority_status(target) == {function: (2, 2, 2)}

            served = tmp_path / "served"
            worker = subprocess.run(
                [
                    "gearman",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(target.port),
                    "-w",
                    "-c",
                    "6",
                    "-f",
                    function,
                    "--",
                    "sh",
                    "-c",
                    f"cat >> {served}; echo >> {served}",
                ],
                timeout=60,
                check=False,
            )
            assert worker.returncode == 0
            lines = served.read_text().splitlines()
            assert lines[:2] and set(lines[:2]) == {"cli-1", "php-high"}, f"high first: {lines}"
            assert sorted(lines) == sorted(["cli-1", "cli-2", "cli-keyed", "cli-3", "php-high", "php-low"])
            assert set(lines[-2:]) == {"cli-3", "php-low"}, f"low last: {lines}"
            source.restart()
            assert waiting(source) == 0


def test_refusals_name_the_cause_and_move_nothing(tmp_path: Path) -> None:
    with gearmand(tmp_path / "a", []) as source, gearmand(tmp_path / "b", []) as target:
        submit(source, jobs(10, ("ij_move_r",)))
        cases = [
            (["--from", source.address, "--to", source.address], 2, "same server"),
            (["--from", source.address, "--to", f"localhost:{source.port}"], 2, "same gearmand"),
            (["--from", source.address, "--to", f"127.0.0.1:{free_port()}"], 3, "connection refused"),
            (["--from", f"127.0.0.1:{free_port()}", "--to", target.address], 3, "connection refused"),
            (["--from", source.address, "--to", "127.0.0.1:99999"], 2, "port must be"),
            (["--from", source.address, "--to", target.address, "--function", "a b"], 2, "white space"),
        ]
        for args, code, text in cases:
            done = run_mover(*args)
            assert done.returncode == code, (args, done.stderr)
            assert text in done.stderr, (args, done.stderr)
            assert "Traceback" not in done.stderr
        assert waiting(source) == 10 and waiting(target) == 0

        dry = run_mover("--from", source.address, "--to", target.address, "--dry-run")
        assert dry.returncode == 0 and "would move 10 job(s)" in dry.stdout, dry.stdout
        assert waiting(source) == 10 and waiting(target) == 0

        gearman = shutil.which("gearman")
        assert gearman
        with (
            subprocess.Popen(
                [gearman, "-h", "127.0.0.1", "-p", str(source.port), "-w", "-f", "ij_move_other", "--", "cat"]
            ) as unrelated,
            subprocess.Popen(
                [
                    gearman,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(source.port),
                    "-w",
                    "-f",
                    "ij_move_r",
                    "-c",
                    "1",
                    "--",
                    "sleep",
                    "30",
                ],
                stdout=subprocess.DEVNULL,
            ) as worker,
        ):
            try:
                wait_for_workers(source.port, "ij_move_r")
                wait_for_workers(source.port, "ij_move_other")
                refused = run_mover("--from", source.address, "--to", target.address)
                assert refused.returncode == 2 and "workers registered for ij_move_r (1)" in refused.stderr
                assert waiting(target) == 0
                # accepted: the job the worker holds stays behind and is reported, the rest moves
                forced = run_mover("--from", source.address, "--to", target.address, "--allow-workers")
                assert forced.returncode == 1, forced.stderr
                assert "1 job(s) stay on" in forced.stderr
                assert waiting(target) == 9
            finally:
                worker.kill()
                unrelated.kill()


def test_progress_is_plain_lines_when_not_a_terminal(tmp_path: Path) -> None:
    with gearmand(tmp_path / "a", []) as source, gearmand(tmp_path / "b", []) as target:
        submit(source, jobs(1500, ("ij_move_p1", "ij_move_p2")))
        done = run_mover("--from", source.address, "--to", target.address, "--window", "100")
        assert done.returncode == 0, done.stderr
        assert "\r" not in done.stderr
        assert "ij_move_p1: 750/750 moved (750/1500 in all" in done.stderr
        assert "ij_move_p2: 750/750 moved (1500/1500 in all" in done.stderr
        table = done.stdout.splitlines()
        assert table[0].split() == ["FUNCTION", "HIGH", "NORMAL", "LOW", "MOVED", "LEFT"]
        assert table[-1] == f"moved 1500 job(s) from {source.address} to {target.address}"


def test_a_target_that_refuses_a_job_stops_the_move_and_loses_nothing(tmp_path: Path) -> None:
    """The target's maxqueue makes it answer ERROR QUEUE_ERROR midway: exit 1, every job still on one side."""
    batch = jobs(60, ("ij_move_full",))
    with gearmand(tmp_path / "a", []) as source, gearmand(tmp_path / "b", []) as target:
        submit(source, batch)
        submit(target, [("ij_move_full", "normal", "already-there", b"x")])  # maxqueue needs a known function
        assert admin(target.port, "maxqueue ij_move_full 20").startswith("OK")
        done = run_mover("--from", source.address, "--to", target.address, "--window", "8")
        assert done.returncode == 1, done.stderr
        assert "refused a job: QUEUE_ERROR" in done.stderr and "run the move again" in done.stderr
        assert "Traceback" not in done.stderr
        in_target = waiting(target) - 1
        assert 0 < in_target < len(batch)
        deadline = time.monotonic() + 10
        while waiting(source) + in_target < len(batch) and time.monotonic() < deadline:
            time.sleep(0.05)
        # keyless jobs are completed on the source only at the end of their function: those moved are duplicated
        keyless = sum(1 for *_, u, _ in batch if not u)
        assert len(batch) <= waiting(source) + in_target <= len(batch) + keyless, "a job was lost, or duplicated"

        assert admin(target.port, "maxqueue ij_move_full").startswith("OK")  # limit lifted: the rerun finishes
        done = run_mover("--from", source.address, "--to", target.address)
        assert done.returncode == 0, done.stderr
        assert waiting(source) == 0
        assert check_target(target, [*batch, ("ij_move_full", "normal", "already-there", b"x")]) <= keyless


def test_a_frozen_target_times_out_and_a_rerun_after_it_thaws_finishes(tmp_path: Path) -> None:
    """SIGSTOP on the target midway: the mover gives up after --timeout, exit 1; SIGCONT, rerun, nothing lost."""
    batch = jobs(800)
    with backend("sqlite", tmp_path / "new-store") as new_args:
        with gearmand(tmp_path / "a", []) as source, gearmand(tmp_path / "b", new_args) as target:
            submit(source, batch)
            assert target.process is not None
            mover = subprocess.Popen(
                [*MOVER, "--from", source.address, "--to", target.address, "--window", "40", "--timeout", "2"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 120
            while waiting(target) < 100 and mover.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            target.process.send_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            try:
                _, stderr = mover.communicate(timeout=60)
                gave_up_after = time.monotonic() - frozen_at
            finally:
                target.process.send_signal(signal.SIGCONT)
            assert mover.returncode == 1, stderr
            assert "no answer" in stderr and "Traceback" not in stderr
            assert gave_up_after < 30, f"--timeout 2 took {gave_up_after:.0f} s"

            done = run_mover("--from", source.address, "--to", target.address)
            assert done.returncode == 0, done.stderr
            assert waiting(source) == 0
            extra = check_target(target, batch)
            keyless = sum(1 for *_, u, _ in batch if not u)
            assert extra <= keyless + 40, f"{extra} duplicates: more than the jobs in flight"


def test_foreground_jobs_stay_with_their_waiting_clients(tmp_path: Path) -> None:
    """A `gearman` CLI client and a PHP client wait on foreground jobs: those are not moved (exit 1, counted),
    the background jobs are, and a worker on the source then answers both waiting clients."""
    function = "ij_move_fg"
    with gearmand(tmp_path / "a", []) as source, gearmand(tmp_path / "b", []) as target:
        submit(source, jobs(30, (function,)))
        php = (
            "$c = new GearmanClient(); $c->addServer('127.0.0.1', (int)$argv[1]);"
            "echo $c->doNormal($argv[2], 'php-waits');"
        )
        with (
            subprocess.Popen(
                ["gearman", "-h", "127.0.0.1", "-p", str(source.port), "-f", function, "--", "cli-waits"],
                stdout=subprocess.PIPE,
                text=True,
            ) as cli,
            subprocess.Popen(
                ["php", "-r", php, str(source.port), function], stdout=subprocess.PIPE, text=True
            ) as pclient,
        ):
            try:
                deadline = time.monotonic() + 20
                while waiting(source) < 32 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert waiting(source) == 32
                done = run_mover("--from", source.address, "--to", target.address, "--json")
                assert done.returncode == 1, done.stderr
                summary = json.loads(done.stdout)
                assert (summary["moved"], summary["foreground"], summary["left"]) == (30, 2, 2)
                assert "2 foreground job(s) not moved" in done.stderr
                assert waiting(target) == 30 and waiting(source) == 2
                served = subprocess.run(
                    [
                        "gearman",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(source.port),
                        "-w",
                        "-c",
                        "2",
                        "-f",
                        function,
                        "--",
                        "tr",
                        "a-z",
                        "A-Z",
                    ],
                    timeout=60,
                    check=False,
                )
                assert served.returncode == 0
                assert cli.communicate(timeout=30)[0].strip() == "CLI-WAITS"
                assert pclient.communicate(timeout=30)[0].strip() == "PHP-WAITS"
            finally:
                cli.kill()
                pclient.kill()


def test_large_payloads_with_nul_bytes_arrive_intact(tmp_path: Path) -> None:
    """3 MiB payloads (NUL bytes included), more than one batch's worth: each arrives byte for byte."""
    size = 3 * 1024 * 1024
    batch = [
        ("ij_move_big", ("high", "normal", "low")[i % 3], f"big-{i}", bytes([i]) + b"\0" + os.urandom(size))
        for i in range(24)
    ]
    with gearmand(tmp_path / "a", []) as source, gearmand(tmp_path / "b", []) as target:
        submit(source, batch)
        done = run_mover("--from", source.address, "--to", target.address)
        assert done.returncode == 0, done.stderr
        assert check_target(target, batch) == 0


def test_a_scheduled_job_not_yet_due_is_left_and_reported(tmp_path: Path) -> None:
    """SUBMIT_JOB_EPOCH (type 36, not in python-gearman's table) an hour ahead: counted by gearmand, never handed
    out before its time, and (gearmand 1.1.20) it blocks the function's lower-priority jobs for every worker
    too. The mover moves what gearmand hands out, neither hangs nor claims more, and reports the rest."""
    import socket
    import struct

    with backend("sqlite", tmp_path / "old-store") as old_args:
        with gearmand(tmp_path / "a", old_args) as source, gearmand(tmp_path / "b", []) as target:
            submit(source, jobs(9, ("ij_move_epoch",)))
            body = b"ij_move_epoch\0epoch-1\0" + str(int(time.time()) + 3600).encode() + b"\0later"
            with socket.create_connection(("127.0.0.1", source.port), timeout=10) as sock:
                sock.sendall(b"\0REQ" + struct.pack("!II", 36, len(body)) + body)
                assert sock.recv(100).startswith(b"\0RES\0\0\0\x08")  # JOB_CREATED
            done = run_mover("--from", source.address, "--to", target.address, "--json", timeout=60)
            assert done.returncode == 1, done.stderr
            summary = json.loads(done.stdout)
            # jobs(9): 3 high, 3 normal, 3 low; the scheduled job is normal and holds back the low ones
            assert (summary["moved"], summary["left"]) == (6, 4)
            assert "4 job(s) stay on" in done.stderr
            assert priority_status(target) == {"ij_move_epoch": (3, 3, 0)}
            source.restart()
            assert priority_status(source) == {"ij_move_epoch": (0, 1, 3)}, "the jobs left are still stored"
