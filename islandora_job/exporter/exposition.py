"""A :class:`~islandora_job.exporter.scrape.Snapshot` in the Prometheus text exposition format (version 0.0.4).

Written by hand rather than with prometheus-client: the exporter then needs no optional extra, and the only text
from the network, function names, goes through one escaping function (:func:`label`).
"""

from __future__ import annotations

from collections.abc import Iterable

from islandora_job.exporter.scrape import Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: name → (type, help), in the order they are written.
METRICS = {
    "islandora_job_gearmand_up": ("gauge", "1 when the server answered the admin status within the deadline"),
    "islandora_job_gearmand_jobs_queued": ("gauge", "Jobs queued on the server, running ones included (status)"),
    "islandora_job_gearmand_jobs_running": ("gauge", "Jobs a worker is running (status)"),
    "islandora_job_gearmand_workers": ("gauge", "Workers registered for the function (status)"),
    "islandora_job_gearmand_jobs_queued_by_priority": ("gauge", "Jobs queued by priority (prioritystatus)"),
    "islandora_job_gearmand_functions_dropped": ("gauge", "Functions left out past the exporter's max_functions"),
    "islandora_job_gearmand_scrape_duration_seconds": ("gauge", "Time the server took to answer this scrape"),
    "islandora_job_exporter_scrape_duration_seconds": ("gauge", "Time this scrape of every server took"),
    "islandora_job_exporter_dead_letters": ("gauge", "Dead letters not requeued, per function, in the worker's store"),
}


def label(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{key}="{label(text)}"' for key, text in labels.items())
    number = repr(float(value)) if isinstance(value, float) else str(value)
    return f"{name}{{{inner}}} {number}\n" if inner else f"{name} {number}\n"


def _samples(snapshot: Snapshot) -> Iterable[tuple[str, dict[str, str], float]]:
    for server in snapshot.servers:
        where = {"server": server.server}
        yield "islandora_job_gearmand_up", where, 1 if server.up else 0
        yield "islandora_job_gearmand_scrape_duration_seconds", where, round(server.seconds, 6)
        if not server.up:
            continue
        yield "islandora_job_gearmand_functions_dropped", where, server.dropped
        for row in server.functions:
            labels = {"server": server.server, "function": row.function}
            yield "islandora_job_gearmand_jobs_queued", labels, row.queued
            yield "islandora_job_gearmand_jobs_running", labels, row.running
            yield "islandora_job_gearmand_workers", labels, row.workers
            for priority in ("high", "normal", "low"):
                count = getattr(row, priority)
                if count is not None:
                    yield "islandora_job_gearmand_jobs_queued_by_priority", {**labels, "priority": priority}, count
    yield "islandora_job_exporter_scrape_duration_seconds", {}, round(snapshot.seconds, 6)
    for function, count in sorted((snapshot.dead_letters or {}).items()):
        yield "islandora_job_exporter_dead_letters", {"function": function}, count


def render(snapshot: Snapshot) -> str:
    """The whole exposition: each family's HELP and TYPE once, then its samples (grouped, as the format wants)."""
    families: dict[str, list[str]] = {name: [] for name in METRICS}
    for name, labels, value in _samples(snapshot):
        families[name].append(_sample(name, labels, value))
    parts: list[str] = []
    for name, (kind, text) in METRICS.items():
        if families[name]:
            parts.append(f"# HELP {name} {text}\n# TYPE {name} {kind}\n")
            parts.extend(families[name])
    return "".join(parts)
