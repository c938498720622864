"""The built-in jobs and payload leniency, from clients we did not write: the Drupal module's cron heartbeat from
PHP's gearman extension, monitoring with the ``gearman`` CLI, a client that ends its JSON with a NUL (issue 11)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from islandora_job.worker.deadletters import DeadLetterStore
from tests.support.gearmand import Gearmand, admin
from tests.support.peers import PlainClient, wait_for
from tests.support.pool import running_pool

PHP_DIR = Path(__file__).parent / "php"
GEARMAN = shutil.which("gearman") or "gearman"
GEARADMIN = shutil.which("gearadmin") or "gearadmin"


def queued(port: int, function: str) -> int | None:
    """The ``total`` column of gearmand's admin ``status`` for a function (None when gearmand does not list it)."""
    for line in admin(port, "status").splitlines():
        fields = line.split("\t")
        if fields[0] == function and len(fields) == 4:
            return int(fields[1])
    return None


def gearman_client(port: int, function: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """The gearman CLI as a client (libgearman): the workload is ARGs, or stdin when there are none."""
    argv = [GEARMAN, "-h", "127.0.0.1", "-p", str(port), "-f", function, *args]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=30)


def test_the_modules_cron_heartbeat_is_served_and_leaves_nothing_queued(tmp_path: Path, gearmand: Gearmand) -> None:
    """Three cron runs while no worker is up (each left a job queued for ever), then the worker drains them."""
    run = subprocess.run(
        ["php", str(PHP_DIR / "heartbeat_cron.php"), str(gearmand.port), "3"], capture_output=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    handles = run.stdout.decode().split()
    assert len(handles) == 3 and queued(gearmand.port, "ijh") == 3
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        wait_for(lambda: queued(gearmand.port, "ijh") == 0, timeout=15, message="the heartbeats to leave the queue")
        log = pool.wait_log(*(f"job islandora_job_heartbeat handle={h} function=ijh outcome=complete" for h in handles))
        status = subprocess.run([GEARADMIN, "-p", str(gearmand.port), "--status"], capture_output=True, timeout=30)
        assert "ijh\t0\t0\t1" in status.stdout.decode().splitlines()  # nothing queued or running, one worker
        assert "steps aside" not in log
    assert DeadLetterStore(pool.dead_letters).list() == []


def test_a_command_entry_serving_ijh_wins_and_the_builtin_steps_aside(tmp_path: Path, gearmand: Gearmand) -> None:
    """A migrating site keeps the heartbeat on its drush router: no duplicate-function error, the command answers."""
    command = ["/bin/sh", "-c", "cat >/dev/null; printf from-the-command"]
    tail = f'[[command_jobs]]\nnames = ["ijh", "islandora_job_heartbeat"]\nargv = {json.dumps(command)}\ntimeout = 10\n'
    with running_pool(tmp_path, [gearmand.address], concurrency=1, tail=tail) as pool:
        pool.wait_registered(gearmand.port, "ijh", count=1)
        call = (
            f'$c = new GearmanClient(); $c->addServer("127.0.0.1", {gearmand.port}); $c->setTimeout(20000);'
            'echo $c->doNormal("ijh", json_encode(array("func" => "islandora_job_heartbeat",'
            ' "args" => array("ping", time()), "site" => "http://localhost", "uid" => "1")));'
        )
        php = subprocess.run(["php", "-r", call], capture_output=True, timeout=30)
        assert php.stdout == b"from-the-command", php.stderr
        pool.wait_log("built-in job 'islandora_job_heartbeat' steps aside from Gearman function 'ijh': a command_jobs")
        assert "served by two jobs" not in pool.log_text()


#: What monitoring may send to islandora_job.ping with the gearman CLI: (ARGs, stdin).
MONITORING = {
    "text": (("plain text from monitoring",), b""),
    "empty": ((), b""),
    "binary": ((), b"\x00\xff\xfe binary \x80"),
    "json-nul": ((), b'{"func": "islandora_job.ping", "args": []}\x00'),
    "other-func": ((), b'{"func": "something.else", "args": [1]}'),
}


def test_ping_answers_pong_to_whatever_the_gearman_cli_sends(tmp_path: Path, gearmand: Gearmand) -> None:
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "islandora_job.ping", count=1)
        answers = {
            case: gearman_client(gearmand.port, "islandora_job.ping", *a, stdin=i)
            for case, (a, i) in MONITORING.items()
        }
    assert {case: (a.returncode, a.stdout) for case, a in answers.items()} == dict.fromkeys(MONITORING, (0, b"pong"))
    assert DeadLetterStore(pool.dead_letters).list() == []  # monitoring never leaves a dead letter


def test_a_trailing_nul_after_a_json_payload_is_tolerated(tmp_path: Path, gearmand: Gearmand) -> None:
    """One Node.js client ends its JSON with a NUL, as a C string: the gearman CLI (stdin, sent as is) and a plain
    client show the job runs with the payload's args."""
    document = b'{"func":"islandora_job_demo.echo","args":[{"pid":"islandora:1"}],"site":null,"uid":null}'
    with running_pool(tmp_path, [gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "islandora_job_demo.echo", count=1)
        answer = gearman_client(gearmand.port, "islandora_job_demo.echo", stdin=document + b"\0")
        assert (answer.returncode, answer.stdout) == (0, b'{"pid":"islandora:1"}'), answer.stderr
        with PlainClient(gearmand.address) as client:
            assert client.submit("islandora_job_demo.echo", document + b"\0").data == b'{"pid":"islandora:1"}'
    assert DeadLetterStore(pool.dead_letters).list() == []
