"""The persistent PHP runner (issue 13), end to end: a real gearmand, a real worker pool, the real PHP CLI.

Drush and Drupal 7 cannot be installed here, so ``drupal_standin/drush`` emulates ``drush php-script`` around a
stand-in Drupal (``drupal_standin/includes/bootstrap.inc``: ``module_invoke_all``, ``module_load_include``,
``user_load``, and the module's status table: in a real MariaDB for the status-table test, else SQLite through
PDO). Jobs are submitted from outside too: PHP's gearman extension (``php/runner_client.php``), as the Drupal module
submits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from islandora_job.cli.php_runner import stable_path
from islandora_job.errors import ConfigError, ProtocolError
from islandora_job.worker import config as config_module
from islandora_job.worker.runner_protocol import FrameReader, encode
from tests.integration import drupal_databases as dbs
from tests.integration.drupal_databases import Site
from tests.support.gearmand import Gearmand, running_gearmand
from tests.support.peers import Answer, Command, PlainClient, payload, wait_for
from tests.support.pool import REPO, Pool, running_pool

STANDIN = Path(__file__).parent / "drupal_standin"
DRUSH = STANDIN / "drush"
RUNNER = REPO / "islandora_job" / "php" / "runner.php"
PHP_CLIENT = Path(__file__).parent / "php" / "runner_client.php"
SITE = "http://site.example"
NAMES = [
    "testjobs_hello",
    "testjobs_truth",
    "testjobs_whoami",
    "testjobs_fail",
    "testjobs_fatal",
    "testjobs_bye",
    "testjobs_crash",
    "testjobs_nap",
    "testjobs_pid",
    "testjobs_noisy",
    "testjobs_record",
    "testjobs_gone",
    "tja",
    "ijh",
]
#: The runner's own time limit in the drush pool: short, so the timeout test takes seconds.
TIMEOUT = 3.0


def _entry(names: list[str], argv: list[str], **keys: object) -> str:
    lines = ["[[command_jobs]]", f"names = {json.dumps(names)}", f"argv = {json.dumps(argv)}", "persistent = true"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


def drush_entry(**keys: object) -> str:
    """The site's entry: its function names found by ``discover_argv``, as the module lists them."""
    site = [str(DRUSH), f"--root={STANDIN}", f"--uri={SITE}"]
    discover = [*site, "islandora-job-list-functions"]
    return _entry([], [*site, "--user=1", "php-script", str(RUNNER)], discover_argv=discover, **keys)


@contextlib.contextmanager
def drush_site(
    workdir: Path, concurrency: int = 1, site_env: dict[str, str] | None = None, **keys: object
) -> Iterator[tuple[Gearmand, Pool, Path]]:
    """gearmand and a pool serving the stand-in site's jobs through one persistent runner per worker process; the
    site's database is SQLite in ``workdir`` unless ``site_env`` names another (``ISLANDORA_STANDIN_DSN``...)."""
    database = workdir / "drupal.sqlite"
    keys = {"allowed_sites": [SITE], "allowed_uids": [0, 1, 2, 5, 9], "timeout": TIMEOUT, **keys}
    with running_gearmand(workdir) as server:
        env = {"ISLANDORA_STANDIN_DB": str(database), **(site_env or {})}
        tail = drush_entry(**keys)
        with running_pool(
            workdir, [server.address], concurrency=concurrency, tail=tail, env=env, extra="send_exceptions = true"
        ) as pool:
            for function in NAMES:
                pool.wait_registered(server.port, function)
            yield server, pool, database


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gearmand, Pool, Path]]:
    with drush_site(tmp_path_factory.mktemp("drush")) as running:
        yield running


@pytest.fixture(scope="module")
def mariadb_drush_site(
    mariadb_site: Site, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gearmand, Pool, Path]]:
    """The stand-in site on a real MariaDB: Drupal 7's table (prefix ``site1_``), PDO as Drupal connects."""
    site_env = {
        "ISLANDORA_STANDIN_DSN": mariadb_site.pdo_dsn,
        "ISLANDORA_STANDIN_DB_USER": dbs.USER,
        "ISLANDORA_STANDIN_DB_PASSWORD": dbs.PASSWORD,
        "ISLANDORA_STANDIN_PREFIX": dbs.PREFIX,
    }
    with drush_site(tmp_path_factory.mktemp("drush-mariadb"), site_env=site_env) as running:
        yield running


