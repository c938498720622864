"""Static checks of the roles: argument specs match the defaults, every variable is documented, only
ansible.builtin modules, templates marked as managed, an OS vars file per supported platform, and the
support claims (platforms, ansible-core) match what the molecule scenarios run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ansible.helpers import REPO, ROLES

ROLE_NAMES = ["gearman_server", "gearman_php", "islandora_job_worker"]
# Platforms claimed: exactly the Debian suites the molecule scenarios boot (test_support_claims_match_scenarios).
PLATFORMS = ["Debian-12", "Debian-13"]
SUITE_VERSIONS = {"bookworm": "12", "trixie": "13"}
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


def _scenario_suites() -> set[str]:
    suites: set[str] = set()
    for path in (REPO / "molecule").glob("*/molecule.yml"):
        for platform in yaml.safe_load(path.read_text()).get("platforms", []):
            if "suite" in platform:
                suites.add(platform["suite"])
    return suites


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_support_claims_match_scenarios(role: str) -> None:
    """meta/main.yml claims the Debian releases a scenario converges, and nothing else (no Ubuntu: untested)."""
    suites = _scenario_suites()
    assert suites == set(SUITE_VERSIONS), suites
    assert {f"Debian-{SUITE_VERSIONS[s]}" for s in suites} == set(PLATFORMS)
    info = yaml.safe_load((ROLES / role / "meta" / "main.yml").read_text())["galaxy_info"]
    claimed = {(p["name"], v) for p in info["platforms"] for v in p["versions"]}
    assert claimed == {("Debian", s) for s in suites}, claimed


def _tested_ansible_core() -> str:
    """The ansible-core the tests and scenarios run: the lower bound of the dev extra, which pins one minor."""
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'"ansible-core>=(\d+\.\d+),<(\d+\.\d+)"', text)
    assert match, "pyproject.toml: no ansible-core>=X.Y,<X.Z in the dev extra"
    major, minor = match.group(1).split(".")
    assert match.group(2) == f"{major}.{int(minor) + 1}", "the dev extra must pin one ansible-core minor (tested)"
    import ansible.release

    assert ansible.release.__version__.startswith(match.group(1) + "."), ansible.release.__version__
    return match.group(1)


def test_minimum_ansible_core_is_the_tested_one() -> None:
    """The lowest claimed ansible-core (collection, roles, docs) is the one the tests run, not an older untested one."""
    tested = _tested_ansible_core()
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    assert runtime["requires_ansible"] == f">={tested}.0"
    for role in ROLE_NAMES:
        info = yaml.safe_load((ROLES / role / "meta" / "main.yml").read_text())["galaxy_info"]
        assert str(info["min_ansible_version"]) == tested, role
    deploy = (REPO / "docs" / "deploy.md").read_text()
    assert f"ansible-core {tested} or later" in deploy
    assert "2.14 is not supported" in deploy.replace("\n", " ")
    for old in ("2.15 or later", "Ubuntu 22.04 and 24.04 (vars"):
        assert old not in deploy


def test_untested_platforms_are_said_to_be_untested() -> None:
    """Ubuntu vars files may stay; wherever a role or the docs name Ubuntu, it says untested."""
    texts = [REPO / "docs" / "deploy.md", *(ROLES / role / "tasks" / "variables.yml" for role in ROLE_NAMES)]
    for path in texts:
        for paragraph in re.split(r"\n\s*\n|\n- name:", path.read_text()):
            if "Ubuntu" in paragraph:
                assert "untested" in paragraph, f"{path.relative_to(REPO)}: names Ubuntu without 'untested'"
