"""``islandora-job queue move``: move every queued background job from one gearmand to another.

The summary (jobs moved per function and priority, jobs left behind) goes to stdout, as a table or ``--json`` for
scripts and the gearman_server role; progress and complaints go to stderr: a bar on a terminal, plain lines
otherwise. Exit codes: 0 every waiting job moved; 1 the move stopped part way or left jobs on the source;
2 refused (same server twice, workers registered, bad arguments); 3 a server unreachable or lost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any, TextIO

from islandora_job import exit_codes
from islandora_job.address import ServerAddress
from islandora_job.cli.jobs import MAX_TIMEOUT
from islandora_job.errors import ConfigError, ConnectionLost, ProtocolError, ServerUnavailable
from islandora_job.logsetup import escape_controls
from islandora_job.queue_move import (
    DEFAULT_WINDOW,
    PRIORITIES,
    FunctionMove,
    MoveFailed,
    MovePlan,
    MoveRefused,
    QueueMover,
    plan_move,
)


def register(commands: Any) -> None:
    """Add ``queue`` and its sub-commands to the ``islandora-job`` parser."""
    queue = commands.add_parser("queue", help="operate on a gearmand's queue as a whole")
    actions = queue.add_subparsers(dest="queue_command", metavar="ACTION", required=True)
    move = actions.add_parser(
        "move",
        help="move every queued background job from one gearmand to another",
        description=(
            "Grabs each waiting job of the source as a worker, submits it to the target as a background job with "
            "the same function, unique key, payload and priority, and completes it on the source only once the "
            "target acknowledged it. Interrupting it (even with SIGKILL) loses no job; run it again to finish."
        ),
    )
    move.add_argument("--from", dest="source", required=True, metavar="HOST:PORT", help="the gearmand to empty")
    move.add_argument("--to", dest="target", required=True, metavar="HOST:PORT", help="the gearmand to fill")
    move.add_argument(
        "--function",
        dest="functions",
        action="append",
        default=[],
        metavar="NAME",
        help="move only this function's jobs (repeatable; default: every function with waiting jobs)",
    )
    move.add_argument(
        "--allow-workers",
        action="store_true",
        help="move even if workers on the source can do a function (they race the mover; priorities may blur)",
    )
    move.add_argument("--dry-run", action="store_true", help="print what would move, move nothing")
    move.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    move.add_argument(
        "--window", type=_positive_int, default=DEFAULT_WINDOW, metavar="N", help="jobs in flight per batch"
    )
    move.add_argument(
        "--timeout",
        type=_seconds,
        default=60,
        metavar="SECONDS",
        help="give up when a server does not answer for this long (default 60)",
    )
    move.set_defaults(handler=cmd_move)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number of at least 1")
    return int(text)


def _seconds(text: str) -> int:
    """A whole number of seconds, at most MAX_TIMEOUT: a larger one overflows the selector (and is a typo)."""
    seconds = _positive_int(text)
    if seconds > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than {MAX_TIMEOUT:.0f} seconds (ten years)")
    return seconds


def _error(message: str) -> None:
    print(f"islandora-job: {message}", file=sys.stderr)


class ProgressReport:
    """A bar redrawn in place on a terminal; elsewhere (logs, Ansible) a plain line every few seconds."""

    def __init__(self, out: TextIO, total: int, *, interval: float = 5.0, verb: str = "moved") -> None:
        self.out = out
        self.verb = verb
        # A bar redrawn in place needs its carriage return; the escaping wrapper of the CLI would print it as "\\r".
        # Function names come from the network, so they are escaped here instead.
        self.bar_out: TextIO = getattr(out, "raw_stream", None) or out
        self.total = total
        self.interval = interval
        self.tty = out.isatty()
        self.started = time.monotonic()
        self.last_line = float("-inf")  # the first call always prints a line
        self.done_before = 0  # jobs moved in functions already done
        self.function = ""  # the function whose bar is drawn and not yet ended by a newline

    def _draw(self, text: str) -> None:
        """A lost terminal must not stop a move: the bar is only decoration, the summary and exit code tell."""
        with contextlib.suppress(OSError, ValueError):
            self.bar_out.write(text)
            self.bar_out.flush()

    def __call__(self, function: str, moved: int, expected: int, done: bool) -> None:
        moved_in_all = self.done_before + moved
        now = time.monotonic()
        rate = moved_in_all / max(now - self.started, 1e-6)
        if self.tty:
            width = 30
            filled = width if not self.total else min(width, width * moved_in_all // self.total)
            bar = "#" * filled + "-" * (width - filled)
            self._draw(f"\r{escape_controls(function)}: [{bar}] {moved_in_all}/{self.total} jobs, {rate:.0f}/s ")
            self.function = function
            if done:
                self.out.write("\n")
                self.function = ""
        elif done or now - self.last_line >= self.interval:
            name = escape_controls(function)
            self.out.write(
                f"{name}: {moved}/{expected} {self.verb} ({moved_in_all}/{self.total} in all, {rate:.0f}/s)"
                + (", done\n" if done else "\n")
            )
            self.last_line = now
        self.out.flush()
        if done:
            self.done_before += moved

    def close(self) -> None:
        if self.tty and self.function:
            self.out.write("\n")
            self.out.flush()


def _summary(source: ServerAddress, target: ServerAddress, results: list[FunctionMove], dry: bool) -> dict[str, Any]:
    return {
        "from": str(source),
        "to": str(target),
        "dry_run": dry,
        "functions": [
            {
                "function": r.function,
                **r.moved,
                "moved": r.total,
                "left": r.left,
                "foreground": r.foreground,
                "waiting": r.expected,
            }
            for r in results
        ],
        "moved": sum(r.total for r in results),
        "left": sum(r.left for r in results),
        "foreground": sum(r.foreground for r in results),
    }


def _planned(plan: MovePlan) -> list[FunctionMove]:
    """The plan in the shape of a move's results: what each function would move, per priority (for --dry-run)."""
    return [
        FunctionMove(p.function, p.high + p.normal + p.low, {"high": p.high, "normal": p.normal, "low": p.low})
        for p in plan.functions
    ]