def call(server: Gearmand, function: str, *args: object, func: str | None = None, **kwargs: object) -> Answer:
    kwargs = {"site": SITE, "uid": "1", **kwargs}
    with PlainClient(server.address) as client:
        return client.submit(function, payload(func or function, *args, **kwargs))  # type: ignore[arg-type]


def runner_pid(server: Gearmand) -> int:
    answer = call(server, "testjobs_pid")
    assert answer.ok, answer
    return int(answer.data)


def php_client(port: int, jobs: list[tuple[str, bytes]]) -> dict[str, object]:
    document = json.dumps([[function, data.decode()] for function, data in jobs])
    done = subprocess.run(
        ["php", str(PHP_CLIENT), str(port)], input=document, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


# --- the path, the configuration --------------------------------------------------------------------------------


def test_php_runner_prints_the_absolute_path_of_the_shipped_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "islandora_job.cli.main", "php-runner"], capture_output=True, text=True, check=True
    )
    path = Path(done.stdout.strip())
    assert path.is_absolute() and path.is_file(), path
    assert path == RUNNER
    assert "IslandoraJobRunner" in path.read_text()


def test_the_path_goes_through_the_current_link_of_a_release(tmp_path: Path) -> None:
    release = tmp_path / "releases" / "0.3.0-ab"
    runner = release / "lib" / "site-packages" / "islandora_job" / "php" / "runner.php"
    runner.parent.mkdir(parents=True)
    runner.write_text("<?php\n")
    assert stable_path(runner) == runner  # no link: the path as it is
    (tmp_path / "current").symlink_to(release)
    assert stable_path(runner) == tmp_path / "current" / runner.relative_to(release)
    (tmp_path / "current").unlink()
    (tmp_path / "current").symlink_to(tmp_path / "releases" / "0.2.0-cd")  # a link to another release: not ours
    assert stable_path(runner) == runner


def test_a_persistent_entry_is_checked_like_any_other() -> None:
    with pytest.raises(ConfigError) as caught:
        config_module.build(
            {
                "command_jobs": [
                    {"name": "a", "argv": ["php", "{site}"], "persistent": True, "allowed_sites": ["x"]},
                    {"name": "b", "argv": ["php"], "persistent": True, "max_jobs": 0, "max_rss_mb": "lots"},
                ]
            },
            "worker.toml",
        )
    message = str(caught.value)
    assert "command_jobs[0].argv: a persistent runner is started once" in message
    assert "command_jobs[1].max_jobs: must be at least 1" in message
    assert "command_jobs[1].max_rss_mb: must be an integer" in message
    built = config_module.build({"command_jobs": [{"name": "c", "argv": ["php"], "persistent": True}]}, "w")
    assert (built.command_jobs[0].max_jobs, built.command_jobs[0].max_rss_mb) == (500, 512)


def test_frames_are_read_whatever_the_pieces_and_bad_ones_refused() -> None:
    stream = encode({"type": "result", "status": "complete"}, b"\x00out\xff") + encode({"type": "ready"})
    for size in (1, 3, 7, len(stream)):
        reader = FrameReader()
        frames = [f for i in range(0, len(stream), size) for f in reader.feed(stream[i : i + size])]
        assert [(f.type, f.data) for f in frames] == [("result", b"\x00out\xff"), ("ready", b"")]
        assert reader.pending == 0
    for bad in (b"\x00\x00\x00\x02\x00\x00\x00\x00[]", b"\x00\x00\x00\x01\x00\x00\x00\x00{", b"\x7f" * 8):
        with pytest.raises(ProtocolError):
            FrameReader().feed(bad)


# --- drush mode: results, users, the status table, allowlists ---------------------------------------------------


def test_results_to_a_php_client_from_one_bootstrapped_runner(site: tuple[Gearmand, Pool, Path]) -> None:
    server, pool, _ = site
    before = runner_pid(server)
    jobs = [
        ("testjobs_hello", payload("testjobs_hello", "bob", site=SITE, uid="1")),
        ("testjobs_truth", payload("testjobs_truth", site=SITE, uid="1")),
        ("testjobs_whoami", payload("testjobs_whoami", site=SITE, uid="5")),
        ("testjobs_whoami", payload("testjobs_whoami", site=SITE, uid=2)),
        ("tja", payload("testjobs_aliased", "x", site=SITE, uid="1")),  # the un-aliased name, as the module sends
        ("tja", payload("tja", "y", site=SITE, uid="1")),  # the alias itself
        ("ijh", payload("islandora_job_heartbeat", "ping", 1700000000, site=SITE, uid="1")),
    ]
    seen = php_client(server.port, jobs)
    answers = seen["answers"]
    assert isinstance(answers, list)
    assert all(answer["code"] == seen["SUCCESS"] for answer in answers), answers
    results = [answer["result"] for answer in answers]
    assert results[0] == "hello bob"  # what it printed, then its return value
    assert results[1] == "1"  # TRUE echoed
    assert json.loads(results[2]) == {"uid": 5, "pid": before}  # the payload's user, as drush --user=5
    assert json.loads(results[3]) == {"uid": 2, "pid": before}
    assert results[4:] == ["alias:x", "alias:y", "1"]
    assert runner_pid(server) == before  # every job in the one runner bootstrapped at start-up
    assert pool.wait_log("ready: pid").count("ready: pid") == 1


