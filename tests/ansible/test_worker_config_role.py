"""The worker role's configuration variables, rendered by real Ansible and read back by the worker's own loader.

worker.toml.j2 writes every ``[[command_jobs]]`` key it is given, the top-level and ``[pool]`` keys a migration from
gearman-init needs (send_exceptions, multisite_prefixes, pool.dedicated) and the ``[drupal]`` section; each case is
parsed with :func:`islandora_job.worker.config.load`, as ``check-config`` on the host does. worker.env.j2 is sourced
by ``sh`` (the init script's way) and must give back every value byte for byte. Then the role's configure.yml runs for
real (paths in a temporary directory, the check by this tree's ``islandora-job check-config``): the file with the
Drupal password is 0640, and neither a ``--check --diff`` run, nor a normal one, nor a refused configuration
prints the password.
"""

from __future__ import annotations

import dataclasses
import grp
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from islandora_job.worker import config as worker_config
from tests.ansible.helpers import ROLES, ansible_env, playbook, recap, run

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

WORKER = ROLES / "islandora_job_worker"
VENV = Path(sys.executable).parent.parent
DATABASE = "mysql://drupal:S3cret-Dr%22up%40l%5Cpw%24x@db.example.org:3306/drupal7"
SITE_DB = "postgresql://site2:S3cret-Site2@db2.example.org/site2"
TRICKY = 'quote " backslash \\ dollar $ tick ` tab \t unicode é emoji \U0001f600 del \x7f'

CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "migration": {
        "islandora_job_worker_send_exceptions": True,
        "islandora_job_worker_multisite_prefixes": ["site2", "site3"],
        "islandora_job_worker_pool_dedicated": {"islandora_derivatives": 2, "islandora_job.ping": 1},
        "islandora_job_worker_command_jobs": [
            {
                "names": ["islandora_derivatives", "ijh"],
                "argv": ["drush", "--root=/var/www/drupal7", "--user={uid}", "--uri={site}", "islandora-job-router"],
                "allowed_sites": ["http://localhost", TRICKY],
                "allowed_uids": [1, 0],
                "timeout": 2.5,
                "max_output_bytes": 4096,
            },
            {
                "discover_argv": ["drush", "--root=/var/www/drupal7", "islandora-job-list-functions"],
                "argv": ["drush", "--root=/var/www/drupal7", "--user=1", "islandora-job-router"],
            },
            {"name": "plain", "names": ["plain2"], "argv": ["/bin/cat"], "timeout": 30},
            {
                "names": ["thumbnail"],
                "argv": ["php", "/srv/runner.php"],
                "persistent": True,
                "max_jobs": 50,
                "max_rss_mb": 256,
            },
        ],
    },
    "drupal": {
        "islandora_job_worker_drupal_database": DATABASE,
        "islandora_job_worker_drupal_prefix": "dr_",
        "islandora_job_worker_drupal_sites": {"http://site2.example.org": SITE_DB},
    },
}


def _drupal_supported() -> bool:
    """Whether this tree's worker reads a [drupal] section (issue 11, the status table)."""
    return "drupal" in {item.name for item in dataclasses.fields(worker_config.WorkerConfig)}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each case's worker.toml (and one worker.env), rendered by ansible.builtin.template in one playbook."""
    tmp = tmp_path_factory.mktemp("worker_config")
    tasks: list[dict[str, Any]] = [
        {
            "name": f"Render {name}",
            "vars": variables,
            "ansible.builtin.template": {
                "src": str(WORKER / "templates" / "worker.toml.j2"),
                "dest": str(tmp / f"{name}.toml"),
                "mode": "0600",
            },
        }
        for name, variables in CASES.items()
    ]
    tasks.append(
        {
            "name": "Render worker.env",
            "vars": {"islandora_job_worker_environment": {"OMP_THREAD_LIMIT": 1, "TRICKY": TRICKY.replace("\t", "")}},
            "ansible.builtin.template": {
                "src": str(WORKER / "templates" / "worker.env.j2"),
                "dest": str(tmp / "worker.env"),
                "mode": "0600",
            },
        }
    )
    tasks.append(
        {
            "name": "Render the init script",
            "ansible.builtin.template": {
                "src": str(WORKER / "templates" / "islandora-job-worker.init.j2"),
                "dest": str(tmp / "init.sh"),
                "mode": "0700",
            },
        }
    )
    book = tmp / "render.yml"
    play = {
        "name": "Render the worker's configuration",
        "hosts": "localhost",
        "gather_facts": False,
        "vars_files": [str(WORKER / "defaults" / "main.yml"), str(WORKER / "vars" / "main.yml")],
        "vars": {"__islandora_job_worker_default_servers": ["127.0.0.1:4730"]},
        "tasks": tasks,
    }
    book.write_text(json.dumps([play]))
    result = playbook(book, timeout=180)
    assert result.returncode == 0, result.stdout[-4000:]
    return {name: tmp / f"{name}.toml" for name in CASES} | {"env": tmp / "worker.env", "init": tmp / "init.sh"}


