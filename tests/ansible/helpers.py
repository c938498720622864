"""Helpers for the Ansible tests: run ansible-playbook from the project's venv, processes on free ports."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.gearmand import admin, free_port
from tests.support.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
BIN = Path(sys.executable).parent  # the venv pytest runs from (.venv/bin)
GEARMAND = "/usr/sbin/gearmand"


def tool(name: str) -> str:
    """A command of the venv (ansible-playbook, ansible-lint, yamllint...), or fail saying how to get it."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise AssertionError(f"{name} not found in {BIN} nor on PATH: run `make venv` (pyproject extra [dev])")


def system_binary(path: str, package: str) -> str:
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} is missing: install Debian's {package} (make system-deps)")
    return path


def ansible_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(ROLES),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        cwd=cwd or REPO,
        env=env,
        input=input,
        text=True,
        timeout=timeout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )


def playbook(
    path: Path | str,
    *args: str,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    inventory: Path | str | None = REPO / "inventory" / "hosts.yml",
) -> subprocess.CompletedProcess[str]:
    argv = [tool("ansible-playbook")]
    if inventory is not None:
        argv += ["-i", str(inventory)]
    argv += [str(path), *args]
    return run(argv, timeout=timeout, env=env or ansible_env())


RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    return {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")} for m in RECAP.finditer(output)
    }


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextlib.contextmanager
def process(argv: Sequence[str], log: Path, port: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A background process (output to log), waited for on its port, always stopped at exit."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        if port is not None:
            try:
                wait_port(port, proc)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- {log}:\n{log.read_text(errors='replace')[-3000:]}") from None
        yield proc
    finally:
        stop_process(proc, 10)


def queued(port: int, function: str) -> int:
    """Jobs gearmand holds for a function (admin 'status': total column)."""
    for line in admin(port, "status").splitlines():
        fields = line.split("\t")
        if fields[0] == function and len(fields) >= 2:
            return int(fields[1])
    return 0


@contextlib.contextmanager
def postgres_cluster(password: str) -> Iterator[int]:
    """A PostgreSQL cluster of its own with password authentication (scram-sha-256) on loopback, a gearman role with
    this password owning a gearman database; yields the port. As the postgres user when run as root."""
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    assert bindirs, "PostgreSQL is required (Debian postgresql, make system-deps)"
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # Not under tmp_path: the postgres user must reach it, and pytest keeps /tmp/pytest-of-root 0700.
    home = Path(tempfile.mkdtemp(prefix="ij-pg-"))
    home.chmod(0o755)
    data = home / "data"
    data.mkdir()
    pwfile = home / "superuser-password"
    pwfile.write_text("superuser-pw\n")
    pwfile.chmod(0o644)
    if as_user:
        os.chown(data, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
    pg_ctl = [*as_user, str(bindirs[0] / "pg_ctl"), "-D", str(data)]
    try:
        initdb = [*as_user, str(bindirs[0] / "initdb"), "-D", str(data), "-A", "scram-sha-256", "-U", "postgres"]
        result = run([*initdb, f"--pwfile={pwfile}"], timeout=120)
        assert result.returncode == 0, result.stdout
        port = free_port()
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        result = run([*pg_ctl, "-o", options, "-l", str(data / "log"), "-w", "start"], timeout=120)
        assert result.returncode == 0, result.stdout
        psql = ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"]
        env = {**os.environ, "PGPASSWORD": "superuser-pw"}
        escaped = password.replace("'", "''")
        for sql in (f"CREATE ROLE gearman LOGIN PASSWORD '{escaped}'", "CREATE DATABASE gearman OWNER gearman"):
            result = run([*psql, "-c", sql], env=env, timeout=60)
            assert result.returncode == 0, result.stdout
        yield port
    finally:
        run([*pg_ctl, "-m", "immediate", "-w", "stop"], timeout=60)
        shutil.rmtree(home, ignore_errors=True)


INIT_WRAPPER = """\
#!/bin/sh
# The test's stand-in for gearman-server-initctl (start, stop that waits, restart, status), on its own pid file.
set -eu
PIDFILE={pidfile}
running() {{ [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }}
do_start() {{
    running && return 0
    rm -f "$PIDFILE"
{start}
}}
do_stop() {{
    if running; then
        pid=$(cat "$PIDFILE"); kill -TERM "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$PIDFILE"
}}
case "$1" in
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop; do_start ;;
    status) running || exit 3 ;;
esac
"""


def init_wrapper(path: Path, pidfile: Path, start: str) -> Path:
    """Write an executable init wrapper whose start runs these shell lines (gearmand with --pid-file="$PIDFILE")."""
    path.write_text(INIT_WRAPPER.format(pidfile=pidfile, start=textwrap.indent(textwrap.dedent(start).strip(), "    ")))
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def gearman_tree(prefix: str, *subdirs: str) -> Iterator[Path]:
    """A directory standing in for a host's files: top 0755 (the gearman user reaches it, unlike pytest's tmp_path)
    with these subdirectories owned by gearman, 0750. At exit the gearmand of run/gearmand.pid is killed and the
    tree removed."""
    if os.geteuid() != 0:
        raise AssertionError("needs root (gearmand --user=gearman, files owned by gearman), as CI runs")
    gearman = pwd.getpwnam("gearman")
    top = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        top.chmod(0o755)
        for sub in subdirs:
            (top / sub).mkdir(mode=0o750)
            os.chown(top / sub, gearman.pw_uid, gearman.pw_gid)
        yield top
    finally:
        pidfile = top / "run" / "gearmand.pid"
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
        shutil.rmtree(top)