def test_output_and_warnings_never_reach_the_channel(site: tuple[Gearmand, Pool, Path]) -> None:
    server, pool, _ = site
    before = runner_pid(server)
    answer = call(server, "testjobs_noisy")
    assert answer.ok, answer
    fake_frame = b"\x00\x00\x00\x05\x00\x00\x00\x00" + b'{"type":"result","status":"complete"}'
    assert answer.data == fake_frame + b"printedinner bufferdone"
    assert runner_pid(server) == before
    log = pool.wait_log("a warning from the job", "straight to stderr", "straight to stdout")
    assert "Traceback" not in log


def test_the_status_table_is_kept_as_the_drush_router_kept_it(
    mariadb_drush_site: tuple[Gearmand, Pool, Path], mariadb_site: Site
) -> None:
    """On a real MariaDB with Drupal 7's table: the runner, not the worker, keeps the rows of its jobs."""
    server, _, _ = mariadb_drush_site
    mariadb_site.clear()
    jobs = {
        "ok": payload("testjobs_record", site=SITE, uid="1"),
        "exception": payload("testjobs_fail", "no", site=SITE, uid="1"),
        "fatal": payload("testjobs_fatal", site=SITE, uid="1"),
        "refused": payload("testjobs_record", site="http://other.example", uid="1"),
    }
    for data in jobs.values():  # the module inserts a WAITING row with the payload before it submits
        mariadb_site.sql(f"INSERT INTO {dbs.TABLE} (data) VALUES (X'{data.hex()}')")
    with PlainClient(server.address) as client:
        answers = {key: client.submit(json.loads(data)["func"], data) for key, data in jobs.items()}
    states = {text: state for _id, text, state in mariadb_site.rows()}
    assert answers["ok"].ok and not answers["exception"].ok and not answers["fatal"].ok
    assert jobs["ok"].decode() not in states  # success: the row is deleted
    assert states[jobs["exception"].decode()] == -1  # ERROR
    assert states[jobs["fatal"].decode()] == -1
    assert states[jobs["refused"].decode()] == 0  # never reached the runner


def test_allowlists_are_checked_before_the_runner(site: tuple[Gearmand, Pool, Path]) -> None:
    server, _, _ = site
    before = runner_pid(server)
    other_site = call(server, "testjobs_whoami", site="http://other.example")
    other_user = call(server, "testjobs_whoami", uid="7")
    bad_uid = call(server, "testjobs_whoami", uid="--5")
    assert other_site.command is Command.WORK_EXCEPTION
    assert b"site 'http://other.example' is not in allowed_sites" in other_site.data
    assert b"uid 7 is not in allowed_uids" in other_user.data
    assert b"is not a user id" in bad_uid.data
    assert runner_pid(server) == before


# --- drush mode: failures ---------------------------------------------------------------------------------------


def test_an_exception_fails_the_job_with_its_message(site: tuple[Gearmand, Pool, Path]) -> None:
    server, _, _ = site
    before = runner_pid(server)
    answer = call(server, "testjobs_fail", "the disk is full")
    assert answer.command is Command.WORK_EXCEPTION
    assert answer.data == b"RuntimeException: the disk is full"
    assert runner_pid(server) == before  # an exception does not cost the runner


@pytest.mark.parametrize(
    ("function", "reason"),
    [
        ("testjobs_fatal", b"PHP fatal error: Allowed memory size of"),
        ("testjobs_bye", b"the job ended the runner (exit() or die())"),
        ("testjobs_crash", b"runner died without answering (signal 9)"),
    ],
)
def test_a_fatal_error_exit_or_crash_fails_that_job_only(
    site: tuple[Gearmand, Pool, Path], function: str, reason: bytes
) -> None:
    server, pool, _ = site
    before = runner_pid(server)
    restarts = pool.log_text().count("started a new one")
    answer = call(server, function)
    assert answer.command is Command.WORK_EXCEPTION
    assert answer.data.startswith(reason), answer.data
    after = runner_pid(server)  # the next job is served, by a new runner
    assert after != before
    wait_for(lambda: pool.log_text().count("started a new one") == restarts + 1, message="the restart logged")
    assert not Path(f"/proc/{before}").exists()


