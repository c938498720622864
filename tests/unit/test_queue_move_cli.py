"""The parts of ``islandora-job queue move`` that need no server: arguments and the progress bar."""

from __future__ import annotations

import io
from typing import TextIO, cast

import pytest

from islandora_job.cli.main import _Escaping, main
from islandora_job.cli.queue import ProgressReport


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_redraws_in_place_on_a_terminal() -> None:
    out = Terminal()
    report = ProgressReport(out, 300)
    report("f1", 0, 200, False)
    report("f1", 100, 200, False)
    report("f1", 190, 200, True)  # done short of expected: jobs left behind
    report("f2", 100, 100, False)
    report.close()
    text = out.getvalue()
    assert "\rf1: [##########--------------------] 100/300 jobs" in text
    assert "\rf2: [#############################-] 290/300 jobs" in text
    assert text.count("\n") == 2, "one line per function: the rest is redrawn with \\r"


def test_the_bar_keeps_its_carriage_return_under_the_cli_escaping_and_escapes_names() -> None:
    """The CLI wraps stderr in an escaping stream (a function name from the network must not drive the terminal);
    the bar still redraws in place, and only the name is escaped."""
    out = Terminal()
    report = ProgressReport(cast(TextIO, _Escaping(out, "stderr")), 10)
    report("evil\x1b[2J", 5, 10, False)
    text = out.getvalue()
    assert text.startswith("\revil\\u001b[2J: [")
    assert "\x1b" not in text


def test_plain_lines_elsewhere_at_most_every_interval_and_when_a_function_is_done() -> None:
    out = io.StringIO()
    report = ProgressReport(out, 20, interval=3600)
    for moved in range(0, 11):
        report("f", moved, 12, False)
    report("f", 10, 12, True)
    report("g", 8, 8, True)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split(" moved")[0] for line in lines] == ["f: 0/12", "f: 10/12", "g: 8/8"]
    assert lines[-1].startswith("g: 8/8 moved (18/20 in all, ") and lines[-1].endswith(", done")


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["queue", "move", "--to", "127.0.0.1:1"], "--from"),
        (["queue", "move", "--from", "a:1", "--to", "b:1", "--window", "0"], "at least 1"),
        (["queue"], "ACTION"),
    ],
)
def test_bad_arguments_exit_2_with_the_usage(argv: list[str], text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert text in capsys.readouterr().err


def test_a_bad_address_names_itself(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["queue", "move", "--from", "host:0", "--to", "127.0.0.1:1"]) == 2
    assert "host:0" in capsys.readouterr().err
