"""The exporter's pure parts (joining gearmand's answers, the exposition, the page, the settings), the worker's
dead-letter gauge and the JSON log fields, without a server."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from islandora_job.admin import FunctionStatus, PriorityStatus
from islandora_job.errors import ConfigError
from islandora_job.exporter import exposition, page
from islandora_job.exporter.scrape import Scraper, ServerSnapshot, Snapshot, rows
from islandora_job.exporter.settings import resolve
from islandora_job.logsetup import JsonFormatter, fields
from islandora_job.worker.deadletters import DeadLetterStoreError
from islandora_job.worker.metrics import PoolMetrics


def _snapshot(*servers: ServerSnapshot, letters: dict[str, int] | None = None) -> Snapshot:
    return Snapshot(taken_at=0.0, seconds=0.01, servers=servers, dead_letters=letters, dead_letters_path="/x")


def test_rows_join_priorities_and_keep_the_unserved_when_over_the_limit() -> None:
    statuses = [FunctionStatus(f"busy{i}", 100 + i, 1, 2) for i in range(5)] + [FunctionStatus("lonely", 1, 0, 0)]
    priorities = [PriorityStatus("lonely", 1, 0, 0, 0)]
    kept, dropped = rows(statuses, priorities, limit=3)
    assert dropped == 3
    names = [row.function for row in kept]
    assert "lonely" in names and "busy4" in names and "busy3" in names
    lonely = next(row for row in kept if row.function == "lonely")
    assert lonely.unserved and (lonely.high, lonely.normal, lonely.low) == (1, 0, 0)
    assert next(row for row in kept if row.function == "busy4").high is None  # no prioritystatus line: no figures


def test_the_exposition_escapes_label_values_and_serves_a_down_server() -> None:
    hostile = 'a"b\\c\nd'
    up = ServerSnapshot("g1:4730", True, 0.002, tuple(rows([FunctionStatus(hostile, 2, 0, 0)], [], 10)[0]))
    down = ServerSnapshot("g2:4730", False, 1.0, error="refused")
    text = exposition.render(_snapshot(up, down, letters={"f": 3}))
    assert 'islandora_job_gearmand_jobs_queued{server="g1:4730",function="a\\"b\\\\c\\nd"} 2\n' in text
    assert 'islandora_job_gearmand_up{server="g2:4730"} 0\n' in text
    assert 'islandora_job_exporter_dead_letters{function="f"} 3\n' in text
    assert text.count("# TYPE islandora_job_gearmand_up gauge") == 1
    assert all(line.startswith("#") or "\n" not in line for line in text.splitlines())


def test_the_page_escapes_names_and_says_when_all_is_well() -> None:
    hostile = '<img src=x onerror="alert(1)">'
    up = ServerSnapshot("g1:4730", True, 0.002, tuple(rows([FunctionStatus(hostile, 2, 0, 0)], [], 10)[0]))
    html = page.render(_snapshot(up), refresh=7)
    assert "<img" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert '<meta http-equiv="refresh" content="7">' in html and "NO WORKER" in html
    calm = ServerSnapshot("g1:4730", True, 0.002, tuple(rows([FunctionStatus("f", 0, 0, 1)], [], 10)[0]))
    html = page.render(_snapshot(calm), refresh=7)
    assert "No problem" in html and "NO WORKER" not in html


def _resolve(path: str | None = None, **flags: object) -> object:
    given = {"servers": [], "listen": None, "timeout": None, "refresh": None, "max_functions": None}
    given.update(flags)
    return resolve(path=path, worker_config=None, **given)  # type: ignore[arg-type]


def test_settings_flags_win_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "e.toml"
    config.write_text('[exporter]\nservers = ["a:1", "b"]\ntimeout = 2\nlisten = "[::1]:9000"\n')
    settings = _resolve(str(config), timeout=0.5)
    assert [str(s) for s in settings.servers] == ["a:1", "b:4730"]  # type: ignore[attr-defined]
    assert settings.timeout == 0.5 and settings.listen.host == "::1"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[exporter]\ntimeout = 0\n", "timeout: 0 must be above 0"),
        ("[exporter]\ntimeout = nan\n", "timeout: nan must be above 0"),
        ("[exporter]\nrefresh = 1.5\n", "refresh: 1.5 is not a whole number"),
        ("[exporter]\nmax_functions = true\n", "max_functions: True is not a whole number"),
        ("exporter = 3\n", "[exporter] must be a table"),
        ('[exporter]\nservers = "a"\n', "servers: must be a list"),
    ],
)
def test_settings_errors_name_the_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "e.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=None) as caught:
        _resolve(str(config))
    assert str(config) in str(caught.value) and expected in str(caught.value)


class _Store:
    def __init__(self, path: str) -> None:
        self.path = path
        self.reads = 0

    def counts(self) -> Mapping[str, int]:
        self.reads += 1
        return {"f": self.reads}


def test_the_dead_letter_gauge_reads_the_store_again_only_when_it_changed(tmp_path: Path) -> None:
    store = _Store(str(tmp_path / "dead.sqlite3"))
    metrics = PoolMetrics(dead_letters=store)
    assert metrics.dead_letters() == {"f": 1}
    assert metrics.dead_letters() == {"f": 1} and store.reads == 1
    Path(store.path).write_bytes(b"changed")
    assert metrics.dead_letters() == {"f": 2}
    os.utime(store.path, ns=(1, 1))
    assert metrics.dead_letters() == {"f": 3}
    families = {family.name: family for family in metrics.collect()}
    assert [s.labels for s in families["islandora_job_dead_letters"].samples] == [{"function": "f"}]


def test_json_log_lines_carry_fields_as_keys() -> None:
    record = logging.LogRecord("w", logging.INFO, __file__, 1, "job %s handle=%s", ("t.x", "H:1"), None)
    for key, value in fields("job complete", job="t.x", handle="H:1", duration=0.5, level="forged").items():
        setattr(record, key, value)
    document = json.loads(JsonFormatter().format(record))
    assert document["message"] == "job complete" and document["job"] == "t.x" and document["duration"] == 0.5
    assert document["level"] == "INFO"  # a field cannot replace the document's own keys


def test_an_unreadable_dead_letter_store_is_a_problem_on_the_page_not_an_error() -> None:
    def unreadable() -> dict[str, int]:
        raise DeadLetterStoreError("/x: the dead-letter store is corrupt (file is not a database)")

    snapshot = Scraper((), dead_letters=unreadable, dead_letters_path="/x").snapshot()
    assert snapshot.dead_letters is None
    assert "Dead letters cannot be read: /x: the dead-letter store is corrupt" in page.render(snapshot, refresh=5)
