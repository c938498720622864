"""The systemd units the roles write, rendered by Ansible and rated offline by `systemd-analyze security`
(systemd 252 reads unit files without a running systemd): no parse warnings, and the exposure goals of
issue 4 (worker <= 3.0 with the default profile; gearmand with the role's drop-in <= 4.0, from Debian's 9.2).
molecule measures the same on real systemd hosts."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.helpers import ROLES, playbook, run, system_binary

DEBIAN_UNIT = Path("/lib/systemd/system/gearman-job-server.service")
WORKER = ROLES / "islandora_job_worker"
SERVER = ROLES / "gearman_server"


def _render(tmp: Path, jobs: list[tuple[str, Path, Path, dict[str, Any]]]) -> None:
    tasks = [
        {
            "name": f"Render {dest.name}",
            "vars": variables,
            "ansible.builtin.template": {"src": str(src), "dest": str(dest), "mode": "0644"},
        }
        for _, src, dest, variables in jobs
    ]
    book = tmp / "render-units.yml"
    book.write_text(
        json.dumps(
            [
                {
                    "name": "Render the units",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "vars_files": [
                        str(WORKER / "defaults" / "main.yml"),
                        str(WORKER / "vars" / "main.yml"),
                        str(SERVER / "defaults" / "main.yml"),
                        str(SERVER / "vars" / "main.yml"),
                        str(SERVER / "vars" / "Debian.yml"),
                    ],
                    "tasks": tasks,
                }
            ]
        )
    )
    result = playbook(book, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    system_binary("/usr/bin/systemd-analyze", "systemd")
    tmp = tmp_path_factory.mktemp("units")
    dropin_dir = tmp / "root" / "etc" / "systemd" / "system" / "gearman-job-server.service.d"
    dropin_dir.mkdir(parents=True)
    package_dir = tmp / "root" / "lib" / "systemd" / "system"
    package_dir.mkdir(parents=True)
    assert DEBIAN_UNIT.is_file(), f"{DEBIAN_UNIT} missing: install gearman-job-server (make system-deps)"
    shutil.copy(DEBIAN_UNIT, package_dir / DEBIAN_UNIT.name)
    server_vars = {
        "__gearman_server_database_units": ["mariadb.service", "mysql.service"],
        "__gearman_server_writable_dirs": ["/var/log/gearman-job-server", "/var/lib/gearman"],
        "__gearman_server_firewall_wanted": False,
    }
    firewalled_dir = tmp / "firewalled" / "etc" / "systemd" / "system" / "gearman-job-server.service.d"
    firewalled_dir.mkdir(parents=True)
    firewalled_package_dir = tmp / "firewalled" / "lib" / "systemd" / "system"
    firewalled_package_dir.mkdir(parents=True)
    shutil.copy(DEBIAN_UNIT, firewalled_package_dir / DEBIAN_UNIT.name)
    bridge = {
        "islandora_job_worker_user": "www-data",
        "islandora_job_worker_group": "www-data",
        "islandora_job_worker_memory_deny_write_execute": False,
        "islandora_job_worker_read_write_paths": ["/var/www/drupal7/sites/default/files"],
        "islandora_job_worker_protect_home": "read-only",
    }
    jobs = [
        ("worker", WORKER / "templates" / "islandora-job-worker.service.j2", tmp / "islandora-job-worker.service", {}),
        (
            "worker-bridge",
            WORKER / "templates" / "islandora-job-worker.service.j2",
            tmp / "islandora-job-worker-bridge.service",
            bridge,
        ),
        (
            "worker-limits",
            WORKER / "templates" / "islandora-job-worker.service.j2",
            tmp / "islandora-job-worker-limits.service",
            {"islandora_job_worker_concurrency": 4, "islandora_job_worker_memory_max": "4G"},
        ),
        (
            "worker-cpus",
            WORKER / "templates" / "islandora-job-worker.service.j2",
            tmp / "islandora-job-worker-cpus.service",
            # concurrency 0 (one process per CPU): sized to the CPU count the role reads on the host.
            {"__islandora_job_worker_cpus": {"stdout": "6"}, "islandora_job_worker_tasks_max": 0},
        ),
        (
            "worker-tasks",
            WORKER / "templates" / "islandora-job-worker.service.j2",
            tmp / "islandora-job-worker-tasks.service",
            {"islandora_job_worker_tasks_max": 1000, "islandora_job_worker_concurrency": 4},
        ),
        (
            "dropin",
            SERVER / "templates" / "gearman-job-server.dropin.conf.j2",
            dropin_dir / "islandora-job.conf",
            server_vars,
        ),
        (
            "firewall",
            SERVER / "templates" / "gearman-server-firewall.service.j2",
            tmp / "gearman-server-firewall.service",
            {},
        ),
        (
            "dropin-firewalled",
            SERVER / "templates" / "gearman-job-server.dropin.conf.j2",
            firewalled_dir / "islandora-job.conf",
            server_vars | {"__gearman_server_firewall_wanted": True},
        ),
        (
            "firewall-in-root",
            SERVER / "templates" / "gearman-server-firewall.service.j2",
            tmp / "firewalled" / "etc" / "systemd" / "system" / "gearman-server-firewall.service",
            {},
        ),
    ]
    _render(tmp, jobs)
    return {name: dest for name, _, dest, _ in jobs} | {"root": tmp / "root", "firewalled": tmp / "firewalled"}


def _security(*args: str) -> tuple[float, str]:
    result = run(["systemd-analyze", "security", "--offline=true", "--no-pager", *args])
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-3000:]
    warnings = [line for line in result.stdout.splitlines() if re.search(r"\.(service|conf):\d+: ", line)]
    assert not warnings, "systemd cannot parse the unit:\n" + "\n".join(warnings)
    return float(match.group(1)), result.stdout


def test_worker_unit_default_profile_exposure_at_most_3(units: dict[str, Path]) -> None:
    exposure, output = _security(str(units["worker"]))
    print(f"islandora-job-worker.service exposure: {exposure}")
    assert exposure <= 3.0, output
    text = units["worker"].read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "KillMode=mixed",
        "TimeoutStopSec=45",
        "User=islandora-job",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in text.splitlines(), line


def test_worker_unit_bridge_profile_parses(units: dict[str, Path]) -> None:
    exposure, _ = _security(str(units["worker-bridge"]))
    print(f"islandora-job-worker.service (bridge profile) exposure: {exposure}")
    assert "MemoryDenyWriteExecute=no" in units["worker-bridge"].read_text()
    assert exposure <= 4.0


def _directives(unit: Path, name: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith(f"{name}=")]


def test_worker_unit_tasks_max_sized_to_the_pool_memory_max_unset_by_default(units: dict[str, Path]) -> None:
    # 32 tasks per worker process + 32: concurrency 4 -> 160; one per CPU on a 6-CPU host -> 224.
    assert _directives(units["worker-limits"], "TasksMax") == ["160"]
    assert _directives(units["worker-cpus"], "TasksMax") == ["224"]
    assert _directives(units["worker-tasks"], "TasksMax") == ["1000"]
    assert _directives(units["worker"], "MemoryMax") == []
    assert _directives(units["worker-limits"], "MemoryMax") == ["4G"]
    exposure, _ = _security(str(units["worker-limits"]))  # systemd parses both directives
    assert exposure <= 3.0


def test_gearmand_dropin_brings_exposure_to_at_most_4(units: dict[str, Path]) -> None:
    before, _ = _security(str(DEBIAN_UNIT))
    after, output = _security(f"--root={units['root']}", "gearman-job-server.service")
    print(f"gearman-job-server.service exposure: Debian's unit {before}, with the role's drop-in {after}")
    assert after <= 4.0, output
    dropin = units["dropin"].read_text()
    assert "After=mariadb.service mysql.service" in dropin
    assert "ReadWritePaths=/var/log/gearman-job-server /var/lib/gearman" in dropin


def test_firewall_unit_parses(units: dict[str, Path]) -> None:
    _security(str(units["firewall"]))


def test_gearmand_requires_the_firewall_unit_when_it_has_one(units: dict[str, Path]) -> None:
    """Issue 10: the firewall failed open. With the table wanted, gearmand is ordered after its unit and requires
    it (a failed table load fails gearmand's start; stopping the table stops gearmand); on loopback, no such tie."""
    firewalled = units["dropin-firewalled"].read_text().splitlines()
    assert "Requires=gearman-server-firewall.service" in firewalled
    assert "After=gearman-server-firewall.service" in firewalled
    assert firewalled.index("Requires=gearman-server-firewall.service") < firewalled.index("[Service]")
    plain = units["dropin"].read_text()
    assert "gearman-server-firewall" not in plain
    # systemd parses the unit with its drop-in and the required unit in place (no warning)
    _security(f"--root={units['firewalled']}", "gearman-job-server.service")
    dump = run(
        ["systemd-analyze", "cat-config", f"--root={units['firewalled']}", "systemd/system/gearman-job-server.service"]
    )
    assert dump.returncode == 0 and "Requires=gearman-server-firewall.service" in dump.stdout, dump.stdout[-2000:]