def _render(summary: dict[str, Any], out: TextIO) -> None:
    verb = "would move" if summary["dry_run"] else "moved"
    rows = [("FUNCTION", *(p.upper() for p in PRIORITIES), "MOVED", "LEFT")]
    for f in summary["functions"]:
        rows.append((escape_controls(f["function"]), *(str(f[p]) for p in PRIORITIES), str(f["moved"]), str(f["left"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
    out.write(f"{verb} {summary['moved']} job(s) from {summary['from']} to {summary['to']}")
    out.write(f"; {summary['left']} left on {summary['from']}\n" if summary["left"] else "\n")


def cmd_move(args: argparse.Namespace) -> int:
    try:
        source = ServerAddress.parse(args.source)
        target = ServerAddress.parse(args.target)
    except ConfigError as exc:
        _error(str(exc))
        return exit_codes.USAGE
    try:
        plan = plan_move(source, target, args.functions, allow_workers=args.allow_workers, timeout=args.timeout)
        if args.dry_run:
            results = _planned(plan)
        else:
            progress = ProgressReport(sys.stderr, plan.total)
            try:
                with QueueMover(source, target, window=args.window, io_timeout=args.timeout) as mover:
                    mover.connect()
                    results = mover.move(plan, progress)
            finally:
                progress.close()
    except MoveRefused as exc:
        _error(f"refused: {exc}")
        return exit_codes.USAGE
    except (ServerUnavailable, ConnectionLost) as exc:
        _error(f"{exc}; jobs not yet moved stay queued on {source}: run the move again")
        return exit_codes.UNREACHABLE
    except (MoveFailed, ProtocolError) as exc:
        _error(f"move stopped: {exc}; jobs not yet moved stay queued on {source}: run the move again")
        return exit_codes.JOB_FAILED
    summary = _summary(source, target, results, args.dry_run)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _render(summary, sys.stdout)
    if summary["left"] and not args.dry_run:
        if summary["foreground"]:
            _error(f"{summary['foreground']} foreground job(s) not moved: their clients wait for them on {source}")
        _error(f"{summary['left']} job(s) stay on {source} (foreground, held by a worker, or scheduled)")
        return exit_codes.JOB_FAILED
    return exit_codes.OK