def test_a_job_past_its_timeout_fails_in_time_and_its_group_is_killed(
    site: tuple[Gearmand, Pool, Path], tmp_path: Path
) -> None:
    server, pool, _ = site
    before = runner_pid(server)
    child_file = tmp_path / "child.pid"
    started = time.monotonic()
    answer = call(server, "testjobs_nap", 60, str(child_file))
    elapsed = time.monotonic() - started
    assert answer.command is Command.WORK_EXCEPTION
    assert b"timed out after 3s; runner's process group killed" in answer.data
    assert TIMEOUT <= elapsed < TIMEOUT + 2.0, elapsed
    child = int(child_file.read_text())
    wait_for(lambda: not Path(f"/proc/{child}").exists(), timeout=2, message="the job's own child killed")
    assert not Path(f"/proc/{before}").exists()
    assert runner_pid(server) != before
    pool.wait_log("job past its timeout of 3s; killed its process group; started a new one")
    assert "replacing this worker process" not in pool.log_text()  # the runner's limit, not the watchdog's


def test_a_database_connection_gone_between_jobs_costs_no_job(site: tuple[Gearmand, Pool, Path]) -> None:
    server, pool, database = site
    before = runner_pid(server)
    Path(f"{database}.gone").write_text(str(time.time()))  # the runner's connection is closed by the server
    answer = call(server, "testjobs_hello", "again")
    assert answer.ok and answer.data == b"hello again", answer  # run by a fresh runner, with a new connection
    assert runner_pid(server) != before
    pool.wait_log("database connection lost: PDOException: SQLSTATE[HY000]: General error: 2006 MySQL server has gone")


def test_a_job_that_finds_the_connection_gone_fails_and_the_runner_is_replaced(
    site: tuple[Gearmand, Pool, Path],
) -> None:
    server, _, _ = site
    before = runner_pid(server)
    answer = call(server, "testjobs_gone")
    assert answer.command is Command.WORK_EXCEPTION and b"2006 MySQL server has gone away" in answer.data
    assert runner_pid(server) != before


# --- bootstrap mode, recycling ----------------------------------------------------------------------------------

