"""`make deploy` on this machine: ansible-playbook site.yml with the default inventory (every group on
localhost), then a second run that must change nothing, a --check --diff run that must change nothing and
fail nothing, and playbooks/smoke.yml (a ping job through every server, answered by the deployed worker).

This changes the machine (it is a deployment: gearmand, php-gearman, the worker service), as `make deploy`
does; it needs root and apt. The services it started are stopped at the end unless they ran before.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.ansible.helpers import REPO, playbook, recap, run

SERVICES = {
    # service: (status command, stop command)
    "gearmand": (
        ["/usr/local/sbin/gearman-server-initctl", "status"],
        ["/usr/local/sbin/gearman-server-initctl", "stop"],
    ),
    "worker": (["service", "islandora-job-worker", "status"], ["service", "islandora-job-worker", "stop"]),
}


def _running(status: list[str]) -> bool:
    try:
        return subprocess.run(status, capture_output=True, check=False, timeout=30).returncode == 0
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def deployment() -> Iterator[subprocess.CompletedProcess[str]]:
    """The first `ansible-playbook site.yml` of this module; the services it started are stopped at the end
    unless they ran before."""
    if os.geteuid() != 0:
        raise AssertionError("make deploy needs root (apt, services): run the tests as root, as CI does")
    before = {name: _running(status) for name, (status, _) in SERVICES.items()}
    yield playbook(REPO / "site.yml", timeout=900)
    for name, (status, stop) in SERVICES.items():
        if not before[name] and _running(status):
            run(stop, timeout=120)


def _assert_ok(result: subprocess.CompletedProcess[str], what: str) -> dict[str, int]:
    counters = recap(result.stdout).get("localhost")
    assert result.returncode == 0 and counters is not None, f"{what} failed:\n{result.stdout[-8000:]}"
    assert counters["failed"] == 0 and counters["unreachable"] == 0, result.stdout[-8000:]
    return counters


def changed_tasks(output: str) -> str:
    """The tasks that reported a change, with their result lines (for failure messages)."""
    out: list[str] = []
    task = ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line
        elif line.startswith("changed:"):
            out += [task, line[:500]]
    return "\n".join(out)


@pytest.mark.slow
def test_deploy_twice_then_check_mode_then_smoke(deployment: subprocess.CompletedProcess[str]) -> None:
    _assert_ok(deployment, "the first deploy")

    second_run = playbook(REPO / "site.yml", "--diff", timeout=600)
    second = _assert_ok(second_run, "the second deploy")
    assert second["changed"] == 0, "the second run changed something:\n" + changed_tasks(second_run.stdout)

    check_run = playbook(REPO / "site.yml", "--check", "--diff", timeout=600)
    check = _assert_ok(check_run, "the --check --diff run")
    assert check["changed"] == 0, "check mode reports changes:\n" + changed_tasks(check_run.stdout)

    # sqlite (the default): the queue in PARAMS, no secret, so no /etc/gearmand.conf (issue 17)
    assert not Path("/etc/gearmand.conf").exists()
    assert "--queue-type=libsqlite3" in Path("/etc/default/gearman-job-server").read_text()
    worker_conf = Path("/etc/islandora-job/worker.toml").stat()
    assert stat.S_IMODE(worker_conf.st_mode) == 0o640
    rotate = Path("/etc/logrotate.d/islandora-job-worker")
    if rotate.exists():  # init-script mode (no systemd as PID 1)
        result = run(["logrotate", "-d", str(rotate)])
        assert result.returncode == 0, result.stdout

    smoke = playbook(REPO / "playbooks" / "smoke.yml", "-v", timeout=300)
    _assert_ok(smoke, "playbooks/smoke.yml")
    assert '"stdout": "pong"' in smoke.stdout, smoke.stdout[-4000:]


def _worker_pid() -> int:
    return (
        int(Path("/run/islandora-job-worker.pid").read_text().strip())
        if Path("/run/islandora-job-worker.pid").exists()
        else int(run(["systemctl", "show", "-P", "MainPID", "islandora-job-worker"]).stdout.strip() or 0)
    )


@pytest.mark.slow
def test_releases_side_by_side_rollback_and_reload(
    deployment: subprocess.CompletedProcess[str], tmp_path: Path
) -> None:
    """A code change installs a new release beside the old one and restarts; choosing the old release rolls
    back; a configuration-only change reloads (the supervisor keeps its pid) instead of restarting."""
    # Only the workers' play of site.yml (the servers and clients are not concerned): faster.
    site = tmp_path / "workers.yml"
    site.write_text(json.dumps([yaml.safe_load((REPO / "site.yml").read_text())[2]]))
    _assert_ok(deployment, "the deploy")
    release_a = os.readlink("/opt/islandora-job/current")

    # Without the demo package the wheel set differs: another release, installed beside the first.
    no_demo = tmp_path / "no-demo.yml"
    no_demo.write_text("islandora_job_worker_job_packages: []\n")
    _assert_ok(playbook(site, "-e", f"@{no_demo}", timeout=900), "the deploy of another release")
    release_b = os.readlink("/opt/islandora-job/current")
    assert release_b != release_a and Path(release_a).is_dir(), (release_a, release_b)

    # Rollback by name: back to the first release, restarted, serving.
    name_a = Path(release_a).name
    rollback = playbook(site, "-e", f"islandora_job_worker_release={name_a}", timeout=600)
    _assert_ok(rollback, "the rollback")
    assert os.readlink("/opt/islandora-job/current") == release_a
    assert "Restart the islandora-job worker" in rollback.stdout

    # Back to the build of the tree (release A again, no code change) with a configuration-only change:
    # reload, not restart.
    before = _worker_pid()
    reload = playbook(site, "-e", "islandora_job_worker_pool_max_jobs=9999", timeout=600)
    _assert_ok(reload, "the configuration change")
    assert "RUNNING HANDLER [islandora_job_worker : Reload the islandora-job worker]" in reload.stdout
    assert "RUNNING HANDLER [islandora_job_worker : Restart the islandora-job worker]" not in reload.stdout
    assert _worker_pid() == before, "a reload must keep the supervisor"
    restored = playbook(site, timeout=600)
    _assert_ok(restored, "restoring the configuration")
    assert "Reload the islandora-job worker" in restored.stdout
