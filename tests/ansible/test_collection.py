"""galaxy.yml: the repository builds as the islandora.job collection, installs into a temporary path,
carries what the worker role needs (source, lock) and nothing of the test tree, and a playbook uses the
roles by their collection names (argument validation and a check-mode run). The deployment from the built
collection onto a host is molecule/debian13 (create.yml builds and installs it; no roles_path)."""

from __future__ import annotations

import json
import re
import sys
import tarfile
from pathlib import Path

import yaml

from tests.ansible.helpers import REPO, ansible_env, playbook, recap, run, tool


def test_collection_builds_installs_and_its_roles_run(tmp_path: Path) -> None:
    build = run(
        [tool("ansible-galaxy"), "collection", "build", "--force", "--output-path", str(tmp_path), str(REPO)],
        env=ansible_env(),
        timeout=300,
    )
    assert build.returncode == 0, build.stdout
    [tarball] = tmp_path.glob("islandora-job-*.tar.gz")
    collections = tmp_path / "collections"
    install = run(
        [tool("ansible-galaxy"), "collection", "install", "--force", "-p", str(collections), str(tarball)],
        env=ansible_env(),
        timeout=300,
    )
    assert install.returncode == 0, install.stdout
    installed = collections / "ansible_collections" / "islandora" / "job"
    for role in ("gearman_server", "gearman_php", "islandora_job_worker"):
        assert (installed / "roles" / role / "meta" / "argument_specs.yml").is_file()
    assert not (installed / ".venv").exists()
    # What the worker role builds its wheelhouse from, and nothing of the test or bench tree.
    for needed in ("islandora_job/__init__.py", "pyproject.toml", "README.md", "requirements/worker.lock"):
        assert (installed / needed).is_file(), needed
    with tarfile.open(tarball) as archive:
        tops = {name.split("/")[0] for name in archive.getnames()}
    assert not tops & {"tests", "benchmarks", "molecule", "examples", ".venv", ".git", "scripts"}, tops
    assert not any(name.endswith((".pyc", ".egg-info")) for name in tops)

    # The role's wheelhouse builder, from the installed collection, with its default source (the collection).
    built = run(
        [
            sys.executable,
            str(installed / "roles/islandora_job_worker/files/build_wheelhouse.py"),
            "--python-version",
            "3.13",
            "--cache",
            str(tmp_path / "cache"),
            "--source",
            str(installed),
            "--lock",
            str(installed / "requirements/worker.lock"),
        ],
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:]
    wheels = json.loads(built.stdout.strip().splitlines()[-1])["wheels"]
    assert [w for w in wheels if w.startswith("islandora_job-")] and [w for w in wheels if w.startswith("pygearman-")]

    empty_roles = tmp_path / "no-roles"
    empty_roles.mkdir()
    env = ansible_env(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_ROLES_PATH=str(empty_roles))

    # By collection name: the argument specs travel with the roles.
    bad = tmp_path / "bad.yml"
    bad.write_text(
        json.dumps(
            [
                {
                    "name": "Use the collection's role with a bad value",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "roles": [{"role": "islandora.job.gearman_server", "vars": {"gearman_server_queue_type": "nope"}}],
                }
            ]
        )
    )
    result = playbook(bad, "--check", env=env, timeout=120)
    assert result.returncode != 0 and "gearman_server_queue_type must be one of" in result.stdout, result.stdout

    # A real (check-mode) run of a role from the collection on this machine, and the syntax of all three.
    good = tmp_path / "good.yml"
    good.write_text(
        json.dumps(
            [
                {
                    "name": "PHP clients",
                    "hosts": "localhost",
                    "gather_facts": True,
                    "gather_subset": ["min"],
                    "roles": [{"role": "islandora.job.gearman_php"}],
                },
                {
                    "name": "Servers",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "roles": [{"role": "islandora.job.gearman_server"}],
                },
                {
                    "name": "Workers",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "roles": [{"role": "islandora.job.islandora_job_worker"}],
                },
            ]
        )
    )
    syntax = playbook(good, "--syntax-check", env=env, timeout=120)
    assert syntax.returncode == 0, syntax.stdout
    php_book = tmp_path / "php.yml"
    php_book.write_text(json.dumps([json.loads(good.read_text())[0]]))
    php = playbook(php_book, "--check", env=env, timeout=180)
    counters = recap(php.stdout).get("localhost")
    assert php.returncode == 0 and counters is not None and counters["failed"] == 0, php.stdout[-5000:]
    assert "islandora.job.gearman_php" in php.stdout or "gearman_php :" in php.stdout


def test_galaxy_yml_names_no_url() -> None:
    """No repository/homepage/issues/documentation URL: the project has no public repository to point at."""
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert not {"repository", "homepage", "issues", "documentation"} & set(galaxy)
    assert not re.search(r"https?://", json.dumps(galaxy))