def test_defaults_load_with_the_workers_defaults(rendered: dict[str, Path]) -> None:
    loaded = worker_config.load(str(rendered["defaults"]), environ={})
    assert loaded.send_exceptions is False
    assert loaded.multisite_prefixes == ()
    assert loaded.pool.dedicated == {}
    assert loaded.command_jobs == ()
    assert "drupal" not in tomllib.loads(rendered["defaults"].read_text())


def test_every_command_job_key_and_the_migration_keys_reach_the_worker(rendered: dict[str, Path]) -> None:
    loaded = worker_config.load(str(rendered["migration"]), environ={})
    assert loaded.send_exceptions is True
    assert loaded.multisite_prefixes == ("site2", "site3")
    assert dict(loaded.pool.dedicated) == {"islandora_derivatives": 2, "islandora_job.ping": 1}
    bridge, discovered, plain, runner = loaded.command_jobs
    assert bridge.names == ("islandora_derivatives", "ijh")
    assert bridge.argv[-1] == "islandora-job-router" and "--uri={site}" in bridge.argv
    assert bridge.allowed_sites == ("http://localhost", TRICKY)  # quotes, backslash, non-ASCII, DEL: byte for byte
    assert bridge.allowed_uids == (1, 0)
    assert bridge.timeout == 2.5 and bridge.max_output_bytes == 4096
    # No name: the functions come from discover_argv when the worker starts.
    assert discovered.names == ()
    assert discovered.discover_argv == ("drush", "--root=/var/www/drupal7", "islandora-job-list-functions")
    assert plain.names == ("plain", "plain2") and plain.timeout == 30
    # Keys the role has no template line for (the persistent runner's): rendered as given.
    assert (runner.persistent, runner.max_jobs, runner.max_rss_mb) == (True, 50, 256)


def test_drupal_section(rendered: dict[str, Path]) -> None:
    drupal = tomllib.loads(rendered["drupal"].read_text())["drupal"]
    assert drupal == {
        "database": DATABASE,
        "prefix": "dr_",
        "table": "islandora_job_job_status",
        "sites": {"http://site2.example.org": SITE_DB},
    }
    if _drupal_supported():
        worker_config.load(str(rendered["drupal"]), environ={})


