"""Bad role variables fail before any change, with a message naming the variable.

Each case runs a one-play playbook including the role with the bad value, in check mode against this
machine (nothing is changed even if validation were missing: the test would then fail on the message).
The cases run in parallel (two at a time) in one fixture, then each is asserted on its own.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.helpers import ansible_env, playbook, recap

# (case id, role, gather facts, variables, expected fragments of the output)
CASES: list[tuple[str, str, bool, dict[str, Any], list[str]]] = [
    (
        "unknown-queue-type",
        "gearman_server",
        False,
        {"gearman_server_queue_type": "rabbitmq"},
        ["gearman_server_queue_type", "must be one of", "rabbitmq"],
    ),
    ("port-not-int", "gearman_server", False, {"gearman_server_port": "http"}, ["gearman_server_port", "int"]),
    (
        "verbose-choice",
        "gearman_server",
        False,
        {"gearman_server_verbose": "LOUD"},
        ["gearman_server_verbose", "must be one of"],
    ),
    (
        "sapi-choice",
        "gearman_php",
        False,
        {"gearman_php_sapis": ["cgi"]},
        ["gearman_php_sapis", "must be one or more of", "cgi"],
    ),
    (
        "concurrency-not-int",
        "islandora_job_worker",
        False,
        {"islandora_job_worker_concurrency": "many"},
        ["islandora_job_worker_concurrency", "int"],
    ),
    (
        "command-job-typo",
        "islandora_job_worker",
        False,
        {"islandora_job_worker_command_jobs": [{"name": "x", "argv": ["true"], "alowed_sites": ["http://a"]}]},
        ["alowed_sites"],
    ),
    (
        "command-job-without-name",
        "islandora_job_worker",
        False,
        {"islandora_job_worker_command_jobs": [{"argv": ["true"]}]},
        ["name"],
    ),
    (
        "wildcard-listen-without-clients",
        "gearman_server",
        True,
        {"gearman_server_listen": "0.0.0.0"},
        ["gearman_server_listen", "gearman_server_allowed_clients is empty", "gearman_server_firewall: false"],
    ),
    (
        "mysql-without-password",
        "gearman_server",
        True,
        {"gearman_server_queue_type": "mysql"},
        ["gearman_server_mysql_password is empty"],
    ),
    (
        "postgres-without-password",
        "gearman_server",
        True,
        {"gearman_server_queue_type": "postgres"},
        ["gearman_server_postgres_password is empty"],
    ),
    (
        "redis-without-password",
        "gearman_server",
        True,
        {"gearman_server_queue_type": "redis"},
        ["gearman_server_redis_password is empty"],
    ),
    (
        "port-out-of-range",
        "gearman_server",
        True,
        {"gearman_server_port": 70000},
        ["gearman_server_port must be 1-65535"],
    ),
    (
        "password-with-space",
        "gearman_server",
        True,
        {"gearman_server_queue_type": "mysql", "gearman_server_mysql_password": "S3cret words"},
        ["gearman_server_mysql_password contains whitespace"],
    ),
    (
        "queue-value-shell-quote",
        "gearman_server",
        True,
        {
            "gearman_server_queue_type": "redis",
            "gearman_server_redis_password": "x",
            "gearman_server_redis_prefix": 'gm"$(id)',
        },
        ["gearman_server_redis_prefix must not contain whitespace, quotes"],
    ),
    (
        "pg-password-line-break",
        "gearman_server",
        True,
        {"gearman_server_queue_type": "postgres", "gearman_server_postgres_password": "a\nb"},
        ["gearman_server_postgres_password contains a line break"],
    ),
    (
        "sqlite-file-in-var-lib",
        "gearman_server",
        True,
        {"gearman_server_sqlite_db": "/var/lib/queue.sqlite3"},
        ["gearman_server_sqlite_db and gearman_server_log_file must be in a directory of their own"],
    ),
    (
        "dead-letters-in-var-lib",
        "islandora_job_worker",
        True,
        {"islandora_job_worker_dead_letters_path": "/var/lib/dead.sqlite3"},
        ["need directories of their own"],
    ),
    (
        "worker-server-without-port",
        "islandora_job_worker",
        True,
        {"islandora_job_worker_servers": ["gearman1.example.org"]},
        ["islandora_job_worker_servers must be a non-empty list"],
    ),
    (
        "exporter-wildcard-without-clients",
        "islandora_job_worker",
        True,
        {"islandora_job_worker_exporter_enabled": True, "islandora_job_worker_exporter_listen": "0.0.0.0:9465"},
        ["islandora_job_worker_exporter_allowed_clients is empty", "islandora_job_worker_exporter_firewall: false"],
    ),
    (
        "exporter-listen-without-host",
        "islandora_job_worker",
        True,
        {"islandora_job_worker_exporter_enabled": True, "islandora_job_worker_exporter_listen": "9465"},
        ["islandora_job_worker_exporter_listen must be", '(is "9465")'],
    ),
    (
        "bad-value-beside-a-password",
        "gearman_server",
        False,
        {"gearman_server_queue_type": "mongodb", "gearman_server_redis_password": "S3cretValue"},
        ["gearman_server_queue_type", "must be one of"],
    ),
]


def _run_case(tmp: Path, case: tuple[str, str, bool, dict[str, Any], list[str]]) -> str:
    name, role, facts, variables, _ = case
    book = tmp / f"{name}.yml"
    play = [
        {
            "name": f"argument case {name}",
            "hosts": "localhost",
            "gather_facts": facts,
            "gather_subset": ["min"],
            "roles": [{"role": role, "vars": variables}],
        }
    ]
    book.write_text(json.dumps(play))
    result = playbook(book, "--check", timeout=180)
    return f"rc={result.returncode}\n{result.stdout}"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("argument_specs")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda c: _run_case(tmp, c), CASES)
        return {case[0]: out for case, out in zip(CASES, results, strict=True)}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_value_is_refused_before_any_change(
    outputs: dict[str, str], case: tuple[str, str, bool, dict[str, Any], list[str]]
) -> None:
    name, _, _, variables, expected = case
    output = outputs[name]
    assert not output.startswith("rc=0"), f"{variables} was accepted:\n{output[-3000:]}"
    counters = recap(output).get("localhost")
    assert counters is not None, output[-3000:]
    assert counters["failed"] == 1 and counters["changed"] == 0, output[-3000:]
    flat = " ".join(output.split())
    for fragment in expected:
        assert fragment in flat, f"expected {fragment!r} in the output:\n{output[-3000:]}"
    # A secret never appears in the output, even in a failure.
    assert "S3cret" not in output, output[-3000:]


FAKE_FACTS_MODULE = """#!/usr/bin/python3
import json
print(json.dumps({"changed": False, "ansible_facts": %s}))
"""


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (
            {
                "os_family": "RedHat",
                "distribution": "Rocky",
                "distribution_version": "9.3",
                "distribution_major_version": "9",
                "service_mgr": "systemd",
            },
            "Rocky 9.3 (RedHat family) is not supported. Supported: Debian-12, Debian-13, Ubuntu-22, Ubuntu-24",
        ),
        (
            {
                "os_family": "Debian",
                "distribution": "Debian",
                "distribution_version": "11.9",
                "distribution_major_version": "11",
                "service_mgr": "systemd",
            },
            "Debian 11.9 (Debian family) is not supported. Supported: Debian-12, Debian-13, Ubuntu-22, Ubuntu-24",
        ),
    ],
    ids=["redhat", "debian11"],
)
@pytest.mark.parametrize("role", ["gearman_server", "gearman_php", "islandora_job_worker"])
def test_unsupported_platforms_fail_clearly(tmp_path: Path, role: str, facts: dict[str, str], expected: str) -> None:
    """Facts of another platform, set by a tiny test module on a fake host (its own fact cache, so the
    real host's cached facts are never touched): each role stops at once with a clear message."""
    library = tmp_path / "library"
    library.mkdir()
    (library / "fake_platform_facts.py").write_text(FAKE_FACTS_MODULE % json.dumps(facts))
    inventory = tmp_path / "inventory.json"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "hosts": {
                        "otherhost": {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}
                    }
                }
            }
        )
    )
    book = tmp_path / "platform.yml"
    book.write_text(
        json.dumps(
            [
                {
                    "name": "Another platform",
                    "hosts": "otherhost",
                    "gather_facts": False,
                    "pre_tasks": [{"name": "Pretend to be another platform", "fake_platform_facts": {}}],
                    "roles": [{"role": role}],
                }
            ]
        )
    )
    env = ansible_env(ANSIBLE_LIBRARY=str(library), ANSIBLE_CACHE_PLUGIN_CONNECTION=str(tmp_path / "facts"))
    result = playbook(book, "--check", inventory=inventory, env=env, timeout=120)
    counters = recap(result.stdout).get("otherhost")
    assert result.returncode != 0 and counters is not None and counters["failed"] == 1, result.stdout[-3000:]
    assert counters["changed"] == 0
    assert expected in " ".join(result.stdout.split()), result.stdout[-3000:]
