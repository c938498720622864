"""Server names that cannot be hosts (issue 10; found by the outside attack, branch ``attack``).

A label over 63 characters, an empty label (``a..b``) or a NUL made Python's resolver raise ``UnicodeError`` or
``ValueError`` rather than ``OSError``: every worker process died at connect and was restarted in a loop, so the
healthy server beside the bad one was never served; ``check-config`` said OK; the CLI exited 70, "internal
error". The first three tests are the attack's, copied unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from islandora_job.address import ServerAddress
from islandora_job.worker.link import ServerLink
from tests.integration.test_worker_io_faults import PING_BOUND, ping_for, worker_on
from tests.support.gearmand import Gearmand
from tests.support.peers import PlainClient
from tests.support.pool import running_pool

CLI = [sys.executable, "-m", "islandora_job.cli.main"]
LONG_LABEL = "h" * 64  # a DNS label over 63 characters: Python's idna codec raises UnicodeError, not OSError


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}


def test_a_server_name_with_an_over_long_label_does_not_stop_the_pool_serving_the_others(
    tmp_path: Path, gearmand: Gearmand
) -> None:
    """One configured server whose host name has a 64-character label (a typo, a pasted token): every worker
    process died at connect with a UnicodeError traceback and was restarted, over and over, so the healthy server
    beside it was never served. It must be one unreachable server among others, as an unresolvable name is."""
    with running_pool(tmp_path, [f"{LONG_LABEL}:4730", gearmand.address], concurrency=1) as pool:
        pool.wait_registered(gearmand.port, "t.pid", count=1, timeout=20)
        [child] = pool.children()
        with PlainClient(gearmand.address, timeout=20) as client:
            assert client.call("t.pid").data == str(child).encode()
        assert "Traceback" not in pool.log_text()


@pytest.mark.parametrize("host", [LONG_LABEL, "a..b", "a\\u0000b"], ids=["long-label", "empty-label", "nul"])
def test_check_config_refuses_a_server_name_that_cannot_be_a_host(tmp_path: Path, host: str) -> None:
    """Each of these made every worker process die at connect (UnicodeError, ValueError); check-config said OK."""
    config = tmp_path / "worker.toml"
    config.write_text(f'servers = ["{host}:4730"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "islandora_job.cli.main", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "servers" in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("host", ["h" * 64, "a..b"], ids=["long-label", "empty-label"])
@pytest.mark.parametrize("command", [["status"], ["version"], ["workers"], ["submit", "f"]])
def test_a_server_name_with_a_bad_label_is_not_an_internal_error(command: list[str], host: str) -> None:
    """A 64-character DNS label: Python's idna codec raises UnicodeError, which reached the user as exit 70
    ("internal error"). It is a bad address (2) or an unreachable server (3), in one line naming it."""
    server = f"{host}:4730"
    result = subprocess.run(
        [*CLI, *command, "--server", server], capture_output=True, text=True, timeout=30, env=_env()
    )
    assert result.returncode in (2, 3), (result.returncode, result.stderr)
    assert host in result.stderr and "Traceback" not in result.stderr


def test_the_loop_takes_a_name_that_cannot_be_a_host_as_a_server_down_logged_once(gearmand: Gearmand) -> None:
    """In one worker process: each bad name is one server down (backoff, one throttled line naming it and why),
    never an exception out of the loop, and the good server is served throughout."""
    bad = [f"{LONG_LABEL}:4730", "a..b:4730"]
    with worker_on([*bad, gearmand.address]) as log_lines:
        times = ping_for(gearmand.address, 3.0, PING_BOUND)
    assert len(times) >= 5
    for server in bad:
        lines = [line for line in log_lines.lines if server in line and "serving" not in line]
        assert len(lines) == 1, lines  # the backoff retried several times within the throttle's window
        assert "unreachable" in lines[0] and "empty label or one longer than 63 characters" in lines[0], lines


@pytest.mark.parametrize(
    "address", [ServerAddress(LONG_LABEL), ServerAddress("a..b"), ServerAddress("a\x00b")], ids=["long", "empty", "nul"]
)
def test_a_connect_that_the_resolver_refuses_is_an_oserror_with_a_reason(address: ServerAddress) -> None:
    """What the loop catches for "server down" is OSError; a name the resolver would refuse with UnicodeError or
    ValueError (an address built in code, past the parser) becomes one, with a reason, and no socket is left."""
    link = ServerLink(address, b"")
    with pytest.raises(OSError) as error:
        link.start_connect(0.0, 1.0)
    assert error.value.strerror and ("host" in error.value.strerror), error.value.strerror
    assert link.sock is None
