"""The queue's password stays out of the process list, world-readable files and Ansible's output (issues 10, 17).

A bracketed IPv6 Postgres host ("[::1]") used to give ``postgresql://…@[[::1]]:5432``; libpq's error repeats the
whole URI, password included, into preflight.log (0644), and the role's rescue task printed that file. Here the
role's configure.yml runs for real (ansible-playbook, include_role) with its file paths moved into a temporary
directory, against a Postgres port where nothing listens, so the pre-flight check fails. Then the play's output
(at -v) and every file the role left are searched for the password, as written and percent-encoded.

The successful path (issue 17), against a real PostgreSQL with password authentication: while configure.yml runs
(pre-flight check included: a throw-away gearmand connects with the candidate password file), every process's
command line (/proc/*/cmdline) is read in a loop; none may hold the password. The password ends up in the libpq
password file alone (0600), PARAMS in the defaults file carries the queue's settings, a leftover /etc/gearmand.conf
of the old layout (password in the URI) is removed, and a second run changes nothing.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import tempfile
import threading
from pathlib import Path

from tests.ansible.helpers import ROLES, playbook, postgres_cluster, recap, run
from tests.support.gearmand import free_port

ROLE = ROLES / "gearman_server"
CHECK_SCRIPT = ROLE / "files" / "gearman-server-check-queue"
PASSWORD = "Kn0wn-S3cret/p@ss:w%rd"
ENCODED = "Kn0wn-S3cret%2Fp%40ss%3Aw%25rd"


def leaks(text: str) -> list[str]:
    return [s for s in (PASSWORD, ENCODED, "Kn0wn-S3cret") if s in text]


def test_failed_preflight_with_an_ipv6_host_leaks_no_password(tmp_path: Path) -> None:
    etc, log = tmp_path / "etc", tmp_path / "log"
    etc.mkdir()
    log.mkdir()
    preflight_log = log / "preflight.log"
    preflight_log.write_text("an older run's log\n")
    preflight_log.chmod(0o644)  # as the role before this fix left it: must end up 0600
    variables = {
        "gearman_server_queue_type": "postgres",
        "gearman_server_postgres_host": "[::1]",
        "gearman_server_postgres_port": free_port(),  # nothing listens: the pre-flight check fails
        "gearman_server_postgres_password": PASSWORD,
        "gearman_server_log_file": str(log / "gearmand.log"),
        "gearman_server_start_timeout": 10,
        "__gearman_server_config_file": str(etc / "gearmand.conf"),
        "__gearman_server_defaults_file": str(etc / "gearman-job-server"),
        "__gearman_server_pgpass_file": str(etc / "pgpass"),
        "__gearman_server_preflight_log": str(preflight_log),
        "__gearman_server_check_script": str(CHECK_SCRIPT),
        "__gearman_server_user": "gearman",
        "__gearman_server_group": "gearman",
        "__gearman_server_writable_dirs": [str(log)],
        "__gearman_server_systemd": False,
    }
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    book = tmp_path / "preflight.yml"
    book.write_text(
        json.dumps(
            [
                {
                    "name": "Configure gearmand's queue (the role's configure.yml)",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Configure",
                            "ansible.builtin.include_role": {"name": "gearman_server", "tasks_from": "configure.yml"},
                        }
                    ],
                }
            ]
        )
    )
    result = playbook(book, "-v", "-e", f"@{tmp_path / 'vars.json'}", timeout=180)
    output = result.stdout
    assert result.returncode != 0, output[-3000:]
    assert "the pre-flight check said: " in output, output[-3000:]
    said = output.split("the pre-flight check said: ", 1)[1][:600]
    assert "::1" in said and "[[" not in said, f"the URI must bracket an IPv6 host once: {said}"
    assert not leaks(output), f"the play printed the password: {leaks(output)}"
    assert list(etc.iterdir()) == [], "a configuration that failed its check was installed, or its candidate left"
    assert stat.S_IMODE(preflight_log.stat().st_mode) == 0o600
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name not in ("vars.json",):
            assert not leaks(path.read_text(errors="replace")), f"{path} holds the password"


def test_check_script_masks_a_uri_that_libpq_repeats(tmp_path: Path) -> None:
    """libpq repeats a URI it cannot parse (here an unterminated IPv6 bracket) with its password."""
    conf = tmp_path / "gearmand.conf"
    conf.write_text(
        "--queue-type=Postgres\n"
        f"--libpq-conninfo=postgresql://gearman:{ENCODED}@[::1:{free_port()}/gearman\n"
        "--libpq-table=queue\n"
    )
    log = tmp_path / "preflight.log"
    user = ["--user", "gearman"] if os.geteuid() == 0 else []
    result = run(["python3", str(CHECK_SCRIPT), str(conf), *user, "--timeout", "10", "--log", str(log)])
    assert result.returncode == 1, result.stdout
    assert "postgresql://gearman:********@" in result.stdout, result.stdout
    assert not leaks(result.stdout), result.stdout
    assert not leaks(log.read_text())
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def scan_cmdlines(stop: threading.Event, seen: list[str]) -> None:
    """Every process's command line, read again and again until stop: the ones holding gearmand, and any leak."""
    while not stop.is_set():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if leaks(text) or ("gearmand" in text and "--libpq" in text):
                seen.append(text)
        stop.wait(0.005)


