"""Worker configuration: file, environment, flags; every error names its source and key."""

from __future__ import annotations

from dataclasses import Field, fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from islandora_job.address import ServerAddress
from islandora_job.cli.main import main
from islandora_job.errors import ConfigError
from islandora_job.worker.config import (
    DEFAULT_PATH,
    Overrides,
    WorkerConfig,
    build,
    check_user,
    env_name,
    from_json,
    load,
    with_discovered,
)

FULL = """
servers = ["127.0.0.1:4730"]
concurrency = 2
jobs_modules = ["islandora_job_demo.jobs"]
allow_root = false
[pool]
max_jobs = 10000
max_lifetime = 86400
lifetime_splay = 600
max_rss_mb = 512
shutdown_timeout = 30
default_timeout = 600
[logging]
level = "INFO"
json = false
[metrics]
listen = ""
[dead_letters]
path = "/var/lib/islandora-job/dead-letters.sqlite3"
[[command_jobs]]
name = "islandora_derivatives"
argv = ["drush", "--root=/var/www/drupal7", "--user={uid}", "--uri={site}", "islandora-job-router"]
allowed_sites = ["http://localhost"]
allowed_uids = [1]
timeout = 600
max_output_bytes = 1048576
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "worker.toml"
    path.write_text(text)
    return str(path)


def test_the_documented_example_loads(tmp_path: Path) -> None:
    config = load(_write(tmp_path, FULL), environ={})
    assert config.servers == (ServerAddress("127.0.0.1", 4730),)
    assert config.concurrency == 2
    assert config.pool.max_rss_mb == 512
    assert config.send_exceptions is False
    [command] = config.command_jobs
    assert command.names == ("islandora_derivatives",)
    assert command.allowed_uids == (1,)


def test_defaults_without_a_file() -> None:
    config = load(None, environ={"ISLANDORA_JOB_CONFIG_UNUSED": ""}) if not Path(DEFAULT_PATH).exists() else None
    config = config or build({}, "(defaults)")
    assert config.concurrency >= 1
    assert config.pool.default_timeout == 600
    assert config.dead_letters.path.endswith("dead-letters.sqlite3")


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.toml: file not found"):
        load(str(tmp_path / "absent.toml"), environ={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("concurrency = 0", "FILE: concurrency: must be at least 1, not 0"),
        ("concurrency = 'two'", "FILE: concurrency: must be an integer"),
        ("servers = []", "FILE: servers: must not be empty"),
        ("servers = ['host:99999']", "FILE: servers: server address 'host:99999'"),
        ("[pool]\nmax_job = 5", "FILE: pool.max_job: unknown key"),
        ("[pool]\nshutdown_timeout = -1", "FILE: pool.shutdown_timeout: must be at least 0"),
        ("[pool.dedicated]\nx = 0", "FILE: pool.dedicated.x: must be at least 1"),
        ("[logging]\nlevel = 'LOUD'", "FILE: logging.level: must be one of"),
        ("[metrics]\nlisten = 'nope:port'", "FILE: metrics.listen: must be HOST:PORT"),
        ("bogus = 1", "FILE: bogus: unknown key"),
        ("[[command_jobs]]\nname = 'x'\nargv = ['drush', '{root}']", "FILE: command_jobs[0].argv: unknown placeholder"),
        ("[[command_jobs]]\nname = 'x'\nargv = ['drush', '--uri={site}']", "command_jobs[0].allowed_sites: argv uses"),
        ("[[command_jobs]]\nname = 'x'\nargv = ['d', '{uid}']\nallowed_uids = ['1']", "allowed_uids: must be a list"),
        ("[[command_jobs]]\nargv = ['drush']", "FILE: command_jobs[0].name: give name, names or discover_argv"),
        ("[[command_jobs]]\nname = 'x'\nargv = []", "FILE: command_jobs[0].argv: must not be empty"),
        ("concurrency = [", "FILE: not valid TOML"),
        ("[pool]\nmax_lifetime = inf", "FILE: pool.max_lifetime: must be a finite number, not inf"),
        ("[pool]\ngrab_timeout = -nan", "FILE: pool.grab_timeout: must be a finite number, not nan"),
        (
            "[[command_jobs]]\nname = 'x'\nargv = ['/bin/echo', \"a\\u0000b\"]",
            "FILE: command_jobs[0].argv: must not contain a NUL",
        ),
        ('[[command_jobs]]\nname = "x\\u0000y"\nargv = ["echo"]', "FILE: command_jobs[0].name: must not contain a NUL"),
        ('[dead_letters]\npath = "/tmp/a\\u0000b"', "FILE: dead_letters.path: must not contain a NUL"),
    ],
)
def test_errors_read_file_key_reason(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load(path, environ={})
    assert str(error.value).startswith(message.replace("FILE", path)) or message.replace("FILE", path) in str(
        error.value
    )


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    path = _write(tmp_path, 'servers = ["a:1"]\nconcurrency = 2\n[pool]\nmax_jobs = 5\n[logging]\njson = false\n')
    env = {
        "ISLANDORA_JOB_SERVERS": "b:2,c:3",
        "ISLANDORA_JOB_CONCURRENCY": "3",
        "ISLANDORA_JOB_POOL_MAX_JOBS": "7",
        "ISLANDORA_JOB_LOGGING_JSON": "true",
    }
    config = load(path, environ=env)
    assert [str(s) for s in config.servers] == ["b:2", "c:3"]
    assert (config.concurrency, config.pool.max_jobs, config.logging.json) == (3, 7, True)
    config = load(path, Overrides(servers=["d:4"], concurrency=9, jobs_modules=["m"]), environ=env)
    assert [str(s) for s in config.servers] == ["d:4"]
    assert config.concurrency == 9
    assert config.jobs_modules == ("m",)


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"^ISLANDORA_JOB_POOL_MAX_JOBS: must be an integer"):
        load(path, environ={"ISLANDORA_JOB_POOL_MAX_JOBS": "lots"})
    with pytest.raises(ConfigError, match=r"^--concurrency: must be at least 1"):
        load(path, Overrides(concurrency=0), environ={})


def test_root_is_refused_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="allow_root: refusing to run as root"):
        check_user(build({}, "f"), euid=lambda: 0)
    check_user(build({"allow_root": True}, "f"), euid=lambda: 0)
    check_user(build({}, "f"), euid=lambda: 1000)


def test_children_get_the_same_config_and_discovered_names() -> None:
    config = build({"command_jobs": [{"discover_argv": ["drush", "list"], "argv": ["drush"]}]}, "f")
    config = with_discovered(config, {0: ["a", "b"]})
    assert config.command_jobs[0].names == ("a", "b")
    assert from_json(config.to_json()) == config


def test_check_config_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, "jobs_modules = ['islandora_job_demo.jobs']\n")
    assert main(["check-config", good]) == 0
    assert capsys.readouterr().out.startswith(f"{good}: OK (")
    bad = tmp_path / "bad.toml"
    bad.write_text("[pool]\nmax_jobs = -3\n")
    assert main(["check-config", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"{bad}: pool.max_jobs: must be at least 0, not -3"
    missing_module = tmp_path / "mod.toml"
    missing_module.write_text("jobs_modules = ['no_such_jobs_module']\n")
    assert main(["check-config", str(missing_module)]) == 2
    assert "cannot import 'no_such_jobs_module'" in capsys.readouterr().err


def test_worker_refuses_root_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("ISLANDORA_JOB_ALLOW_ROOT", raising=False)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert main(["worker", "--config", _write(tmp_path, "")]) == 2
    assert "refusing to run as root" in capsys.readouterr().err


def test_list_jobs_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    config = _write(tmp_path, "[[command_jobs]]\nname = 'islandora_derivatives'\nargv = ['drush', 'router']\n")
    assert main(["list-jobs", "--config", config, "--jobs-module", "islandora_job_demo.jobs", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["islandora_job.ping"]["functions"] == ["islandora_job.ping"]
    assert rows["islandora_job_demo.raw_upper"]["payload"] == "raw"
    assert rows["islandora_derivatives"]["source"] == "command_jobs: drush router"
    assert main(["list-jobs", "--config", config]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["JOB", "ALIAS", "FUNCTIONS", "SOURCE"]


def test_every_error_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    # issue 10: check-config stopped at the first error
    path = _write(
        tmp_path,
        "concurrency = 0\nbogus = 1\nother = 2\n[pool]\nmax_jobs = -3\n[logging]\nlevel = 'LOUD'\n"
        "[[command_jobs]]\nname = 'x'\nargv = ['drush', '{uid}']\nallowed_uids = [1, -5]\n",
    )
    with pytest.raises(ConfigError) as error:
        load(path, environ={})
    lines = str(error.value).splitlines()
    assert lines == [
        f"{path}: concurrency: must be at least 1, not 0",
        f"{path}: pool.max_jobs: must be at least 0, not -3",
        f"{path}: logging.level: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        f"{path}: command_jobs[0].allowed_uids: user ids are not negative: [-5]",
        f"{path}: command_jobs[0].allowed_uids: argv uses {{uid}}, so allowed_uids must list the user ids",
        f"{path}: bogus: unknown key",
        f"{path}: other: unknown key",
    ]


def _program(tmp_path: Path, name: str, mode: int) -> Path:
    program = tmp_path / "bin" / name
    program.parent.mkdir(exist_ok=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(mode)
    return program


def test_check_config_resolves_each_program_on_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _program(tmp_path, "drush", 0o755)
    _program(tmp_path, "notexec", 0o644)
    (tmp_path / "bin" / "adir").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    entries = "".join(
        f"[[command_jobs]]\nname = 'f{index}'\nargv = ['{program}']\n"
        for index, program in enumerate(["drush", "php-nowhere", "notexec", "adir", "/nonexistent/drush"])
    )
    path = _write(tmp_path, "jobs_modules = ['islandora_job_demo.jobs']\n" + entries)
    assert main(["check-config", path]) == 2
    lines = capsys.readouterr().err.splitlines()
    bin_dir = tmp_path / "bin"
    assert lines == [
        f"{path}: command_jobs[1].argv: program 'php-nowhere' not found on PATH ({bin_dir})",
        f"{path}: command_jobs[2].argv: program '{bin_dir}/notexec' is not an executable file",
        f"{path}: command_jobs[3].argv: program '{bin_dir}/adir' is not an executable file",
        f"{path}: command_jobs[4].argv: program '/nonexistent/drush' not found",
    ]
    assert load(path, environ={}).command_jobs[1].argv == ("php-nowhere",)  # the worker itself does not look
    good = tmp_path / "good.toml"
    good.write_text("jobs_modules = ['islandora_job_demo.jobs']\n[[command_jobs]]\nname = 'f'\nargv = ['drush']\n")
    assert main(["check-config", str(good)]) == 0, capsys.readouterr().err


def _other_value(key: str, default: object) -> tuple[str, str]:
    """A valid value of a setting that differs from its default, as TOML and as an environment variable."""
    if key == "logging.level":
        return '"DEBUG"', "DEBUG"
    if key == "metrics.listen":
        return '"127.0.0.1:9109"', "127.0.0.1:9109"
    if key == "drupal.database":
        return '"mysql://drupal:pw@db.example:3307/site"', "mysql://drupal:pw@db.example:3307/site"
    if key in ("drupal.prefix", "drupal.table"):
        return '"elsewhere_"', "elsewhere_"
    if isinstance(default, bool):
        return str(not default).lower(), str(not default).lower()
    if isinstance(default, int | float):
        return "7", "7"
    if isinstance(default, str):
        return '"/tmp/elsewhere"', "/tmp/elsewhere"
    return '["m.one", "m.two"]', "m.one,m.two"


def _settable() -> list[tuple[str, str, object]]:
    """(file key, field path, default) of every field of every settings class but the few read by hand."""
    by_hand = {"source", "servers", "raw", "command_jobs", "dedicated", "sites"}  # each has its own tests above
    rows: list[tuple[str, str, object]] = []
    for item in fields(WorkerConfig):
        if item.name in by_hand:
            continue
        if is_dataclass(item.default_factory):
            for inner in fields(item.default_factory):
                if inner.name not in by_hand:
                    key = _file_key(inner)
                    rows.append((f"{item.name}.{key}", f"{item.name}.{inner.name}", inner.default))
        else:
            rows.append((_file_key(item), item.name, item.default))
    return rows


def _file_key(item: Field[Any]) -> str:
    spec = item.metadata.get("setting")
    assert spec is not None, f"{item.name}: declare it with config.setting(...) so that the file and env can set it"
    return str(spec.key or item.name)


@pytest.mark.parametrize(("key", "attribute", "default"), _settable(), ids=[row[0] for row in _settable()])
def test_every_setting_is_settable_from_the_file_and_from_the_environment(
    tmp_path: Path, key: str, attribute: str, default: object
) -> None:
    toml, env = _other_value(key, default)
    section, _, leaf = key.rpartition(".")
    path = _write(tmp_path, f"[{section}]\n{leaf} = {toml}\n" if section else f"{leaf} = {toml}\n")
    from_file = load(path, environ={})
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    from_env = load(str(empty), environ={env_name(key): env})
    read = [from_file, from_env]
    for part in attribute.split("."):
        read = [getattr(value, part) for value in read]
    assert read[0] != default
    assert read[0] == read[1]


def test_a_server_name_that_cannot_be_a_host_is_refused_at_check_time_only(tmp_path: Path) -> None:
    """As a command's program: check-config refuses it; the worker's own load takes it, and its loop treats that
    server as down while it serves the others (tests/integration/test_server_names.py)."""
    path = _write(tmp_path, f"servers = ['{'h' * 64}:4730', 'a..b', '127.0.0.1:4730']\n")
    with pytest.raises(ConfigError) as error:
        load(path, environ={}, check_commands=True)
    assert str(error.value).splitlines() == [
        f"{path}: servers: server address '{'h' * 64}:4730': host has an empty label or one longer than 63 characters",
        f"{path}: servers: server address 'a..b': host has an empty label or one longer than 63 characters",
    ]
    assert [str(server) for server in load(path, environ={}).servers] == [
        f"{'h' * 64}:4730",
        "a..b:4730",
        "127.0.0.1:4730",
    ]


def test_a_file_that_is_not_utf8_is_one_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "worker.toml"
    path.write_bytes(b"servers = ['127.0.0.1']\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=rf"^{path}: not UTF-8 text \(line 2: byte 0xe9\)$"):
        load(str(path), environ={})
