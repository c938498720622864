"""The gearman_server role moves queued jobs when a converge changes where gearmand keeps its queue.

The role's own tasks (tasks/queue_move.yml, through include_role) run with ansible-playbook against this
machine's real gearmand binary and real back-ends started by the tests (sqlite, redis, PostgreSQL, memcached), with
every path of the role pointed into the test's directory: nothing is deployed onto the machine. What the role's other
tasks do between its two steps (template the new options, restart gearmand) is done by the test: it rewrites the
defaults file and restarts the test's gearmand on the new back-end, on the same port.

The old options are in the --config-file that PARAMS names, the new ones in PARAMS itself: the role finds the old
queue whichever file holds its options. Jobs are queued in three priorities, keyed and keyless, in two
functions; afterwards every job is queued in the new back-end with its key, payload and priority, and the old
store is empty (a gearmand started on it replays nothing). The host tool runs with the system's python3 and the
mover is the zip application the role builds, so neither needs the project's venv.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.helpers import REPO, ROLES, playbook, process, recap
from tests.ansible.test_gearmand_queues import running_memcached
from tests.integration.test_queue_move import backend, check_target, jobs, submit, waiting
from tests.support.gearmand import Gearmand, free_port

TOOL = ROLES / "gearman_server" / "files" / "gearman-server-queue-move"
SYSTEM_PYTHON = "/usr/bin/python3"


def write_playbook(tmp: Path, step: str, new_defaults: str | None = None) -> Path:
    """One play: the role's queue move tasks at STEP; for "fill", step "before", the new defaults file (what the
    role's templates do), then "fill", as the role runs them in one play."""
    include = "ansible.builtin.include_role"
    role = {"name": "gearman_server", "tasks_from": "queue_move"}
    tasks: list[dict[str, Any]] = []
    if step == "fill":
        tasks += [
            {"name": "Step before", include: role, "vars": {"__gearman_server_queue_move_step": "before"}},
            {
                "name": "The new options (as the templates write them)",
                "ansible.builtin.copy": {
                    "dest": "{{ __gearman_server_defaults_file }}",
                    "content": new_defaults,
                    "mode": "0644",
                },
            },
        ]
    tasks.append({"name": f"Step {step}", include: role, "vars": {"__gearman_server_queue_move_step": step}})
    book = tmp / f"{step}.yml"
    book.write_text(
        json.dumps([{"name": f"queue move, step {step}", "hosts": "localhost", "gather_facts": False, "tasks": tasks}])
    )
    return book


class Host:
    """The role's view of one gearmand host, with every path in the test's directory."""

    def __init__(self, tmp: Path, port: int, new_type: str) -> None:
        self.tmp = tmp
        self.port = port
        self.defaults = tmp / "default-gearman-job-server"
        self.records = tmp / "records"
        self.extra: dict[str, Any] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": SYSTEM_PYTHON,
            "__gearman_server_defaults_file": str(self.defaults),
            "__gearman_server_queue_move_script": str(tmp / "sbin" / "gearman-server-queue-move"),
            "__gearman_server_queue_move_dir": str(self.records),
            "__gearman_server_queue_mover": str(tmp / "lib" / "queue-mover.pyz"),
            "__gearman_server_queue_mover_build": str(tmp / "build" / "queue-mover.pyz"),
            "__gearman_server_user": "root",
            "__gearman_server_local_address": "127.0.0.1",
            "gearman_server_port": port,
            "gearman_server_queue_type": new_type,
            "gearman_server_queue_move_timeout": 30,
        }
        (tmp / "sbin").mkdir()

    def deploy(self, params: list[str], config: list[str] | None) -> None:
        """The options as the role's templates would leave them: PARAMS, and the --config-file it names."""
        conf = self.tmp / "gearmand.conf"
        if config is not None:
            conf.write_text("".join(f"{option}\n" for option in config))
        self.defaults.write_text(self.defaults_text(params, conf if config is not None else None))

    def defaults_text(self, params: list[str], conf: Path | None) -> str:
        words = [f"--port={self.port}", f"--config-file={conf or '/dev/null'}", *params]
        return f'# managed\nPARAMS="--daemon {" ".join(words)}"\n'

    def step(
        self, step: str, new_defaults: str | None = None, *options: str, **extra: Any
    ) -> tuple[str, dict[str, int]]:
        result = playbook(
            write_playbook(self.tmp, step, new_defaults),
            *options,
            "-e",
            json.dumps({**self.extra, **extra}),
            inventory=None,
            timeout=300,
        )
        return result.stdout, recap(result.stdout).get("localhost", {})


