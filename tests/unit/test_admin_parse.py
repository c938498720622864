"""Parsing gearmand's admin answers (the texts are what gearmand 1.1.20 sends)."""

from __future__ import annotations

import pytest

from islandora_job.admin import (
    MAX_RECORD_LINES,
    AdminError,
    FunctionStatus,
    PriorityStatus,
    parse_ok,
    parse_priority_status,
    parse_show_jobs,
    parse_status,
    parse_workers,
)
from islandora_job.errors import ProtocolError


def test_status() -> None:
    [bar, foo] = parse_status(["bar\t1\t0\t0", "foo\t5\t2\t3"])
    assert (foo.function, foo.total, foo.running, foo.workers, foo.waiting) == ("foo", 5, 2, 3, 3)
    assert bar.waiting == 1


def test_priority_status() -> None:
    [row] = parse_priority_status(["foo\t1\t2\t3\t4"])
    assert (row.high, row.normal, row.low, row.workers) == (1, 2, 3, 4)


def test_workers_with_and_without_functions() -> None:
    [worker, admin] = parse_workers(["37 127.0.0.1 host:12 : baz qux", "39 ::1 - :"])
    assert worker.client_id == "host:12" and worker.functions == ("baz", "qux")
    assert admin.functions == () and admin.ip == "::1"


def test_show_jobs() -> None:
    [job] = parse_show_jobs(["H:vm:1\t2\t0\t1"])
    assert (job.handle, job.retries, job.ignore_job, job.queued) == ("H:vm:1", 2, False, True)


def test_ok_and_err() -> None:
    assert parse_ok("OK 1.1.20+ds") == "1.1.20+ds"
    assert parse_ok("OK\r") == ""
    with pytest.raises(AdminError) as info:
        parse_ok("ERR UNKNOWN_JOB")
    assert info.value.code == "UNKNOWN_JOB"
    with pytest.raises(AdminError, match="Unknown server command"):
        parse_ok("ERR UNKNOWN_COMMAND Unknown+server+command")


@pytest.mark.parametrize(
    "parser, line",
    [(parse_status, "a\t1\t2"), (parse_status, "a\tx\t1\t1"), (parse_workers, "garbage"), (parse_show_jobs, "h\t1")],
)
def test_malformed_lines_are_protocol_errors(parser: object, line: str) -> None:
    with pytest.raises(ProtocolError):
        parser([line])  # type: ignore[operator]
    with pytest.raises(ProtocolError):
        parse_ok("HELLO")


def test_a_tab_in_a_function_name_stays_in_the_name() -> None:
    """Any client may name a function ``a<TAB>b``: gearmand's numbers are the last fields, so split from the right."""
    assert parse_status(["a\tb\t3\t1\t0"]) == [FunctionStatus("a\tb", 3, 1, 0)]
    assert parse_priority_status(["a\tb\t1\t2\t3\t0"]) == [PriorityStatus("a\tb", 1, 2, 3, 0)]


def test_a_newline_in_a_name_is_rejoined_or_its_record_dropped() -> None:
    """gearmand prints a name with a newline raw: the two halves are rejoined; what cannot be is dropped alone."""
    assert parse_status(["plain\t5\t0\t0", "ij", "forged\t1\t0\t0", "z\t2\t0\t1"]) == [
        FunctionStatus("plain", 5, 0, 0),
        FunctionStatus("ij\nforged", 1, 0, 0),
        FunctionStatus("z", 2, 0, 1),
    ]
    workers = parse_workers(["7 127.0.0.1 evil", "id : f g", "8 127.0.0.1 - : a", "b c", "9 ::1 - :"])
    assert [(w.fd, w.client_id, w.functions) for w in workers] == [
        (7, "evil\nid", ("f", "g")),
        (8, "-", ("a",)),
        (9, "-", ()),
    ]


def test_unparseable_fragments_cost_bounded_work() -> None:
    """A server sending endless fragments cannot make the rejoining quadratic: fragments beyond a few are dropped."""
    lines = ["x" * 100] * 50_000 + ["a\t1\t0\t0"]
    [row] = parse_status(lines)
    assert (row.total, row.function.count("\n")) == (1, MAX_RECORD_LINES)
