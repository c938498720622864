"""Static checks of the roles: argument specs match the defaults, every variable is documented, only
ansible.builtin modules, templates marked as managed, every supported OS version resolving to its values
(and no other accepted), and the support claims (platforms, ansible-core) match what the molecule scenarios run."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ansible.helpers import REPO, ROLES, ansible_env, playbook

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


# What each supported OS version resolves to (the vars files a first_found chain picks), and OS versions refused.
OS_CASES: dict[str, tuple[str, str, str]] = {
    # name: (distribution, distribution_version, os_family)
    "Debian-12": ("Debian", "12.8", "Debian"),
    "Debian-13": ("Debian", "13.1", "Debian"),
    "Ubuntu-22": ("Ubuntu", "22.04", "Debian"),
    "Ubuntu-24": ("Ubuntu", "24.04", "Debian"),
    "Debian-11": ("Debian", "11.11", "Debian"),
    "Debian-14": ("Debian", "14.0", "Debian"),
    "Ubuntu-20": ("Ubuntu", "20.04", "Debian"),
    "RedHat-9": ("RedHat", "9.4", "RedHat"),
}
SUPPORTED_OS = ["Debian-12", "Debian-13", "Ubuntu-22", "Ubuntu-24"]
# The value each role must get on every supported version (gearman_php: the PHP of each release's archive).
OS_VALUES: dict[str, tuple[str, dict[str, Any]]] = {
    "gearman_server": (
        "__gearman_server_packages",
        {key: ["gearman-job-server", "gearman-tools"] for key in SUPPORTED_OS},
    ),
    "gearman_php": (
        "__gearman_php_version",
        {"Debian-12": "8.2", "Debian-13": "8.4", "Ubuntu-22": "8.1", "Ubuntu-24": "8.3"},
    ),
    "islandora_job_worker": (
        "__islandora_job_worker_packages",
        {key: ["python3", "python3-venv", "sqlite3"] for key in SUPPORTED_OS},
    ),
}


def test_os_variables_resolve_for_supported_versions_only(tmp_path: Path) -> None:
    """Each role's tasks/variables.yml, run for real with the facts of each OS version: a supported version loads
    its values through the first_found chain; any other version (an older Debian the chain's Debian.yml would
    match, a newer one, another family) fails with a message naming it and the supported list."""
    hosts = {}
    for role in ROLE_NAMES:
        for case, (distribution, version, family) in OS_CASES.items():
            hosts[f"{role}.{case}"] = {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "role_under_test": role,
                "value_under_test": OS_VALUES[role][0],
                "fake_facts": {
                    "distribution": distribution,
                    "distribution_version": version,
                    "distribution_major_version": version.split(".")[0],
                    "os_family": family,
                    "service_mgr": "systemd",
                },
            }
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
    book = tmp_path / "os.yml"
    book.write_text(
        json.dumps(
            [
                {
                    "name": "The OS variables of each role",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Pretend",
                            "ansible.builtin.set_fact": {
                                "cacheable": True,
                                **{k: f"{{{{ fake_facts.{k} }}}}" for k in hosts[next(iter(hosts))]["fake_facts"]},
                            },
                        },
                        {
                            "name": "Load",
                            "ansible.builtin.include_role": {
                                "name": "{{ role_under_test }}",
                                "tasks_from": "variables.yml",
                            },
                        },
                        {
                            "name": "Show",
                            "ansible.builtin.debug": {"msg": "{{ lookup('ansible.builtin.vars', value_under_test) }}"},
                        },
                    ],
                }
            ]
        )
    )
    # One line per task and host; the fake facts stay in memory (not in the project's fact cache).
    env = ansible_env(ANSIBLE_STDOUT_CALLBACK="ansible.builtin.oneline", ANSIBLE_CACHE_PLUGIN="memory")
    result = playbook(book, "--forks", "8", inventory=inventory, env=env)
    shown: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^(\S+) \| (SUCCESS|FAILED!) => (\{.*\})$", line)
        if not match:
            continue
        outcome = json.loads(match[3])
        if match[2] == "FAILED!":
            failed[match[1]] = outcome.get("msg", "")
        elif (
            "msg" in outcome and "changed" in outcome and set(outcome) <= {"msg", "changed", "_ansible_verbose_always"}
        ):
            shown[match[1]] = outcome["msg"]
    for role in ROLE_NAMES:
        name, values = OS_VALUES[role]
        for case in OS_CASES:
            host = f"{role}.{case}"
            if case in SUPPORTED_OS:
                assert host not in failed, f"{host}: {failed.get(host)}"
                assert shown.get(host) == values[case], f"{host}: {name} is {shown.get(host)!r}"
            else:
                distribution, version, _ = OS_CASES[case]
                assert host in failed, f"{role} accepted {case} (got {name} = {shown.get(host)!r})"
                assert f"{role}: {distribution} {version}" in failed[host], failed[host]
                assert ", ".join(SUPPORTED_OS) in failed[host], failed[host]


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_supported_os_list_holds_the_tested_platforms(role: str) -> None:
    """Each role's explicit list of supported versions (vars/main.yml) is the same, and holds what meta claims."""
    supported = yaml.safe_load((ROLES / role / "vars" / "main.yml").read_text())[f"__{role}_supported_os"]
    assert supported == SUPPORTED_OS
    assert set(PLATFORMS) <= set(supported)


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
    texts = [
        REPO / "docs" / "deploy.md",
        *(ROLES / role / sub for role in ROLE_NAMES for sub in ("tasks/variables.yml", "vars/main.yml")),
    ]
    for path in texts:
        for paragraph in re.split(r"\n\s*\n|\n- name:", path.read_text()):
            if "Ubuntu" in paragraph:
                assert "untested" in paragraph, f"{path.relative_to(REPO)}: names Ubuntu without 'untested'"