@contextmanager
def live(tmp: Path, name: str, port: int, args: list[str]) -> Iterator[Gearmand]:
    workdir = tmp / name
    workdir.mkdir()
    server = Gearmand(workdir, port=port, extra_args=args)
    server.start(timeout=30)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def store(kind: str, base: Path) -> Iterator[list[str]]:
    """The back-ends of tests/integration/test_queue_move.py, and memcached as gearmand's queue needs it (one LRU,
    -o no_lru_maintainer, as the role's pre-flight check demands)."""
    if kind != "memcached":
        with backend(kind, base) as args:
            yield args
        return
    base.mkdir()
    with running_memcached(base, "-o", "no_lru_maintainer") as port:
        yield ["-q", "libmemcached", f"--libmemcached-servers=127.0.0.1:{port}", "--libmemcached-prefix=ijmove_"]


def memcached_items(args: list[str]) -> int:
    """How many items the memcached of these gearmand options holds (its 'stats' curr_items)."""
    port = int(next(a for a in args if a.startswith("--libmemcached-servers=")).rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"stats\r\n")
        answer = b""
        while not answer.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            assert chunk, answer
            answer += chunk
    match = re.search(rb"STAT curr_items (\d+)", answer)
    assert match, answer
    return int(match[1])


def long_options(args: list[str]) -> list[str]:
    """-q TYPE as --queue-type=TYPE (the tests' back-ends give the short form)."""
    out, it = [], iter(args)
    for word in it:
        out.append(f"--queue-type={next(it)}" if word == "-q" else word)
    return out


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("sqlite", "redis"),
        ("redis", "sqlite"),
        ("sqlite", "postgres"),
        ("sqlite", "memcached"),
        ("memcached", "sqlite"),
        ("sqlite", "sqlite"),  # the same type, the file moved (gearman_server_sqlite_db changed)
    ],
)
def test_the_role_moves_every_queued_job_to_the_new_backend(tmp_path: Path, old: str, new: str) -> None:
    # Keyed jobs only: gearmand 1.1.20 stores every keyless job of a function under the same empty key, so any
    # replay of an old store (a restart too, not only this move) gives back one of them (seen: 240 jobs, 208 back).
    batch = [job for job in jobs(240) if job[2]]
    port = free_port()
    host = Host(tmp_path, port, new)
    with store(old, tmp_path / "old-store") as old_args, store(new, tmp_path / "new-store") as new_args:
        old_options, new_options = long_options(old_args), long_options(new_args)
        host.deploy([], old_options)  # the old layout: queue options in the --config-file
        with live(tmp_path, "old-gearmand", port, old_args) as server:
            submit(server, batch)
            assert waiting(server) == len(batch)
            out, counts = host.step("before")
            assert counts.get("failed") == 0, out
        host.deploy(new_options, None)  # the new layout: queue options in PARAMS
        with live(tmp_path, "new-gearmand", port, new_args) as server:
            assert waiting(server) == 0
            out, counts = host.step("after")
            assert counts.get("failed") == 0 and counts["changed"] >= 1, out
            for function in ("ij_move_a", "ij_move_b"):
                expected = sum(1 for f, *_ in batch if f == function)
                assert re.search(rf"{function}: {expected} \(\d+ high, \d+ normal, \d+ low\)", out), out
            assert re.search(rf"{len(batch)} job\(s\) moved from {old} .* to 127.0.0.1:{port}", out), out
            assert list(host.records.glob("*.conf")) == [], "the old queue's record is dropped once it is empty"
            if (old, new) == ("sqlite", "redis"):  # a rerun finds nothing to move and changes nothing
                out, counts = host.step("before")
                assert counts.get("failed") == 0 and counts["changed"] == 0, out
                out, counts = host.step("after")
                assert counts.get("failed") == 0 and counts["changed"] == 0, out
            assert check_target(server, batch) == 0
        with live(tmp_path, "old-again", free_port(), old_args) as server:
            assert waiting(server) == 0, "the old store still holds jobs"
        if old == "memcached":  # replay lists keys with 'stats cachedump' (limited): ask memcached itself too
            assert memcached_items(old_args) == 0, "the old memcached still holds jobs"
        if new == "memcached":  # the jobs are in memcached itself: a fresh gearmand on it replays every one
            assert memcached_items(new_args) == len(batch)
            with live(tmp_path, "new-again", free_port(), new_args) as server:
                assert check_target(server, batch) == 0


