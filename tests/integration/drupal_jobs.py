"""Jobs for the Drupal status-table tests, named as a Drupal module's jobs are (the payload's ``func`` is the job's
name and its Gearman function). Each appends its marker to a file, so a test counts how often a job really ran."""

from __future__ import annotations

import time

from islandora_job import job


def _ran(path: str, marker: str) -> None:
    with open(path, "a") as file:
        file.write(marker + "\n")


@job("ij_test_record")
def record(path: str, marker: str) -> str:
    _ran(path, marker)
    return f"ran {marker}"


@job("ij_test_fail")
def fail(path: str, marker: str) -> None:
    _ran(path, marker)
    raise RuntimeError(f"failing on purpose: {marker}")


@job("ij_test_hang", timeout=1)
def hang(path: str, marker: str) -> None:
    _ran(path, marker)
    time.sleep(60)  # the worker's watchdog answers it at 1 s and replaces the process
