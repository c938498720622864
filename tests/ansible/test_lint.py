"""ansible-lint (production profile) and yamllint on the Ansible content, and the syntax of every playbook."""

from __future__ import annotations

import pytest

from tests.ansible.helpers import REPO, ansible_env, playbook, run, tool

ANSIBLE_CONTENT = [
    "roles",
    "site.yml",
    "playbooks",
    "inventory",
    "galaxy.yml",
    ".ansible-lint",
    ".yamllint",
    "meta",
    "changelogs",
]


def test_ansible_lint_production_profile() -> None:
    result = run(
        [tool("ansible-lint"), "--nocolor", "--profile", "production", "--strict"], env=ansible_env(), timeout=300
    )
    assert result.returncode == 0, result.stdout[-6000:]
    assert "Profile 'production' was required, and it passed" in result.stdout, result.stdout[-3000:]


def test_yamllint() -> None:
    paths = [p for p in ANSIBLE_CONTENT if (REPO / p).exists()]
    result = run([tool("yamllint"), "--strict", "-f", "parsable", *paths], env=ansible_env())
    assert result.returncode == 0, result.stdout[-6000:]


@pytest.mark.parametrize("path", ["site.yml", "playbooks/smoke.yml", "playbooks/rolling_restart.yml"])
def test_syntax_check(path: str) -> None:
    result = playbook(REPO / path, "--syntax-check")
    assert result.returncode == 0, result.stdout[-4000:]


def test_cluster_example_inventory_parses() -> None:
    result = run([tool("ansible-inventory"), "-i", "inventory/examples/cluster.yml", "--list"], env=ansible_env())
    assert result.returncode == 0, result.stdout[-3000:]
    for group in ("gearman_servers", "gearman_clients", "islandora_job_workers"):
        assert f'"{group}"' in result.stdout