def test_a_memcached_queue_larger_than_one_replay_is_moved_whole(tmp_path: Path) -> None:
    """gearmand replays memcached through 'stats cachedump', which lists at most 2 MB of keys per slab class: with
    240-byte keys, about 7,900 of these 9,400 jobs (seen: 8,774 of 15,000 with 230-byte keys). The role repeats
    the throw-away pass until one replays nothing; with a single pass the rest stayed behind and the record went."""
    long = ("ij_move_a", "ij_move_b")
    names = tuple(f + "_" * (170 - len(f)) for f in long)
    batch = [(f, p, u.rjust(63, "k"), d) for f, p, u, d in jobs(11000, names) if u]  # 63: gearmand's longest key
    port = free_port()
    host = Host(tmp_path, port, "memcached")
    with store("memcached", tmp_path / "old-store") as old_args, store("memcached", tmp_path / "new-store") as new_args:
        host.deploy([], long_options(old_args))
        with live(tmp_path, "old-gearmand", port, old_args) as server:
            submit(server, batch)
            out, counts = host.step("before")
            assert counts.get("failed") == 0, out
        assert memcached_items(old_args) == len(batch)
        with live(tmp_path, "one-pass", free_port(), old_args) as server:
            assert 0 < waiting(server) < len(batch), "gearmand replays a large memcached queue whole: update the docs"
        host.deploy(long_options(new_args), None)
        with live(tmp_path, "new-gearmand", port, new_args) as server:
            out, counts = host.step("after")
            assert counts.get("failed") == 0 and counts["changed"] >= 1, out
            assert re.search(rf"{len(batch)} job\(s\) moved from memcached ", out), out
            assert list(host.records.glob("*.conf")) == []
            assert memcached_items(old_args) == 0, "jobs stayed behind in the old memcached"
            assert memcached_items(new_args) == len(batch)
            assert check_target(server, batch) == 0


def test_an_unreachable_old_queue_fails_the_play_keeps_its_record_and_a_rerun_moves(tmp_path: Path) -> None:
    """The old store is down after the restart: the play fails naming it, nothing is lost, the next run moves."""
    batch = [job for job in jobs(60) if job[2]]
    port = free_port()
    host = Host(tmp_path, port, "sqlite")
    with backend("sqlite", tmp_path / "new-store") as new_args:
        redis_base = tmp_path / "old-store"
        with backend("redis", redis_base) as old_args:
            host.deploy([], long_options(old_args))
            with live(tmp_path, "old-gearmand", port, old_args) as server:
                submit(server, batch)
                out, counts = host.step("before")
                assert counts.get("failed") == 0, out
            saved = redis_base / "dump.rdb"
            # redis runs with --save "": keep its data across the stop with an explicit SAVE
            redis_port = int(next(a for a in old_args if a.startswith("--redis-port=")).split("=")[1])
            with socket.create_connection(("127.0.0.1", redis_port)) as s:
                s.sendall(b"SAVE\r\n")
                assert s.recv(64).startswith(b"+OK")
        assert saved.exists()
        host.deploy(long_options(new_args), None)
        with live(tmp_path, "new-gearmand", port, new_args) as server:
            out, counts = host.step("after")
            assert counts.get("failed") == 1, out
            assert "could not all be moved" in out and "redis" in out, out
            assert len(list(host.records.glob("*.conf"))) == 1, "the record stays for the next run"
            assert waiting(server) == 0
            # the old redis comes back on the same port with its data: the rerun moves every job
            shutil.copy(saved, tmp_path / "dump.rdb")
            with _redis_again(tmp_path, redis_port):
                out, counts = host.step("after")
                assert counts.get("failed") == 0 and counts["changed"] == 1, out
            assert check_target(server, batch) == 0
            assert list(host.records.glob("*.conf")) == []


