"""Static checks of the roles: argument specs match the defaults, every variable is documented, only
ansible.builtin modules, templates marked as managed, an OS vars file per supported platform."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ansible.helpers import REPO, ROLES

ROLE_NAMES = ["gearman_server", "gearman_php", "islandora_job_worker"]
PLATFORMS = ["Debian-12", "Debian-13", "Ubuntu-22", "Ubuntu-24"]
FIXED_NAMES = [
    "gearman_server_queue_type",
    "gearman_server_listen",
    "gearman_server_port",
    "gearman_server_allowed_clients",
    "gearman_server_firewall",
    "gearman_server_job_retries",
    "gearman_php_sapis",
    "islandora_job_worker_servers",
    "islandora_job_worker_concurrency",
    "islandora_job_worker_job_packages",
    "islandora_job_worker_command_jobs",
]


def spec(role: str) -> dict[str, Any]:
    data = yaml.safe_load((ROLES / role / "meta" / "argument_specs.yml").read_text())
    return data["argument_specs"]["main"]["options"]


def defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_argument_specs_match_defaults(role: str) -> None:
    options, values = spec(role), defaults(role)
    assert set(options) == set(values), set(options) ^ set(values)
    for name, option in options.items():
        assert name.startswith(f"{role}_"), f"{name}: not prefixed with the role name"
        assert option.get("description"), f"{name}: no description"
        assert option.get("type"), f"{name}: no type"
        value = values[name]
        if isinstance(value, str) and "{{" in value:
            assert "default" not in option, f"{name}: computed default, the spec must not claim one"
            continue
        assert option.get("default") == value, f"{name}: spec default {option.get('default')!r} != {value!r}"
        if "choices" in option and not isinstance(value, list):
            assert value in option["choices"], name


def test_fixed_variable_names_exist() -> None:
    names = {n for role in ROLE_NAMES for n in spec(role)}
    assert not set(FIXED_NAMES) - names


def test_every_variable_is_documented() -> None:
    deploy = (REPO / "docs" / "deploy.md").read_text()
    missing = [n for role in ROLE_NAMES for n in spec(role) if f"`{n}`" not in deploy]
    assert not missing, f"not in docs/deploy.md: {missing}"


def _task_files() -> list[Path]:
    files = [p for role in ROLE_NAMES for sub in ("tasks", "handlers") for p in (ROLES / role / sub).glob("*.yml")]
    return [*files, REPO / "site.yml", *(REPO / "playbooks").glob("*.yml")]


def _module_keys(node: Any) -> list[str]:
    keys: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+\.[a-z0-9_]+", key):
                keys.append(key)
            keys.extend(_module_keys(value))
    elif isinstance(node, list):
        for item in node:
            keys.extend(_module_keys(item))
    return keys


@pytest.mark.parametrize("path", _task_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_only_builtin_modules(path: Path) -> None:
    keys = _module_keys(yaml.safe_load(path.read_text()))
    assert [k for k in keys if not k.startswith("ansible.builtin.")] == []


@pytest.mark.parametrize("template", sorted(ROLES.glob("*/templates/*.j2")), ids=lambda p: p.name)
def test_templates_are_marked_managed(template: Path) -> None:
    assert "{{ ansible_managed | comment }}" in template.read_text()


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_vars_file_for_every_supported_platform(role: str) -> None:
    for platform in PLATFORMS:
        assert (ROLES / role / "vars" / f"{platform}.yml").is_file(), f"{role}: vars/{platform}.yml"
