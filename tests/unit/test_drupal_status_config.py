"""The worker's ``[drupal]`` section: the site's database(s) for the module's status table. Bad values are errors
naming the key, and a password is never shown: not in an error, not in ``check-config``'s output."""

from __future__ import annotations

from pathlib import Path

import pytest

from islandora_job.cli.main import main
from islandora_job.errors import ConfigError
from islandora_job.worker.config import load
from islandora_job.worker.drupal_status import Database, StatusTable, from_config, redact

SECRET = "pa:ss@w/rd%3F"  # with the characters a URL parser trips on


def _load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> object:
    path = tmp_path / "worker.toml"
    path.write_text(text)
    return load(str(path), environ=environ or {})


def test_defaults_and_a_full_section(tmp_path: Path) -> None:
    config = _load(tmp_path, "")
    assert config.drupal.database == "" and config.drupal.table == "islandora_job_job_status"  # type: ignore[attr-defined]
    assert from_config(config.drupal) is None  # type: ignore[attr-defined]
    text = (
        '[drupal]\ndatabase = "mysql://drupal:pw@db.example/site"\nprefix = "d7_"\ntimeout = 0.5\n'
        '[drupal.sites]\n"https://b.example" = "postgresql://b:pw@pg.example:5433/b"\n'
        '[[command_jobs]]\nname = "f"\nargv = ["drush"]\nstatus_table = true\n'
    )
    config = _load(tmp_path, text)
    drupal = config.drupal  # type: ignore[attr-defined]
    assert (drupal.prefix, drupal.timeout, dict(drupal.sites)) == (
        "d7_",
        0.5,
        {"https://b.example": "postgresql://b:pw@pg.example:5433/b"},
    )
    assert config.command_jobs[0].status_table is True  # type: ignore[attr-defined]
    assert isinstance(from_config(drupal), StatusTable)
    db = Database.parse(drupal.sites["https://b.example"])
    assert (db.kind, db.host, db.port, db.user, db.password, db.name) == (
        "postgresql",
        "pg.example",
        5433,
        "b",
        "pw",
        "b",
    )
    assert Database.parse(drupal.database).port == 3306


def test_the_environment_overrides_the_database(tmp_path: Path) -> None:
    url = f"pgsql://drupal:{SECRET}@127.0.0.1/d7"
    config = _load(tmp_path, '[drupal]\ndatabase = "mysql://a:b@c/d"\n', {"ISLANDORA_JOB_DRUPAL_DATABASE": url})
    db = Database.parse(config.drupal.database)  # type: ignore[attr-defined]
    assert (db.kind, db.password, db.name) == ("postgresql", "pa:ss@w/rd?", "d7")
    assert SECRET not in repr(db) and "pa:ss" not in str(db)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f'database = "oracle://u:{SECRET}@h/d"', "drupal.database: must be mysql://"),
        (f'database = "mysql://u:{SECRET}@/d"', "drupal.database: must be mysql://"),
        (f'database = "mysql://u:{SECRET}@h"', "no database name"),
        (f'database = "mysql://u:{SECRET}@h:99999/d"', "bad host or port"),
        (f'database = "mysql://u:{SECRET}@h/d?ssl=1"', "no '?' or '#' part"),
        (f'database = "mysql://u:{SECRET}\\u0000@h/d"', "drupal.database: must not contain a NUL"),
        ("database = 5", "drupal.database: must be a string"),
        ('prefix = "x; DROP TABLE users; --"', "drupal.prefix: must be letters"),
        ('table = ""', "drupal.table: must not be empty"),
        ("timeout = 0", "drupal.timeout: must be greater than 0"),
        ("tables = 1", "drupal.tables: unknown key"),
        (f'[drupal.sites]\n"http://a" = "ftp://u:{SECRET}@h/d"', "drupal.sites.http://a: must be mysql://"),
    ],
)
def test_bad_values_name_the_key_and_never_the_password(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        _load(tmp_path, f"[drupal]\n{text}\n")
    message = str(error.value)
    assert expected in message
    assert "pa:ss" not in message and "rd%3F" not in message


def test_check_config_reports_a_bad_url_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "worker.toml"
    path.write_text(f'jobs_modules = ["islandora_job_demo.jobs"]\n[drupal]\ndatabase = "mysql://u:{SECRET}@h:0/d"\n')
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert "drupal.database" in captured.err and "u:***@h:0/d" in captured.err
    assert "pa:ss" not in captured.err + captured.out
    path.write_text(f'jobs_modules = ["islandora_job_demo.jobs"]\n[drupal]\ndatabase = "mysql://u:{SECRET}@h/d"\n')
    assert main(["check-config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "pa:ss" not in captured.err + captured.out


def test_redact() -> None:
    assert redact(f"mysql://u:{SECRET}@h/d") == "mysql://u:***@h/d"
    assert redact("mysql://u@h/d") == "mysql://u@h/d"