@contextmanager
def _redis_again(directory: Path, port: int) -> Iterator[None]:
    server = shutil.which("redis-server")
    assert server
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--appendonly", "no"]
    with process(argv, directory / "redis-again.log", port):
        yield


def test_leaving_a_builtin_queue_that_holds_jobs_is_refused_unless_the_loss_is_accepted(tmp_path: Path) -> None:
    port = free_port()
    host = Host(tmp_path, port, "sqlite")
    host.deploy([], None)  # no queue option anywhere: gearmand's builtin queue
    with live(tmp_path, "builtin", port, []) as server:
        submit(server, jobs(5))
        out, counts = host.step("before", gearman_server_queue_move=False)
        assert counts.get("failed") == 1, out
        assert "builtin queue holds 5 job(s)" in out and "gearman_server_queue_builtin_loss_ok" in out, out
        out, counts = host.step("before", gearman_server_queue_move=False, gearman_server_queue_builtin_loss_ok=True)
        assert counts.get("failed") == 0 and "WARNING: they are lost" in out and "holds 5 job(s)" in out, out
        out, counts = host.step("before", gearman_server_queue_type="builtin")  # staying builtin: no refusal
        assert counts.get("failed") == 0, out
        assert waiting(server) == 5, "the refusal touched nothing"
    assert list(host.records.glob("*.conf")) == [], "a builtin queue leaves no record"


def test_the_jobs_of_a_builtin_queue_are_moved_into_the_new_queue_before_the_restart(tmp_path: Path) -> None:
    """The handler step "fill" runs between the new files and the restart: the restarted gearmand replays them all."""
    batch = [job for job in jobs(120) if job[2]]
    port = free_port()
    host = Host(tmp_path, port, "sqlite")
    host.deploy([], None)
    with backend("sqlite", tmp_path / "new-store") as new_args, live(tmp_path, "builtin", port, []) as server:
        submit(server, batch)
        out, counts = host.step("fill", host.defaults_text(long_options(new_args), None))
        assert counts.get("failed") == 0 and counts["changed"] >= 1, out
        assert "moved to the sqlite queue just before the restart" in out, out
        for function in ("ij_move_a", "ij_move_b"):
            expected = sum(1 for f, *_ in batch if f == function)
            assert re.search(rf"{function}: {expected} \(\d+ high, \d+ normal, \d+ low\)", out), out
        assert waiting(server) == 0, "the builtin queue was emptied"
    with live(tmp_path, "restarted", port, new_args) as server:
        assert check_target(server, batch) == 0


