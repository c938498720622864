"""The command bridge with a fake drush router: stdin, stdout, exit status, time limit, substitutions."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from islandora_job.payload import Payload, PayloadError, decode
from islandora_job.worker.bridge import BridgeRefused, CommandJob, discover_names, run_command
from islandora_job.worker.config import CommandJobConfig
from islandora_job.worker.router import Assignment

ROUTER = str(Path(__file__).parent / "fake_router.py")


def _job(argv: list[str] | None = None, **options: object) -> CommandJob:
    config = CommandJobConfig(
        names=("islandora_derivatives",),
        argv=tuple(argv or [sys.executable, ROUTER, "--user={uid}", "--uri={site}"]),
        allowed_sites=("http://localhost", "http://other.example"),
        allowed_uids=(1, 7),
        **options,  # type: ignore[arg-type]
    )
    return CommandJob("islandora_derivatives", config)


def _run(job: CommandJob, func: str, *args: object, site: str | None = "http://localhost", uid: object = 1):  # type: ignore[no-untyped-def]
    data = json.dumps({"func": func, "args": list(args), "site": site, "uid": uid}).encode()
    try:
        payload: Payload | None = decode(data)
    except PayloadError:
        payload = None  # as the router does: the bridge then refuses anything that needs site or uid
    return job.run(Assignment("islandora_derivatives", "H:1", "u", data), payload)


def test_payload_on_stdin_and_stdout_is_the_result() -> None:
    outcome = _run(_job(), "echo", "a", {"b": 1})
    assert outcome.ok
    assert json.loads(outcome.data) == {"func": "echo", "args": ["a", {"b": 1}], "site": "http://localhost", "uid": 1}


def test_site_and_uid_fill_whole_arguments_after_validation() -> None:
    outcome = _run(_job(), "argv", site="http://other.example", uid="7")
    assert json.loads(outcome.data) == ["--user=7", "--uri=http://other.example"]


@pytest.mark.parametrize(
    ("site", "uid", "reason"),
    [
        ("http://evil.example", 1, "site 'http://evil.example' is not in allowed_sites"),
        ("http://localhost; rm -rf /", 1, "is not in allowed_sites"),
        (None, 1, "payload has no site"),
        ("http://localhost", 2, "uid 2 is not in allowed_uids"),
        ("http://localhost", "1 --root=/", "is not a user id"),
        ("http://localhost", True, "payload has no site"),  # an invalid payload: nothing is trusted
        ("http://localhost", None, "is not a user id"),
        # int() raised on these, uncaught, and killed the worker process (issue 10)
        ("http://localhost", "--5", "uid '--5' is not a user id"),
        ("http://localhost", "\u00b9", "uid '¹' is not a user id"),
        ("http://localhost", "9" * 5000, "(5000 characters)' is not a user id"),
        ("http://localhost", "\u0661", "is not a user id"),  # ARABIC-INDIC DIGIT ONE: int() takes it, we do not
        ("http://localhost", " 1", "is not a user id"),
        ("http://localhost", -1, "uid -1 is not a user id"),
        ("http://localhost", 10**10, "is not a user id"),
    ],
)
def test_site_or_uid_outside_the_allowed_sets_is_refused(site: str | None, uid: object, reason: str) -> None:
    outcome = _run(_job(), "argv", site=site, uid=uid)
    assert not outcome.ok
    assert outcome.status == "exception"
    assert reason in outcome.reason


def test_refusal_happens_before_anything_runs() -> None:
    with pytest.raises(BridgeRefused):
        _job().argv(Payload("x", (), "http://nope", 1))


def test_shell_metacharacters_in_the_payload_are_just_bytes(tmp_path: Path) -> None:
    evil = tmp_path / "pwned"
    text = f"$(touch {evil}); `touch {evil}` | touch {evil} && touch {evil}"
    outcome = _run(_job(), "echo", text)
    assert outcome.ok
    assert json.loads(outcome.data)["args"] == [text]
    assert not evil.exists()


def test_non_zero_exit_is_a_failure_with_the_stderr_tail() -> None:
    outcome = _run(_job(), "fail")
    assert outcome.status == "exception"
    assert outcome.reason.startswith("command exited with status 3: ")
    assert outcome.reason.endswith("the last words")
    assert "first line" not in outcome.reason  # only the tail is kept


def test_time_limit_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    started = time.monotonic()
    outcome = _run(_job(timeout=1.0), "hang", str(pid_file))
    assert time.monotonic() - started < 3
    assert outcome.status == "exception"
    assert "timed out after 1s" in outcome.reason
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs and is not a zombie. A process reaped between the open and the read of its stat file
    makes the read fail with ESRCH (seen on a fresh host): that is "gone" too."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return data[data.rfind(b")") + 2 :].split()[0] != b"Z"  # the name may hold spaces and parentheses


def test_stdout_is_capped() -> None:
    outcome = _run(_job(max_output_bytes=1000), "big", 5_000_000)
    assert outcome.ok
    assert outcome.data == b"y" * 1000


def test_a_command_that_does_not_exist_is_a_failure() -> None:
    outcome = _run(_job(argv=["/nonexistent/drush", "--user={uid}"]), "echo")
    assert outcome.status == "exception"
    assert "cannot run '/nonexistent/drush'" in outcome.reason


def test_run_command_feeds_large_stdin_while_reading_stdout() -> None:
    data = b"z" * 3_000_000  # more than a pipe buffer in both directions: needs the select loop
    done = run_command([sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read())"], data, 20, 10**8)
    assert done.returncode == 0
    assert done.stdout == data


def test_a_failing_discovery_command_is_an_error() -> None:
    with pytest.raises(OSError, match="failed"):
        discover_names([sys.executable, ROUTER], timeout=10)  # no payload on stdin: the fake router exits 1


def test_discovery_of_function_names(tmp_path: Path) -> None:
    script = tmp_path / "list.sh"
    script.write_text("#!/bin/sh\necho '-f islandora_derivatives -f islandora_other'\n")
    os.chmod(script, 0o755)
    assert discover_names([str(script)]) == ["islandora_derivatives", "islandora_other"]


def test_a_payload_that_is_not_valid_is_refused_when_a_uid_is_needed() -> None:
    job = CommandJob("b", CommandJobConfig(names=("b",), argv=("echo", "{uid}"), allowed_uids=(1,)))
    data = b'{"func": "x", "args": [], "uid": ' + b"9" * 5000 + b"}"
    outcome = job.run(Assignment("b", "H:1", "u", data), None)
    assert outcome.status == "exception" and "payload has no uid" in outcome.reason
