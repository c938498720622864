"""Attacks on ``islandora-job check-config`` (issue 10): a NUL byte in a command's argv.

TOML allows ``\\u0000`` in a string. In argv[0] it made check-config exit 70 ("internal error: ValueError:
embedded null byte"); in another argument check-config said OK, and then every job of that command failed at run
time with the same ValueError. Bad input must be one line naming the file and the key, exit 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "islandora_job.cli.main"]


@pytest.mark.parametrize(
    "argv", ['["/bin/ec\\u0000ho"]', '["echo", "a\\u0000b"]'], ids=["in-the-program", "in-an-argument"]
)
def test_a_nul_byte_in_a_commands_argv_is_refused_naming_the_key(tmp_path: Path, argv: str) -> None:
    config = tmp_path / "worker.toml"
    config.write_text(f'servers = ["127.0.0.1:4730"]\n[[command_jobs]]\nname = "x"\nargv = {argv}\n')
    result = subprocess.run([*CLI, "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    [line] = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert str(config) in line and "command_jobs[0].argv" in line, line


@pytest.mark.parametrize("command", [["check-config"], ["list-jobs", "--config"], ["worker", "--config"]])
def test_a_configuration_that_is_not_utf8_is_one_line_naming_the_file(tmp_path: Path, command: list[str]) -> None:
    """A worker.toml saved in Latin-1 (or with a stray byte): exit 70 "internal error: UnicodeDecodeError" from
    check-config, and the same error for the other commands that read it. It is bad input: exit 2, naming the file."""
    config = tmp_path / "worker.toml"
    config.write_bytes(b'servers = ["127.0.0.1:4730"]\n# caf\xe9\n')
    env = {**os.environ, "ISLANDORA_JOB_ALLOW_ROOT": "true"}
    result = subprocess.run([*CLI, *command, str(config)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert str(config) in result.stderr, result.stderr


@pytest.mark.parametrize(
    "table_key",
    [
        ("pool", "idle_grab_interval"),
        ("pool", "shutdown_timeout"),
        ("pool", "default_timeout"),
        ("dead_letters", "lock_timeout"),
        ("dead_letters", "max_age_days"),
    ],
    ids=lambda tk: ".".join(tk),
)
def test_nan_in_a_duration_is_refused_naming_the_key(tmp_path: Path, table_key: tuple[str, str]) -> None:
    """TOML has ``nan``. check-config said OK to it in every duration; with ``pool.idle_grab_interval = nan`` every
    worker process then died at start ("cannot convert float NaN to integer") and was restarted in a loop; a NaN
    shutdown_timeout never expires, and a NaN retention prunes nothing."""
    table, key = table_key
    config = tmp_path / "worker.toml"
    config.write_text(f'servers = ["127.0.0.1:4730"]\n[{table}]\n{key} = nan\n')
    result = subprocess.run([*CLI, "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert f"{table}.{key}" in result.stderr and str(config) in result.stderr, result.stderr
