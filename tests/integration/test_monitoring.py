"""The monitoring kit against the real thing: promtool over the alert rules and their unit tests, and a real
Prometheus (Debian's, 1 s scrapes) scraping a real exporter and a real worker pool in front of a real gearmand, over
which every panel of the Grafana dashboard is evaluated. The worker's JSON job lines and its dead-letter gauge are
checked on the same pool.

Prometheus, the pool and the exporter are started once for the module (about 10 s of CI).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.exporter import fetch, running_exporter, sample
from tests.support.gearmand import Gearmand, free_port
from tests.support.peers import PlainClient, payload, wait_for
from tests.support.pool import REPO, running_pool
from tests.support.processes import stop_process

RULES = REPO / "monitoring" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "monitoring" / "prometheus" / "alerts.test.yml"
DASHBOARD = REPO / "monitoring" / "grafana" / "islandora-job.json"
LONELY = "ij_mon_lonely"


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 9 rules found" in check.stdout
    tests = subprocess.run(
        ["promtool", "test", "rules", RULE_TESTS.name], capture_output=True, text=True, timeout=60, cwd=RULES.parent
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "SUCCESS" in tests.stdout


@dataclass
class Stack:
    gearmand: Gearmand
    worker_metrics: str
    worker_log: Path
    exporter: str
    prometheus: str

    def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            answer: dict[str, Any] = json.loads(fetch(url))
        except urllib.error.HTTPError as exc:  # a bad query is a 400 with the error in its JSON body
            answer = json.loads(exc.read().decode())
        return answer


def _prometheus(tmp: Path, exporter: str, worker: str) -> Iterator[str]:
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n"
        f"  - job_name: islandora-job-exporter\n    static_configs:\n      - targets: ['{exporter}']\n"
        f"  - job_name: islandora-job-worker\n    static_configs:\n      - targets: ['{worker}']\n"
    )
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), timeout=60, interval=0.2, message="Prometheus ready")
        yield url
    finally:
        stop_process(process, 20)
        log.close()


def _ready(url: str) -> bool:
    try:
        return "Ready" in fetch(url + "/-/ready", timeout=5)
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("monitoring")
    server = Gearmand(tmp)
    server.start()
    metrics_port = free_port()
    extra = f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    try:
        json_logs = {"ISLANDORA_JOB_LOGGING_JSON": "true"}
        with running_pool(tmp, [server.address], concurrency=1, extra=extra, env=json_logs) as pool:
            pool.wait_registered(server.port, "t.pid", count=1)
            with PlainClient(server.address) as client:
                assert client.call("t.pid").ok
                missing = str(tmp / "missing")
                assert not client.submit("t.needs_file", payload("t.needs_file", missing, missing)).ok
                client.background(LONELY, b"nobody takes this")
            worker = f"127.0.0.1:{metrics_port}"
            with running_exporter([f"--server={server.address}", "--timeout=2"], tmp / "exporter.log") as exporter:
                for url in _prometheus(tmp, exporter[7:], worker):
                    yield Stack(server, f"http://{worker}", pool.log, exporter, url)
    finally:
        server.stop()


def test_the_worker_logs_each_job_with_its_facts_as_json_fields(stack: Stack) -> None:
    def job_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in stack.worker_log.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if "outcome" in line]

    lines = wait_for(lambda: len(job_lines()) >= 2 and job_lines(), timeout=10, message="two job lines")
    done = next(line for line in lines if line["job"] == "t.pid")
    failed = next(line for line in lines if line["job"] == "t.needs_file")
    for line in (done, failed):
        assert {"job", "function", "handle", "unique", "outcome", "duration", "attempts"} <= line.keys(), line
        assert line["handle"].startswith("H:") and isinstance(line["duration"], float)
        assert line["handle"] not in line["message"]  # the facts are fields, not text
    assert done["outcome"] == "complete" and done["function"] == "t.pid" and done["level"] == "INFO"
    assert failed["outcome"] == "exception" and failed["attempts"] == 2 and "missing" in failed["reason"]


def test_the_worker_counts_its_dead_letters_per_function(stack: Stack) -> None:
    text = wait_for(
        lambda: (t := fetch(stack.worker_metrics + "/metrics")) and "islandora_job_dead_letters{" in t and t,
        timeout=10,
        message="the dead-letter gauge",
    )
    assert sample(text, "islandora_job_dead_letters", function="t.needs_file") == 1


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_every_dashboard_panel_query_runs_on_a_real_prometheus(stack: Stack) -> None:
    wait_for(
        lambda: len(stack.query("up == 1")["data"]["result"]) == 2, timeout=30, interval=0.5, message="both targets up"
    )
    with PlainClient(stack.gearmand.address) as client:  # counters that move while Prometheus watches: a rate
        for _ in range(3):
            assert client.call("t.pid").ok
            time.sleep(0.5)
    wait_for(
        lambda: stack.query("sum(rate(islandora_job_jobs_total[5m])) > 0")["data"]["result"],
        timeout=30,
        interval=0.5,
        message="a job rate",
    )
    queries = _panel_queries()
    assert len(queries) >= 14
    empty = []
    for title, expr in queries:
        answer = stack.query(expr)
        assert answer["status"] == "success", (title, expr, answer)
        if not answer["data"]["result"]:
            empty.append(title)
    # these must show data from this stack (the others may rightly be empty: no crash, no priority queue...)
    for title in (
        "Servers up",
        "Functions with jobs waiting and no worker",
        "Jobs waiting per function",
        "Worker processes",
        "Job rate by outcome",
        "Job rate by job",  # the worker's job label, as exported_job
        "Job duration (p50, p95)",
        "Dead letters per function",
    ):
        assert title not in empty, (title, empty)
    waiting = stack.query(next(e for t, e in queries if t == "Functions with jobs waiting and no worker"))
    assert [r["metric"]["function"] for r in waiting["data"]["result"]] == [LONELY]


def test_prometheus_loads_the_rules_and_the_no_worker_alert_goes_pending(stack: Stack) -> None:
    rules = json.loads(fetch(stack.prometheus + "/api/v1/rules"))
    names = {rule["name"] for group in rules["data"]["groups"] for rule in group["rules"]}
    assert "IslandoraJobNoWorker" in names and len(names) == 9

    def pending() -> list[str]:
        alerts = json.loads(fetch(stack.prometheus + "/api/v1/alerts"))["data"]["alerts"]
        return [a["labels"].get("function", "") for a in alerts if a["labels"]["alertname"] == "IslandoraJobNoWorker"]

    assert wait_for(pending, timeout=30, interval=0.5, message="IslandoraJobNoWorker pending") == [LONELY]
    assert sample(fetch(stack.exporter + "/metrics"), "islandora_job_gearmand_up", server=stack.gearmand.address) == 1