def test_configured_postgres_password_is_only_in_the_password_file() -> None:
    if os.geteuid() != 0:
        raise AssertionError("needs root (files owned by gearman, gearmand --user=gearman), as CI runs")
    # Not under pytest's tmp_path (0700): the gearman user must reach the candidate password file.
    top = Path(tempfile.mkdtemp(prefix="ij-secrets-"))
    try:
        top.chmod(0o755)
        etc, log = top / "etc", top / "log"
        etc.mkdir()
        log.mkdir()
        old_conf = etc / "gearmand.conf"  # the layout of before issue 17: every queue option, password in the URI
        old_conf.write_text(f"--queue-type=Postgres\n--libpq-conninfo=postgresql://gearman:{ENCODED}@127.0.0.1/x\n")
        old_conf.chmod(0o640)
        with postgres_cluster(PASSWORD) as port:
            variables = {
                "gearman_server_queue_type": "postgres",
                "gearman_server_postgres_host": "127.0.0.1",
                "gearman_server_postgres_port": port,
                "gearman_server_postgres_password": PASSWORD,
                "gearman_server_log_file": str(log / "gearmand.log"),
                "gearman_server_start_timeout": 20,
                "gearman_server_service_state": "stopped",  # the handlers restart no service here
                "__gearman_server_config_file": str(old_conf),
                "__gearman_server_defaults_file": str(etc / "gearman-job-server"),
                "__gearman_server_pgpass_file": str(etc / "pgpass"),
                "__gearman_server_preflight_log": str(log / "preflight.log"),
                "__gearman_server_check_script": str(CHECK_SCRIPT),
                "__gearman_server_writable_dirs": [str(log)],
                "__gearman_server_systemd": False,
            }
            vars_file = top / "vars.json"
            vars_file.write_text(json.dumps(variables))
            vars_file.chmod(0o600)
            book = top / "configure.yml"
            book.write_text(
                json.dumps(
                    [
                        {
                            "name": "Configure gearmand's queue (the role's configure.yml)",
                            "hosts": "localhost",
                            "gather_facts": False,
                            "vars": {"__gearman_server_user": "gearman", "__gearman_server_group": "gearman"},
                            "tasks": [
                                {
                                    "name": "Configure",
                                    "ansible.builtin.include_role": {
                                        "name": "gearman_server",
                                        "tasks_from": "configure.yml",
                                    },
                                }
                            ],
                        }
                    ]
                )
            )
            stop, seen = threading.Event(), []
            scanner = threading.Thread(target=scan_cmdlines, args=(stop, seen), daemon=True)
            scanner.start()
            try:
                first = playbook(book, "-v", "-e", f"@{vars_file}", timeout=300)
            finally:
                stop.set()
                scanner.join(10)
            second = playbook(book, "-v", "-e", f"@{vars_file}", timeout=300)
        assert first.returncode == 0, first.stdout[-4000:]
        assert second.returncode == 0, second.stdout[-4000:]
        assert recap(second.stdout)["localhost"]["changed"] == 0, "a second run changed something:\n" + second.stdout
        assert not leaks(first.stdout + second.stdout), "the play printed the password"
        assert any("gearman-server-check-queue" not in s and "passfile=" in s for s in seen), (
            "the scan never saw the pre-flight gearmand: it proves nothing"
        )
        assert not [s for s in seen if leaks(s)], "a command line held the password"
        assert not old_conf.exists(), "the old layout's config file (password in the URI) was left"
        pgpass = etc / "pgpass"
        mode = pgpass.stat()
        assert (stat.S_IMODE(mode.st_mode), mode.st_uid) == (0o600, pwd.getpwnam("gearman").pw_uid)
        assert pgpass.read_text().splitlines()[-1].endswith(PASSWORD.replace(":", "\\:"))
        defaults = (etc / "gearman-job-server").read_text()
        assert f"--libpq-conninfo=postgresql://gearman@127.0.0.1:{port}/gearman?passfile={pgpass}" in defaults
        for path in top.rglob("*"):
            if path.is_file() and path not in (pgpass, vars_file):
                assert not leaks(path.read_text(errors="replace")), f"{path} holds the password"
        assert sorted(p.name for p in etc.iterdir()) == ["gearman-job-server", "pgpass"], "a candidate was left"
    finally:
        shutil.rmtree(top, ignore_errors=True)