def test_the_location_is_the_same_whichever_file_holds_the_options_and_names_no_secret(tmp_path: Path) -> None:
    """The host tool, with the system's python3: PARAMS forms (--opt=v, --opt v, -q), the command line winning."""

    def location(params: str, config: str | None = None, text: str = "") -> dict[str, Any]:
        conf = tmp_path / "gearmand.conf"
        if config is not None:
            conf.write_text(config)
        defaults = tmp_path / "defaults"
        named = conf if config is not None else "/dev/null"
        # /etc/gearmand.conf (the default) named away and port 9 (nothing there): this machine may run its own
        defaults.write_text(
            (text.replace("--listen", f"--config-file={named} --port=9 --listen") if text else "")
            or f"# comment\nPARAMS='--daemon --config-file={named} {params}'\n"
        )
        done = subprocess.run(
            [
                SYSTEM_PYTHON,
                str(TOOL),
                "location",
                "--defaults",
                str(defaults),
                "--save",
                str(tmp_path / "rec"),
                "--user",
                "root",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    secret = "S3cr3t-pw"
    in_file = location("", f"--queue-type=MySQL\n--mysql-host=db1\n--mysql-password={secret}\n--mysql-db=gm\n")
    in_params = location(f"-q MySQL --mysql-host db1 --mysql-password={secret} --mysql-db=gm")
    assert in_file["id"] == in_params["id"] and in_file["type"] == "mysql"
    assert secret not in json.dumps(in_file)
    record = Path(in_file["record"])
    assert oct(record.stat().st_mode & 0o777) == "0o640" and secret in record.read_text()
    other_db = location("-q MySQL --mysql-host db1 --mysql-db=gm2")
    assert other_db["id"] != in_file["id"]
    # the command line wins over the config file, as in gearmand
    overridden = location("--mysql-db=gm2", "--queue-type=MySQL\n--mysql-host=db1\n--mysql-db=gm\n")
    assert overridden["id"] == other_db["id"]
    pg = location("", "--queue-type=Postgres\n--libpq-conninfo=postgresql://u:pw@pg:5432/g\n")
    pg_other_password = location("-q Postgres --libpq-conninfo=postgresql://u:other@pg:5432/g")
    assert pg["id"] == pg_other_password["id"] and "pw" not in pg["where"]
    # Debian's own /etc/default/gearman-job-server (a fresh host, before the role): PARAMS over three lines
    debian = location(
        "",
        None,
        text='# Parameters to pass to gearmand.\nPARAMS="--listen=localhost \\\n --daemon \\\n'
        ' --log-file=/var/log/gearman-job-server/gearmand.log"\n',
    )
    assert debian["type"] == "builtin" and debian["queued"] == 0
    bad = subprocess.run(
        [SYSTEM_PYTHON, str(TOOL), "location", "--defaults", str(REPO / "nonexistent")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode in (0, 2) and "Traceback" not in bad.stderr


def test_the_same_store_under_another_name_is_refused_and_keeps_every_job(tmp_path: Path) -> None:
    """redis reached as 127.1, then as 127.0.0.1: two locations for the role, one store. Moving would complete (and so
    delete from the store) the jobs the running gearmand replayed from it; the role refuses and nothing is lost."""
    batch = [job for job in jobs(30) if job[2]]
    port = free_port()
    host = Host(tmp_path, port, "redis")
    with backend("redis", tmp_path / "store") as args:
        alias = [a.replace("--redis-server=127.0.0.1", "--redis-server=127.1") for a in args]
        host.deploy([], long_options(alias))
        with live(tmp_path, "by-alias", port, alias) as server:
            submit(server, batch)
            out, counts = host.step("before")
            assert counts.get("failed") == 0, out
        host.deploy(long_options(args), None)
        with live(tmp_path, "by-address", port, args) as server:
            assert waiting(server) == len(batch)
            out, counts = host.step("after")
            assert counts.get("failed") == 1 and "already queued in the running gearmand" in out, out
            assert len(list(host.records.glob("*.conf"))) == 1
        with live(tmp_path, "again", free_port(), args) as server:
            assert check_target(server, batch) == 0, "the store lost jobs"


def test_check_mode_on_a_fresh_host_changes_nothing_and_does_not_fail(tmp_path: Path) -> None:
    """--check before the tool is installed (a fresh host): nothing written, no failure; then with the tool, a
    check run reads the location but writes no record."""
    port = free_port()
    host = Host(tmp_path, port, "redis")
    host.deploy([], ["--queue-type=libsqlite3", f"--libsqlite3-db={tmp_path / 'q.sqlite3'}"])
    out, counts = host.step("before", None, "--check")
    assert counts.get("failed") == 0, out
    assert not (tmp_path / "sbin" / "gearman-server-queue-move").exists() and not host.records.exists()
    shutil.copy(TOOL, tmp_path / "sbin" / "gearman-server-queue-move")
    out, counts = host.step("before", None, "--check")
    assert counts.get("failed") == 0 and not host.records.exists(), out
