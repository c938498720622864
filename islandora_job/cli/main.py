"""Entry point of the ``islandora-job`` command.

Exit codes are part of the interface (operators script against them; :mod:`islandora_job.exit_codes`):
0 done, 1 the job failed, 2 usage or configuration error, 3 no server reachable (nothing submitted), 4 outcome
unknown (the connection was lost after the server accepted the job), 5 the output could not be written.

Everything the command writes for a terminal goes through :class:`_Escaping`: text from the network (function
names, client ids, job exception texts) reaches stdout and stderr with its control characters escaped, so that it
can neither drive the terminal (ESC sequences) nor forge lines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn, TextIO, cast

from islandora_job import __version__, exit_codes
from islandora_job.cli import clear, exporter, jobs, php_runner, queue, worker
from islandora_job.cli.output import OutputFailed, silence_stdout
from islandora_job.errors import ConfigError
from islandora_job.logsetup import escape_controls
from islandora_job.worker.deadletters import DeadLetterStoreError


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line that says what is wrong (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(exit_codes.USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        """``--help`` and ``--version`` exit 0 after writing to stdout, which may be full: argparse ignores an
        OSError there, so flush it here (raising :class:`OutputFailed`, exit 5, as for any other output)."""
        if status == 0:
            sys.stdout.flush()
        super().exit(status, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="islandora-job",
        description="Submit and inspect Gearman jobs, and run the islandora-job worker.",
    )
    parser.add_argument("--version", action="version", version=f"islandora-job {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    jobs.register(commands)
    worker.register(commands)
    queue.register(commands)
    php_runner.register(commands)
    exporter.register(commands)
    clear.register(commands)
    return parser


class _Escaping:
    """A text stream that writes through to another with control characters escaped (newlines and tabs kept).

    A closed or full stdout raises :class:`OutputFailed`, one error the entry point turns into exit code 5; a
    closed or full stderr is ignored (there is nowhere to say so, and the exit code still tells what happened).
    """

    def __init__(self, stream: TextIO | None, name: str) -> None:
        self._stream = stream
        self._name = name

    def write(self, text: str) -> int:
        if self._stream is None:
            return self._failed(OSError(f"{self._name} is closed"), len(text))
        try:
            return self._stream.write(escape_controls(text, keep="\n\t"))
        except (OSError, ValueError) as exc:
            return self._failed(exc, len(text))

    def _failed(self, exc: Exception, size: int) -> int:
        """stdout's loss is the command's failure (exit 5); stderr's is not: a job's exit code must survive it."""
        if self._name == "stderr":
            return size
        raise OutputFailed(f"cannot write to {self._name}: {exc}") from exc

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except (OSError, ValueError) as exc:
            self._failed(exc, 0)

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    @property
    def raw_stream(self) -> TextIO | None:
        """The stream underneath, for output that must keep a control character of its own (a progress bar's
        carriage return) and escapes every text from the network itself."""
        return self._stream

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            raise OutputFailed(f"{self._name} is closed")
        return getattr(self._stream, name)


@contextlib.contextmanager
def _escaped_output() -> Iterator[None]:
    saved = sys.stdout, sys.stderr
    sys.stdout = cast(TextIO, _Escaping(sys.stdout, "stdout"))
    sys.stderr = cast(TextIO, _Escaping(sys.stderr, "stderr"))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _complain(message: str) -> None:
    with contextlib.suppress(OutputFailed):
        print(f"islandora-job: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    with _escaped_output():
        parser = build_parser()
        try:
            args = parser.parse_args(argv)  # argparse exits 2 with the usage line on bad arguments
        except OutputFailed as exc:  # --help or --version into a closed or full stdout
            _complain(str(exc))
            silence_stdout()
            return exit_codes.OUTPUT_FAILED
        try:
            code = int(args.handler(args))
            sys.stdout.flush()
            return code
        except OutputFailed as exc:
            _complain(str(exc))
            silence_stdout()
            return exit_codes.OUTPUT_FAILED
        except (ConfigError, DeadLetterStoreError) as exc:
            _complain(str(exc))
            return exit_codes.USAGE if isinstance(exc, ConfigError) else exit_codes.JOB_FAILED
        except KeyboardInterrupt:
            return 130
        except Exception as exc:
            if args.command == "worker" or os.environ.get("ISLANDORA_JOB_DEBUG"):
                raise  # the service's journal wants the whole traceback
            _complain(f"internal error: {type(exc).__name__}: {exc} (ISLANDORA_JOB_DEBUG=1 shows the traceback)")
            return exit_codes.INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
