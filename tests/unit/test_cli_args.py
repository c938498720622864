"""The CLI's argument handling: bad arguments exit 2 with one line, before anything is contacted."""

from __future__ import annotations

import pytest

from islandora_job.cli.main import build_parser, main


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["submit"],
        ["submit", "job", "--priority", "urgent"],
        ["submit", "job", "--unique", "k", "--dedupe"],
        ["submit", "job", "--timeout", "-1"],
        ["submit", "job", "--timeout", "soon"],
        ["status", "--interval", "0"],
        ["nonsense"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("islandora-job") and "--help" in line


def test_bad_server_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version", "--server", "host:notaport"]) == 2
    assert "host:notaport" in capsys.readouterr().err


def test_submit_arguments_parse() -> None:
    args = build_parser().parse_args(
        ["submit", "job", "1", "a b", "--server", "h:1", "--server", "h:2", "--background", "--dedupe", "--uid", "3"]
    )
    assert args.name == "job" and args.args == ["1", "a b"]
    assert args.server == ["h:1", "h:2"] and args.background and args.dedupe and args.uid == 3


def test_an_unforeseen_error_is_one_line_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(_args: object) -> None:
        raise RuntimeError("a bug\x1b[2J")

    monkeypatch.setattr("islandora_job.cli.jobs._servers", broken)
    monkeypatch.delenv("ISLANDORA_JOB_DEBUG", raising=False)
    assert main(["version"]) == 70
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("islandora-job: internal error: RuntimeError: a bug\\u001b[2J")
