"""The worker keeps the Drupal module's job status table as the drush router did (issue 11), against a real MariaDB
and a real PostgreSQL (each started once for the session, the table as Drupal 7's schema makes it, with a table
prefix), a real gearmand, our worker pool, and a PHP client doing exactly what the module's submission code does
(tests/integration/php/drupal_submit.php: dedupe, insert the WAITING row, submit with PHP's gearman extension,
remove the row when the submission fails).

On main, the worker has no ``[drupal]`` section (its config is refused) and never touches the table, so a job
submitted a second time is skipped by the module's dedupe: these tests fail there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from islandora_job.worker.drupal_status import Database, _connect
from tests.integration import drupal_databases as dbs
from tests.integration.drupal_databases import Site
from tests.support.gearmand import Gearmand, admin, free_port, running_gearmand
from tests.support.peers import wait_for
from tests.support.pool import Pool

PHP_CLIENT = Path(__file__).parent / "php" / "drupal_submit.php"
BASE_URL = "http://site1.example"
RECORD, FAIL = "ij_test_record", "ij_test_fail"
#: What the table may cost a job in these tests ([drupal] timeout) and the cap of the reconnection backoff.
DB_TIMEOUT, RETRY_MAX = 0.5, 1.0


def _drupal_section(url: str, extra: str = "") -> str:
    return (
        f'[drupal]\ndatabase = "{url}"\nprefix = "{dbs.PREFIX}"\ntimeout = {DB_TIMEOUT}\nretry_max = {RETRY_MAX}\n'
        f"{extra}\n"
    )


class Stack:
    """gearmand + our worker pool configured with the site's database + the module's PHP submission code."""

    def __init__(self, site: Site, gearmand: Gearmand, pool: Pool, workdir: Path) -> None:
        self.site, self.gearmand, self.pool, self.workdir = site, gearmand, pool, workdir
        self.runs = workdir / "runs.txt"

    def submit(
        self, jobs: Sequence[dict[str, Any]], base_url: str = BASE_URL, commit_delay_ms: int = 0
    ) -> list[dict[str, Any]]:
        """Run the module's submission code for each job, in order, in one PHP process, as site ``base_url``;
        ``commit_delay_ms``: how long a background submission's transaction stays open after gearmand took the job."""
        site = self.site
        php = shutil.which("php")
        assert php, "php-cli is required"
        env = {
            **os.environ,
            "DRUPAL_DSN": site.pdo_dsn,
            "DRUPAL_DB_USER": dbs.USER,
            "DRUPAL_DB_PASSWORD": dbs.PASSWORD,
            "DRUPAL_TABLE": dbs.TABLE,
            "DRUPAL_BASE_URL": base_url,
            "GEARMAN_PORT": str(self.gearmand.port),
            "DRUPAL_COMMIT_DELAY_MS": str(commit_delay_ms),
        }
        text = "".join(json.dumps(job) + "\n" for job in jobs)
        result = subprocess.run(
            [php, str(PHP_CLIENT)], input=text, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr + result.stdout
        return [json.loads(line) for line in result.stdout.splitlines()]

    def job(self, mode: str, name: str, marker: str) -> dict[str, Any]:
        return {"mode": mode, "job": name, "args": [str(self.runs), marker]}

    def ran(self, marker: str) -> int:
        text = self.runs.read_text() if self.runs.exists() else ""
        return text.splitlines().count(marker)

    def wait_queue_empty(self, timeout: float = 30.0) -> None:
        def empty() -> bool:
            for line in admin(self.gearmand.port, "status").splitlines():
                fields = line.split("\t")
                if len(fields) == 4 and (int(fields[1]) or int(fields[2])):
                    return False
            return True

        wait_for(empty, timeout, message="gearmand's queues empty and no job running")


@pytest.fixture(scope="module", params=["mysql", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    site: Site = request.getfixturevalue("mariadb_site" if request.param == "mysql" else "postgresql_site")
    workdir = tmp_path_factory.mktemp(f"drupal-{request.param}")
    with running_gearmand(workdir) as gearmand:
        pool = Pool(
            workdir,
            [gearmand.address],
            concurrency=2,
            modules=["tests.integration.drupal_jobs"],
            tail=_drupal_section(site.url),
        ).start()
        try:
            pool.wait_registered(gearmand.port, RECORD, timeout=30)
            yield Stack(site, gearmand, pool, workdir)
        finally:
            pool.stop()


@pytest.fixture
def fresh(stack: Stack) -> Stack:
    stack.site.clear()
    return stack


def _states(site: Site) -> list[int]:
    return [state for _id, _data, state in site.rows()]


def test_the_same_foreground_job_submitted_twice_runs_twice(fresh: Stack) -> None:
    first, second = fresh.submit([fresh.job("fg", RECORD, "twice"), fresh.job("fg", RECORD, "twice")])
    assert first["outcome"] == second["outcome"] == "submitted", (first, second)
    assert first["result"] == second["result"] == "ran twice"
    assert fresh.ran("twice") == 2
    assert fresh.site.rows() == []  # each row deleted once its job succeeded


def test_a_background_job_resubmitted_after_it_ran_is_queued_again(fresh: Stack) -> None:
    (first,) = fresh.submit([fresh.job("bg", RECORD, "again")])
    assert first["outcome"] == "submitted"
    wait_for(lambda: fresh.ran("again") == 1, 10, message="the first background run")
    wait_for(lambda: fresh.site.rows() == [], 10, message="its row deleted")
    (second,) = fresh.submit([fresh.job("bg", RECORD, "again")])
    assert second["outcome"] == "submitted", second  # not "deduped": no WAITING row was left behind
    wait_for(lambda: fresh.ran("again") == 2, 10, message="the second background run")


def test_a_row_committed_after_its_job_ran_is_still_cleared(fresh: Stack) -> None:
    """The module commits a background job's row after gearmand accepted the job (and later still inside a
    transaction of the site): our worker, unlike drush's bootstrap, may run the job before the row is visible.
    The worker looks again when the job ends and then in the background, so the row goes all the same."""
    (first,) = fresh.submit([fresh.job("bg", RECORD, "late-row")], commit_delay_ms=1500)
    assert first["outcome"] == "submitted"
    assert fresh.ran("late-row") == 1  # it ran while its row was still uncommitted
    wait_for(lambda: fresh.site.rows() == [], 15, message="the row committed after the job ran deleted")
    (second,) = fresh.submit([fresh.job("bg", RECORD, "late-row")])
    assert second["outcome"] == "submitted", second  # not deduped by a row left WAITING
    wait_for(lambda: fresh.ran("late-row") == 2, 10, message="the second background run")


def test_the_module_heartbeat_served_by_the_built_in_job_leaves_no_row(fresh: Stack) -> None:
    """The module's cron heartbeat (function ``ijh``, func ``islandora_job_heartbeat``, args ping and the time),
    served by the worker's built-in job: its row goes as any Python job's, so cron does not pile them up."""
    beat = {"mode": "bg", "job": "islandora_job_heartbeat", "function": "ijh", "args": ["ping", int(time.time())]}
    (first,) = fresh.submit([beat])
    assert first["outcome"] == "submitted"
    wait_for(lambda: fresh.site.rows() == [], 10, message="the heartbeat's row deleted")
    (foreground,) = fresh.submit([{**beat, "mode": "fg"}])
    assert (foreground["outcome"], foreground["result"]) == ("submitted", "1")  # TRUE, echoed as PHP does
    assert fresh.site.rows() == []


def test_a_failed_background_job_leaves_its_row_as_error(fresh: Stack) -> None:
    (submitted,) = fresh.submit([fresh.job("bg", FAIL, "bg-fail")])
    assert submitted["outcome"] == "submitted"
    wait_for(lambda: fresh.ran("bg-fail") == 1, 10, message="the failing job's run")
    rows = wait_for(lambda: (rows := fresh.site.rows()) and rows[0][2] == -1 and rows, 10, message="an ERROR row")
    assert [(data, state) for _id, data, state in rows] == [(submitted["payload"], -1)]
    # ERROR does not block the module's dedupe: the same job can be submitted again.
    (again,) = fresh.submit([fresh.job("bg", FAIL, "bg-fail")])
    assert again["outcome"] == "submitted"


def test_a_job_past_its_time_limit_leaves_its_row_as_error(fresh: Stack) -> None:
    """The watchdog answers a hung job and replaces its process: the row is marked ERROR on the way out."""
    (submitted,) = fresh.submit([fresh.job("bg", "ij_test_hang", "hung")])
    assert submitted["outcome"] == "submitted"
    rows = wait_for(lambda: (rows := fresh.site.rows()) and rows[0][2] == -1 and rows, 15, message="an ERROR row")
    assert [(data, state) for _id, data, state in rows] == [(submitted["payload"], -1)]
    fresh.pool.wait_registered(fresh.gearmand.port, RECORD, timeout=30)  # the replacement process is serving


def test_a_hung_job_whose_row_commits_late_is_still_marked_error(fresh: Stack) -> None:
    """The module commits the row 0.5 s after gearmand took the job, so the job starts without one; the watchdog
    answers it at 1 s and ends the process at once, so the look for the row cannot be left to a background
    thread that dies with it."""
    (submitted,) = fresh.submit([fresh.job("bg", "ij_test_hang", "hung-late")], commit_delay_ms=500)
    assert submitted["outcome"] == "submitted"
    rows = wait_for(lambda: (rows := fresh.site.rows()) and rows[0][2] == -1 and rows, 15, message="an ERROR row")
    assert [(data, state) for _id, data, state in rows] == [(submitted["payload"], -1)]
    fresh.pool.wait_registered(fresh.gearmand.port, RECORD, timeout=30)


def test_a_failed_foreground_job_leaves_no_waiting_row(fresh: Stack) -> None:
    (failed,) = fresh.submit([fresh.job("fg", FAIL, "fg-fail")])
    assert failed["outcome"] == "failed", failed
    assert fresh.ran("fg-fail") == 1
    assert _states(fresh.site) == [-1]  # marked ERROR by the worker: the module's foreground call removes nothing
    (again,) = fresh.submit([fresh.job("fg", FAIL, "fg-fail")])
    assert again["outcome"] == "failed" and fresh.ran("fg-fail") == 2  # ran again, not deduped


def test_no_waiting_row_remains_after_1000_mixed_jobs(fresh: Stack) -> None:
    """Ten PHP processes submit 100 jobs each at once: foreground and background, succeeding and failing, some
    payloads repeated (the module dedupes those whose row is still WAITING)."""
    batches = []
    for client in range(10):
        batch = []
        for n in range(100):
            mode = "fg" if n % 2 else "bg"
            name = FAIL if n % 10 == 3 else RECORD
            marker = f"mix-{client}-{n % 90}"  # 10 payloads per client submitted twice
            batch.append(fresh.job(mode, name, marker))
        batches.append(batch)
    with ThreadPoolExecutor(len(batches)) as executor:
        answers = [answer for batch in executor.map(fresh.submit, batches) for answer in batch]
    assert len(answers) == 1000
    fresh.wait_queue_empty(60)
    # A background row the module committed after its job ran goes at the worker's late look (1, 5 or 30 s later).
    wait_for(
        lambda: not [row for row in fresh.site.rows() if row[2] in (0, 1)],
        40,
        message="no WAITING or RUNNING row left behind",
    )
    rows = fresh.site.rows()
    # Only failed jobs leave a row, as ERROR (the module removes no row of its own); every submitted job ran.
    failed = {a["payload"] for a in answers if a["outcome"] in ("submitted", "failed") and FAIL in a["payload"]}
    assert {data for _id, data, _state in rows} <= failed
    submitted = [a for a in answers if a["outcome"] in ("submitted", "failed")]
    runs = fresh.runs.read_text().splitlines()
    assert len([m for m in runs if m.startswith("mix-")]) == len(submitted)


def test_rows_the_module_inserted_match_byte_for_byte(fresh: Stack) -> None:
    """Payloads with the ``\\/`` of every URL, ``\\u00e9``, a quote and a literal backslash: the worker takes the
    row the module's own code inserted (and that the module's addcslashes lookup finds on PostgreSQL), and a row
    differing by one backslash is left alone."""
    marker = 'caf\u00e9 "quoted" back\\slash /path'
    job = fresh.job("bg", RECORD, marker)
    document = {"func": RECORD, "args": job["args"], "site": BASE_URL, "uid": "1"}
    payload = json.dumps(document, separators=(",", ":")).replace("/", "\\/")
    near = payload.replace("\\\\", "\\\\\\\\", 1)  # one more backslash: not the same payload
    escaped = near.replace("'", "''")
    if fresh.site.kind == "mysql":
        fresh.site.sql(f"INSERT INTO {dbs.TABLE} (data) VALUES ('{escaped.replace(chr(92), chr(92) * 2)}')")
    else:
        fresh.site.sql(f"INSERT INTO {dbs.TABLE} (data) VALUES (convert_to('{escaped}', 'UTF8'))")
    workers = _worker_pids(fresh.pool)
    dbs.stop(workers)  # the job waits in gearmand: its row stays WAITING while resubmitted
    try:
        submitted, again = fresh.submit([job, job])
    finally:
        _signal_all(workers, signal.SIGCONT)
    assert submitted["outcome"] == "submitted"
    assert submitted["payload"] == payload  # our reconstruction is PHP's json_encode, byte for byte
    assert again["outcome"] == "deduped"  # the module's own lookup (addcslashes on PostgreSQL) finds its row
    wait_for(lambda: fresh.ran(marker) == 1, 10, message="the job's run")
    wait_for(lambda: len(fresh.site.rows()) == 1, 10, message="the module's row deleted")
    assert fresh.site.rows()[0][1:] == (near, 0)  # the near miss is untouched, still WAITING


def test_command_entries_keep_their_rows_unless_told(mariadb_site: Site, tmp_path: Path) -> None:
    """One writer per row: a command entry (the drush router keeps the table itself) is left alone by default;
    ``status_table = true`` hands its rows to the worker. (Nothing here depends on the kind of database.)"""
    script = tmp_path / "router.sh"
    script.write_text("#!/bin/sh\ncat >/dev/null\necho routed\n")
    script.chmod(0o755)
    mariadb_site.clear()
    entries = "".join(
        f'[[command_jobs]]\nname = "{name}"\nargv = ["{script}"]\n{keep}\n'
        for name, keep in (("ij_cmd_router", ""), ("ij_cmd_plain", "status_table = true"))
    )
    with running_gearmand(tmp_path) as gearmand:
        pool = Pool(tmp_path, [gearmand.address], concurrency=1, modules=["tests.integration.drupal_jobs"],
                    tail=_drupal_section(mariadb_site.url) + entries).start()  # fmt: skip
        try:
            pool.wait_registered(gearmand.port, "ij_cmd_plain", timeout=30)
            stack = Stack(mariadb_site, gearmand, pool, tmp_path)
            answers = stack.submit(
                [{"mode": "fg", "job": name, "args": ["x"]} for name in ("ij_cmd_router", "ij_cmd_plain")]
            )
        finally:
            pool.stop()
    assert [(a["outcome"], a["result"].strip()) for a in answers] == [("submitted", "routed")] * 2
    # The default entry's row is untouched (the command's to clear); the other one's was deleted by the worker.
    assert [(json.loads(data)["func"], state) for _id, data, state in mariadb_site.rows()] == [("ij_cmd_router", 0)]


# --- faults: the database unreachable, frozen, or slow ---------------------------------------------------------------


def test_a_frozen_database_costs_a_job_at_most_the_timeout_and_loses_nothing(fresh: Stack) -> None:
    """SIGSTOP the database while the module's jobs wait: they still run and answer, each paying at most
    ``timeout`` per statement (then the database is skipped during the backoff); once it answers again, the
    outcomes that could not be written are, and no row is left WAITING."""
    before = fresh.pool.log_text()
    workers = _worker_pids(fresh.pool)
    dbs.stop(workers)  # hold the jobs in gearmand while the module inserts their rows
    try:
        submitted = fresh.submit([fresh.job("bg", RECORD, f"held-{n}") for n in range(4)])
    finally:
        with fresh.site.frozen():
            _signal_all(workers, signal.SIGCONT)
            started = time.monotonic()
            wait_for(lambda: all(fresh.ran(f"held-{n}") == 1 for n in range(4)), 30, message="the held jobs' runs")
            answers = _gearman_cli(
                fresh.gearmand.port, RECORD, [fresh.job("fg", RECORD, f"frozen-{n}") for n in range(4)]
            )
            elapsed = time.monotonic() - started
            # A statement still in flight (a held job's final update) would be answered by the thawed server:
            # let each time out first, so the table shows what the outage left.
            time.sleep(2 * DB_TIMEOUT)
            assert [answer["outcome"] for answer in submitted] == ["submitted"] * 4
    assert answers == [f"ran frozen-{n}" for n in range(4)]
    # 8 jobs; a process pays one timeout per statement until its first error, then skips during the backoff.
    assert elapsed < 8 * 2 * DB_TIMEOUT + 15, elapsed  # bounded (with no cap, a job would wait for ever)
    log = fresh.pool.wait_log("drupal status table", timeout=10)[len(before) :]
    assert "could not mark RUNNING" in log
    assert dbs.PASSWORD not in fresh.pool.log_text()
    assert [state for _id, _data, state in fresh.site.rows()] == [0, 0, 0, 0]  # as the outage left them
    # Back: after the backoff (at most RETRY_MAX) each process writes the outcomes it kept with its next job.
    _wait_outcomes_written(fresh)


def test_a_row_locked_by_another_transaction_costs_a_job_at_most_the_timeout(fresh: Stack) -> None:
    """A slow database: another transaction holds the job's row (SELECT ... FOR UPDATE), so the worker's UPDATE
    waits. It gives up after ``timeout`` (the server too: the statement cannot apply later), the job runs, and
    once the lock is gone the outcome is written."""
    workers = _worker_pids(fresh.pool)
    dbs.stop(workers)
    try:
        (submitted,) = fresh.submit([fresh.job("bg", RECORD, "locked")])
    finally:
        holder = _connect(Database.parse(fresh.site.url), 30)
        cursor = holder.cursor()
        cursor.execute("BEGIN")
        cursor.execute(f"SELECT status_id FROM {dbs.TABLE} FOR UPDATE")
        _signal_all(workers, signal.SIGCONT)
    try:
        assert submitted["outcome"] == "submitted"
        wait_for(lambda: fresh.ran("locked") == 1, 15, message="the job's run despite the lock")
        fresh.pool.wait_log("could not mark RUNNING", timeout=10)
    finally:
        holder.rollback()
        holder.close()
    assert [state for _id, _data, state in fresh.site.rows()] == [0]
    _wait_outcomes_written(fresh)


def test_a_closed_port_costs_nothing_and_is_logged_without_the_password(
    tmp_path: Path, mariadb_site: Site, postgresql_site: Site
) -> None:
    closed = free_port()
    with running_gearmand(tmp_path) as gearmand:
        url = f"mysql://{dbs.USER}:{dbs.PASSWORD}@127.0.0.1:{closed}/{dbs.DATABASE}"
        sites = f'[drupal.sites]\n"http://other.example" = "{postgresql_site.url}"\n'
        metrics_port = free_port()
        sites += f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
        pool = Pool(tmp_path, [gearmand.address], concurrency=1, modules=["tests.integration.drupal_jobs"],
                    tail=_drupal_section(url) + sites).start()  # fmt: skip
        try:
            pool.wait_registered(gearmand.port, RECORD, timeout=30)
            stack = Stack(mariadb_site, gearmand, pool, tmp_path)
            started = time.monotonic()
            answers = _gearman_cli(gearmand.port, RECORD, [stack.job("fg", RECORD, f"closed-{n}") for n in range(5)])
            assert answers == [f"ran closed-{n}" for n in range(5)]
            assert time.monotonic() - started < 10
            log = pool.wait_log("could not mark RUNNING", "Connection refused", timeout=10)
            assert dbs.PASSWORD not in log and f"{dbs.USER}@127.0.0.1:{closed}" in log
            wait_for(lambda: _metric(metrics_port, "islandora_job_drupal_status_errors_total") >= 1, 10, interval=0.2)
            for pid in [pool.pid, *pool.children()]:
                assert dbs.PASSWORD.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            # The per-site database of [drupal.sites] is used for that site's payloads (multisite, separate DBs).
            postgresql_site.clear()
            other = Stack(postgresql_site, gearmand, pool, tmp_path)
            (answer,) = other.submit([other.job("fg", RECORD, "other-site")], "http://other.example")
            assert answer["outcome"] == "submitted" and postgresql_site.rows() == []
        finally:
            pool.stop()


def _worker_pids(pool: Pool) -> list[int]:
    """The pool's worker processes: the children of every supervisor thread (a replacement process may have been
    started by another thread than the main one, and /proc lists children per thread)."""
    pids = []
    for task in Path(f"/proc/{pool.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in (task / "children").read_text().split()]
    assert pids, "no worker process"
    return pids


def _signal_all(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        os.kill(pid, signum)


def _wait_outcomes_written(stack: Stack) -> None:
    """After the backoff (at most RETRY_MAX), run jobs (on whichever process) until the outcomes every process kept
    during the outage are written: no row left."""
    time.sleep(RETRY_MAX + 0.2)
    wait_for(
        lambda: _gearman_cli(stack.gearmand.port, RECORD, [stack.job("fg", RECORD, "poke")]) and not stack.site.rows(),
        20,
        interval=0.2,
        message="the kept outcomes written (no row left)",
    )


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def _gearman_cli(port: int, function: str, jobs: Sequence[dict[str, Any]]) -> list[str]:
    """Submit module-shaped payloads with the gearman CLI (no status row: the table is not reachable anyway)."""
    gearman = shutil.which("gearman")
    assert gearman
    answers = []
    for job in jobs:
        payload = json.dumps(
            {"func": job["job"], "args": job["args"], "site": BASE_URL, "uid": "1"}, separators=(",", ":")
        )
        result = subprocess.run(
            [gearman, "-h", "127.0.0.1", "-p", str(port), "-f", function],
            input=payload.encode(),
            capture_output=True,
            timeout=30,
        )
        answers.append(result.stdout.decode().strip())
    return answers