def test_environment_file_reads_back_exactly_in_sh(rendered: dict[str, Path]) -> None:
    """The init script sources the file with sh (set -a); systemd's EnvironmentFile= reads double-quoted values with
    the same four escapes (molecule's drupal scenario reads the running worker's environment)."""
    script = f'set -a; . "{rendered["env"]}"; set +a; printf "%s\\0%s" "$OMP_THREAD_LIMIT" "$TRICKY"'
    result = run(["sh", "-c", script], env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout
    assert result.stdout.split("\0") == ["1", TRICKY.replace("\t", "")]


def test_init_script_sources_the_environment_file(rendered: dict[str, Path]) -> None:
    """Hosts without systemd: the init script names the file and sources it before it starts the worker."""
    text = rendered["init"].read_text()
    assert "ENVFILE=/etc/islandora-job/worker.env" in text.splitlines()
    start = text.index('        if [ -r "$ENVFILE" ]; then')
    assert start < text.index("start-stop-daemon --start"), "sourced after the worker started"
    result = run(["sh", "-n", str(rendered["init"])])
    assert result.returncode == 0, result.stdout


def _configure_play(tmp: Path, variables: dict[str, Any]) -> Path:
    """A play running the role's configure.yml on this machine with every path under tmp, the service stopped (no
    handler touches a real service) and this tree's venv as the release that checks the file."""
    group = grp.getgrgid(os.getgid()).gr_name
    (tmp / "prefix" / "releases").mkdir(parents=True, exist_ok=True)
    (tmp / "etc").mkdir(exist_ok=True)
    play = {
        "name": "Configure the worker",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {
            "ansible_python_interpreter": "/usr/bin/python3",
            "islandora_job_worker_group": group,
            "islandora_job_worker_config_dir": str(tmp / "etc"),
            "islandora_job_worker_prefix": str(tmp / "prefix"),
            "islandora_job_worker_service_state": "stopped",
            "__islandora_job_worker_default_servers": ["127.0.0.1:4730"],
            **variables,
        },
        "tasks": [
            {
                "name": "The role's configure tasks",
                "ansible.builtin.include_role": {"name": "islandora_job_worker", "tasks_from": "configure"},
            }
        ],
    }
    book = tmp / f"configure-{len(list(tmp.glob('configure-*.yml')))}.yml"
    book.write_text(json.dumps([play]))
    return book


def _extra(tmp: Path) -> list[str]:
    # Role vars (vars/main.yml) yield only to extra vars: the release and root's PATH link, pointed into tmp.
    extra = {"__islandora_job_worker_venv": str(VENV), "__islandora_job_worker_command_link": str(tmp / "ij-link")}
    return ["-e", json.dumps(extra)]


def test_role_writes_the_password_only_to_a_0640_file_and_never_prints_it(tmp_path: Path) -> None:
    env = ansible_env(ANSIBLE_DISPLAY_SKIPPED_HOSTS="1")
    drupal = {
        "islandora_job_worker_drupal_database": DATABASE,
        "islandora_job_worker_drupal_sites": {"http://site2.example.org": SITE_DB},
        "islandora_job_worker_environment": {"OMP_THREAD_LIMIT": "1"},
    }
    # The [drupal] section needs the worker's [drupal] support (issue 11); without it check-config refuses the key,
    # which is the refusal case below, so the first run here configures without it when the worker lacks it.
    supported = _drupal_supported()
    first_vars = drupal if supported else {"islandora_job_worker_environment": {"OMP_THREAD_LIMIT": "1"}}
    first = playbook(_configure_play(tmp_path, first_vars), "--diff", "-v", *_extra(tmp_path), env=env, timeout=300)
    assert first.returncode == 0, first.stdout[-5000:]
    toml_file, env_file = tmp_path / "etc" / "worker.toml", tmp_path / "etc" / "worker.env"
    for path in (toml_file, env_file):
        mode = path.stat().st_mode
        assert stat.S_IMODE(mode) == 0o640, f"{path}: {oct(mode)}"
        assert path.stat().st_uid == 0 or os.geteuid() != 0
    assert 'OMP_THREAD_LIMIT="1"' in env_file.read_text()

    # A changed password in check mode with --diff: reported as a change, the password (old or new) never shown.
    changed = dict(drupal, islandora_job_worker_drupal_database=DATABASE.replace("S3cret-Dr", "S3cret-New"))
    check = playbook(_configure_play(tmp_path, changed), "--check", "--diff", "-vv", *_extra(tmp_path), env=env)
    counters = recap(check.stdout).get("localhost")
    assert counters is not None and counters["failed"] == 0, check.stdout[-5000:]
    assert "S3cret" not in check.stdout, "a password in the --check --diff output"
    if supported:
        assert counters["changed"] >= 1, check.stdout[-5000:]

    # Refused by check-config (an unknown placeholder): the reason is shown, the passwords are not.
    before = toml_file.read_bytes()
    bad = dict(drupal, islandora_job_worker_command_jobs=[{"name": "x", "argv": ["/bin/cat", "{nope}"]}])
    refused = playbook(_configure_play(tmp_path, bad), "--diff", "-vv", *_extra(tmp_path), env=env)
    assert refused.returncode != 0, refused.stdout[-5000:]
    assert "worker.toml was refused" in refused.stdout and "{nope}" in refused.stdout, refused.stdout[-5000:]
    assert "S3cret" not in refused.stdout, "a password in the output of a refused configuration"
    assert toml_file.read_bytes() == before, "a refused configuration replaced the file"


SPEC_CASES: dict[str, tuple[dict[str, Any], bool]] = {
    # A command job needs name, names or discover_argv; every key the worker accepts is accepted.
    "names-only": ({"islandora_job_worker_command_jobs": [{"names": ["a", "b"], "argv": ["/bin/cat"]}]}, True),
    "discover-only": ({"islandora_job_worker_command_jobs": [{"discover_argv": ["drush"], "argv": ["drush"]}]}, True),
    "none-of-the-three": ({"islandora_job_worker_command_jobs": [{"argv": ["/bin/cat"], "timeout": 5}]}, False),
    "float-timeout": ({"islandora_job_worker_command_jobs": [{"name": "a", "argv": ["x"], "timeout": 0.5}]}, True),
    "migration": (
        {
            "islandora_job_worker_send_exceptions": True,
            "islandora_job_worker_multisite_prefixes": ["site2"],
            "islandora_job_worker_pool_dedicated": {"islandora_derivatives": 2},
            "islandora_job_worker_environment": {"OMP_THREAD_LIMIT": "1"},
            "islandora_job_worker_drupal_database": DATABASE,
            "islandora_job_worker_drupal_sites": {"http://site2.example.org": SITE_DB},
        },
        True,
    ),
    "runner-and-status-table": (
        {
            "islandora_job_worker_command_jobs": [
                {"names": ["a"], "argv": ["php"], "persistent": True, "max_jobs": 5, "max_rss_mb": 9},
                {"name": "b", "argv": ["x"], "status_table": True},
            ]
        },
        True,
    ),
    "prefixes-not-a-list": ({"islandora_job_worker_multisite_prefixes": {"a": 1}}, False),
}


def test_argument_specs_accept_the_workers_forms_and_hide_the_database(tmp_path: Path) -> None:
    """The role's argument specs (what Ansible checks before the role runs), through validate_argument_spec: name is
    optional beside names or discover_argv; the database URLs are no_log, so a refusal does not print them."""
    specs = str(WORKER / "meta" / "argument_specs.yml")
    tasks: list[dict[str, Any]] = []
    for name, (variables, _) in SPEC_CASES.items():
        tasks.append(
            {
                "name": f"Validate {name}",
                "ansible.builtin.validate_argument_spec": {
                    "argument_spec": f"{{{{ (lookup('ansible.builtin.file', '{specs}') | from_yaml)"
                    ".argument_specs.main.options }}",
                    "provided_arguments": variables | {"islandora_job_worker_drupal_database": DATABASE},
                },
                "register": f"case_{name.replace('-', '_')}",
                "ignore_errors": True,
            }
        )
    outcomes = {name: f"{{{{ case_{name.replace('-', '_')} is failed }}}}" for name in SPEC_CASES}
    tasks.append(
        {
            "name": "Write the outcomes",
            "ansible.builtin.copy": {
                "content": "{{ outcomes | to_json }}",
                "dest": str(tmp_path / "out.json"),
                "mode": "0600",
            },
            "vars": {"outcomes": outcomes},
        }
    )
    book = tmp_path / "specs.yml"
    book.write_text(json.dumps([{"name": "Specs", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    result = playbook(book, "-e", "ansible_python_interpreter=/usr/bin/python3", timeout=180)
    assert result.returncode == 0, result.stdout[-4000:]
    failed = json.loads((tmp_path / "out.json").read_text())
    assert failed == {name: not ok for name, (_, ok) in SPEC_CASES.items()}, result.stdout[-4000:]
    assert "name, names, discover_argv" in result.stdout, result.stdout[-4000:]
    assert "S3cret" not in result.stdout, "a database password in the output"