BOOTSTRAP = """<?php
return array(
  'b_pid' => 'getmypid',
  'b_grow' => function ($mb) {
    static $kept = array();
    $kept[] = str_repeat('x', $mb * 1024 * 1024);
    return count($kept);
  },
  'b_echo' => function ($text) { print $text; return array('n' => strlen($text)); },
  'b_regex' => function ($text) { return preg_replace('/a+/', 'A', $text); },
);
"""
#: Runs argv with the kernel's memory-deny-write-execute (PR_SET_MDWE, Linux 6.3+): the restriction the worker role's
#: hardened unit sets with MemoryDenyWriteExecute=yes, which PHP's PCRE JIT runs into.
MDWE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit("PR_SET_MDWE: " + os.strerror(ctypes.get_errno()) + " (Linux 6.3 or later is needed)")
os.execvp(sys.argv[1], sys.argv[1:])
"""


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gearmand, Pool]]:
    workdir = tmp_path_factory.mktemp("bootstrap")
    boot = workdir / "jobs.php"
    boot.write_text(BOOTSTRAP)
    broken = workdir / "broken.php"
    broken.write_text("<?php return 42;\n")
    tail = _entry(["b_pid", "b_grow", "b_echo"], ["php", str(RUNNER), "--bootstrap", str(boot)], max_jobs=3)
    tail += _entry(["b_broken"], ["php", str(RUNNER), "--bootstrap", str(broken)])
    tail += _entry(["b_regex"], [sys.executable, "-c", MDWE, "php", str(RUNNER), "--bootstrap", str(boot)])
    tail += _entry(["b_missing"], ["no-such-php-p13", str(RUNNER), "--bootstrap", str(boot)])
    with running_gearmand(workdir) as server:
        extra = "send_exceptions = true"
        with running_pool(workdir, [server.address], concurrency=1, tail=tail, extra=extra) as pool:
            pool.wait_registered(server.port, "b_pid")
            yield server, pool


def test_bootstrap_mode_serves_the_callables_of_the_file(plain: tuple[Gearmand, Pool]) -> None:
    server, _ = plain
    answer = call(server, "b_echo", "héllo/")
    assert answer.ok and answer.data == 'héllo/{"n":7}'.encode()  # arrays JSON-encoded
    broken = call(server, "b_broken")
    assert broken.command is Command.WORK_EXCEPTION
    assert b"must return an array of job name => callable, not integer" in broken.data
    assert b"broken.php" in broken.data
    missing = call(server, "b_missing")
    assert missing.command is Command.WORK_EXCEPTION
    assert b"cannot run 'no-such-php-p13': not found on PATH" in missing.data
    assert call(server, "b_echo", "still").data == b'still{"n":5}'  # the other entries serve on


def test_the_runner_works_where_memory_may_not_be_writable_and_executable(plain: tuple[Gearmand, Pool]) -> None:
    """PCRE's JIT cannot allocate executable memory there: PHP disables it with a warning (to the log, never into a
    result) and runs the expression interpreted."""
    server, pool = plain
    answer = call(server, "b_regex", "xaaab")
    assert answer.ok and answer.data == b"xAb", answer
    assert call(server, "b_regex", "aa-a").data == b"A-A"
    pool.wait_log("Allocation of JIT memory failed, PCRE JIT will be disabled")


def test_a_runner_is_replaced_after_max_jobs(plain: tuple[Gearmand, Pool]) -> None:
    server, pool = plain
    pids = [int(call(server, "b_pid").data) for _ in range(7)]
    # Three jobs a runner, whatever the previous tests left of the current one's count.
    changes = [i for i in range(1, 7) if pids[i] != pids[i - 1]]
    assert len(changes) == 2 and changes[1] - changes[0] == 3, pids
    pool.wait_log("replaced after 3 jobs (max_jobs); started a new one")


def test_a_runner_is_replaced_past_max_rss_mb(tmp_path: Path) -> None:
    boot = tmp_path / "jobs.php"
    boot.write_text(BOOTSTRAP)
    tail = _entry(["b_pid", "b_grow"], ["php", str(RUNNER), "--bootstrap", str(boot)], max_rss_mb=64)
    with (
        running_gearmand(tmp_path) as server,
        running_pool(tmp_path, [server.address], tail=tail, concurrency=1) as pool,
    ):
        pool.wait_registered(server.port, "b_pid")
        before = int(call(server, "b_pid").data)
        assert call(server, "b_grow", 16).data == b"1"
        assert int(call(server, "b_pid").data) == before  # under the cap: kept
        assert call(server, "b_grow", 64).data == b"2"
        assert int(call(server, "b_pid").data) != before
        pool.wait_log("MiB RSS (max_rss_mb 64); started a new one")


# --- reload -----------------------------------------------------------------------------------------------------


def test_sighup_with_runners_busy_loses_and_kills_nothing(tmp_path: Path) -> None:
    with drush_site(tmp_path, concurrency=2, timeout=30) as (server, pool, _):
        old = {int(call(server, "testjobs_pid").data) for _ in range(4)}
        naps: list[Answer] = []
        files = [tmp_path / f"nap{i}.pid" for i in range(2)]

        def submit() -> None:
            with PlainClient(server.address) as client:
                data = [payload("testjobs_nap", 2, str(f), site=SITE, uid="1") for f in files]
                naps.extend(client.submit_many("testjobs_nap", data))

        thread = threading.Thread(target=submit)
        thread.start()
        wait_for(lambda: all(f.exists() for f in files), message="both naps running")
        pool.signal(signal.SIGHUP)
        thread.join(30)
        assert [(a.command, a.data) for a in naps] == [(Command.WORK_COMPLETE, b"rested")] * 2
        pool.wait_log("reload done: every worker process runs the new configuration", timeout=20)
        new = wait_for(
            lambda: (pids := {int(call(server, "testjobs_pid").data) for _ in range(4)}) and not pids & old and pids,
            timeout=20,
            message="jobs served by the new processes' runners",
        )
        assert new and not new & old
        assert "runner died" not in pool.log_text() and "timed out" not in pool.log_text()
        for pid in old:
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists(), message=f"old runner {pid} stopped")


def test_a_stopped_pool_leaves_no_runner(tmp_path: Path) -> None:
    with drush_site(tmp_path) as (server, pool, _):
        pid = runner_pid(server)
        pool.signal(signal.SIGTERM)
        assert pool.wait(20) == 0
    assert not Path(f"/proc/{pid}").exists()
    assert os.path.exists(tmp_path / "drupal.sqlite")
