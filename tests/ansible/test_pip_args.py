"""islandora_job_worker_pip_args (where a private index's credentials go) stay out of Ansible's output and off
pip's command line (issue 10): they reach pip as PIP_* variables, the tasks using them have no_log, and a
failed build is reported with URL credentials masked. Check mode on this machine: the build runs on the
controller and fails (the index is a closed loopback port) before the role would change anything."""

from __future__ import annotations

import json
from pathlib import Path

from tests.ansible.helpers import ansible_env, playbook

SECRET = "s3cr3t-fake-token"


def test_a_failed_build_does_not_print_the_index_credentials(tmp_path: Path) -> None:
    book = tmp_path / "pip-args.yml"
    book.write_text(
        json.dumps(
            [
                {
                    "name": "Worker with a private index",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": True,
                    "gather_subset": ["min"],
                    "vars": {"ansible_python_interpreter": "/usr/bin/python3"},
                    "roles": [
                        {
                            "role": "islandora_job_worker",
                            "vars": {
                                "islandora_job_worker_pip_args": [
                                    f"--index-url=http://ijuser:{SECRET}@127.0.0.1:9/simple",
                                    "--retries",
                                    "0",
                                    "--timeout=2",
                                ],
                                "islandora_job_worker_wheelhouse_cache": str(tmp_path / "cache"),
                            },
                        }
                    ],
                }
            ]
        )
    )
    result = playbook(book, "--check", "-vv", inventory="localhost,", env=ansible_env(), timeout=300)
    assert result.returncode != 0, result.stdout[-3000:]
    assert "Building the wheelhouse failed" in result.stdout, result.stdout[-3000:]
    assert SECRET not in result.stdout, [line for line in result.stdout.splitlines() if SECRET in line][:5]
    assert "[WARNING]" not in result.stdout, result.stdout[-3000:]
