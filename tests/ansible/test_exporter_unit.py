"""The exporter's unit, configuration and firewall table as the worker role writes them (issue 14).

Rendered by real Ansible through the role's own exporter_settings.yml (the derived settings and its checks), then:
the unit parsed and rated offline by `systemd-analyze security` (no parse warning, an exposure goal), the
configuration read by the exporter's own settings reader, the table checked by `nft -c`. The refusals of bad
settings are cases of test_argument_specs.py. molecule's cluster scenario runs the same unit on a real systemd host.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from islandora_job.exporter.settings import resolve
from tests.ansible.helpers import ROLES, playbook, run, system_binary

WORKER = ROLES / "islandora_job_worker"
TEMPLATES = WORKER / "templates"
EXEC = "/opt/islandora-job/current/bin/islandora-job exporter --config /etc/islandora-job/exporter.toml"
NFT_PRE = "+/usr/sbin/nft -f /etc/islandora-job-exporter/firewall.nft"

# (case, variables): each rendered to its own directory.
CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "firewalled": {
        "islandora_job_worker_exporter_listen": "198.18.2.21:9465",
        "islandora_job_worker_exporter_allowed_clients": ["198.18.2.31/32", "2001:db8:7::/64"],
        "islandora_job_worker_exporter_servers": ["gearman1:4730", "[2001:db8::1]:4731"],
        "islandora_job_worker_exporter_dead_letters": False,
    },
    "opted-out": {
        "islandora_job_worker_exporter_listen": "0.0.0.0:9100",
        "islandora_job_worker_exporter_firewall": False,
        "islandora_job_worker_servers": ["10.0.0.1:4730", "10.0.0.2:4730"],
    },
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("exporter")
    plays = []
    for case, settings in CASES.items():
        # Task variables: they win over the defaults file (play vars would not: vars_files come after them).
        variables = settings | {"islandora_job_worker_exporter_enabled": True, "__islandora_job_worker_systemd": True}
        (tmp / case).mkdir()
        plays.append(
            {
                "name": f"Render the exporter ({case})",
                "hosts": "localhost",
                "gather_facts": False,
                "vars_files": [str(WORKER / "defaults" / "main.yml"), str(WORKER / "vars" / "main.yml")],
                "tasks": [
                    {
                        "name": "Derive and check the exporter's settings as the role does",
                        "vars": variables,
                        "ansible.builtin.include_tasks": str(WORKER / "tasks" / "exporter_settings.yml"),
                    },
                    *(
                        {
                            "name": f"Render {src}",
                            "vars": variables,
                            "ansible.builtin.template": {
                                "src": str(TEMPLATES / src),
                                "dest": str(tmp / case / dest),
                                "mode": "0644",
                            },
                        }
                        for src, dest in (
                            ("islandora-job-exporter.service.j2", "islandora-job-exporter.service"),
                            ("exporter.toml.j2", "exporter.toml"),
                            ("islandora-job-exporter.nft.j2", "firewall.nft"),
                        )
                    ),
                ],
            }
        )
    book = tmp / "render.yml"
    book.write_text(json.dumps(plays))
    result = playbook(book, timeout=180)
    assert result.returncode == 0, result.stdout[-4000:]
    return {case: tmp / case for case in CASES}


def _security(unit: Path) -> float:
    system_binary("/usr/bin/systemd-analyze", "systemd")
    result = run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)])
    warnings = [line for line in result.stdout.splitlines() if re.search(r"\.service:\d+: ", line)]
    assert not warnings, "systemd cannot parse the unit:\n" + "\n".join(warnings)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-3000:]
    return float(match.group(1))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize("case", list(CASES))
def test_the_unit_parses_and_is_hardened(rendered: dict[str, Path], case: str) -> None:
    unit = rendered[case] / "islandora-job-exporter.service"
    exposure = _security(unit)
    print(f"islandora-job-exporter.service ({case}) exposure: {exposure}")
    # The worker's goal is 3.0; the exporter needs less (no commands, no writable path): 1.4 today.
    assert exposure <= 2.0
    lines = _lines(unit)
    for line in (
        f"ExecStart={EXEC}",
        "Restart=on-failure",
        "RestartPreventExitStatus=2",
        "User=islandora-job",
        "Group=islandora-job",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "PrivateUsers=yes",
    ):
        assert line in lines, line
    assert not [line for line in lines if line.startswith("ReadWritePaths=")], "the exporter writes nowhere"
    pre = [line.split("=", 1)[1] for line in lines if line.startswith("ExecStartPre=")]
    assert pre == ([NFT_PRE] if case == "firewalled" else [])


def test_the_configuration_is_what_the_exporter_reads(rendered: dict[str, Path]) -> None:
    def read(case: str) -> tuple[list[str], str, str]:
        settings = resolve(
            path=str(rendered[case] / "exporter.toml"),
            servers=[],
            listen=None,
            timeout=None,
            refresh=None,
            max_functions=None,
            worker_config=None,
        )
        return [str(s) for s in settings.servers], str(settings.listen), settings.worker_config

    # Default: loopback, the worker's own servers (no gearman_servers group here: 127.0.0.1:4730), its store.
    assert read("default") == (["127.0.0.1:4730"], "127.0.0.1:9465", "/etc/islandora-job/worker.toml")
    assert read("firewalled") == (["gearman1:4730", "[2001:db8::1]:4731"], "198.18.2.21:9465", "")
    assert read("opted-out") == (["10.0.0.1:4730", "10.0.0.2:4730"], "0.0.0.0:9100", "/etc/islandora-job/worker.toml")


def test_the_firewall_table_is_valid_nftables_for_the_exporter_port(rendered: dict[str, Path]) -> None:
    system_binary("/usr/sbin/nft", "nftables")
    table = rendered["firewalled"] / "firewall.nft"
    result = run(["nft", "-c", "-f", str(table)])
    assert result.returncode == 0, result.stdout
    text = table.read_text()
    assert "table inet islandora_job_exporter {" in text
    assert "tcp dport != 9465 accept" in text
    assert "elements = { 198.18.2.31/32 }" in text and "elements = { 2001:db8:7::/64 }" in text
