"""Client and admin sub-commands: submit, status, workers, version, cancel.

Servers come from ``--server`` flags, else ``ISLANDORA_JOB_SERVERS``, else 127.0.0.1:4730. Output on stdout is
for scripts (results, handles, tables or JSON); every complaint goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Final, TextIO

from islandora_job import exit_codes
from islandora_job.address import ServerAddress, servers_from_environment
from islandora_job.admin import AdminClient, AdminError
from islandora_job.cli.output import JobProgress, OutputFailed, silence_stdout, write_result
from islandora_job.client import DEAD_PEER_TIMEOUT, PRIORITIES, JobClient
from islandora_job.errors import (
    ConnectionLost,
    IslandoraJobError,
    JobError,
    ProtocolError,
    ServerUnavailable,
)
from islandora_job.logsetup import escape_controls
from islandora_job.payload import PayloadError, function_name, parse_cli_argument


def register(commands: Any) -> None:
    """Add this module's sub-commands to the ``islandora-job`` parser."""
    server_flag = argparse.ArgumentParser(add_help=False)
    server_flag.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a gearmand to use (repeatable; default: $ISLANDORA_JOB_SERVERS, else 127.0.0.1:4730)",
    )

    submit = commands.add_parser(
        "submit",
        parents=[server_flag],
        help="submit a job and print its result (or its handle with --background)",
        description="Each ARG is parsed as JSON when it is valid JSON, else taken as a string; an ARG that starts "
        "with { or [ must be valid JSON, unless --string takes every ARG as a string.",
    )
    submit.add_argument("name", metavar="NAME", help="the job name (the payload's func)")
    submit.add_argument("args", metavar="ARG", nargs="*", help="positional arguments of the job")
    submit.add_argument("--string", action="store_true", help="take every ARG as a string, never as JSON")
    submit.add_argument("--background", action="store_true", help="queue it and print the job handle")
    submit.add_argument("--priority", choices=PRIORITIES, default="normal")
    submit.add_argument("--site", metavar="URL", help="the payload's site (the Drupal base URL)")
    submit.add_argument("--uid", type=_uid, metavar="N", help="the payload's uid (the Drupal user id)")
    submit.add_argument("--alias", metavar="FUNCTION", help="the job's alias: the Gearman function to submit to")
    submit.add_argument("--multisite", metavar="PREFIX", help="multisite prefix: submit to PREFIX_NAME")
    unique = submit.add_mutually_exclusive_group()
    unique.add_argument("--unique", metavar="KEY", help="unique key: gearmand coalesces queued jobs with the same key")
    unique.add_argument("--dedupe", action="store_true", help="derive the unique key from the payload")
    submit.add_argument(
        "--timeout",
        type=_seconds(MAX_TIMEOUT),
        metavar="SECONDS",
        help="give up waiting after this long (default: wait as long as the job runs and its server is alive)",
    )
    submit.add_argument(
        "--dead-peer-timeout",
        type=_seconds(MAX_INTERVAL),
        default=DEAD_PEER_TIMEOUT,
        metavar="SECONDS",
        help=f"declare a server whose host stopped answering TCP dead after this long (default {DEAD_PEER_TIMEOUT:g})",
    )
    submit.set_defaults(handler=cmd_submit)

    status = commands.add_parser("status", parents=[server_flag], help="the queue per function and server")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument(
        "--interval", type=_seconds(MAX_INTERVAL), default=2.0, metavar="SECONDS", help="--watch period"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)

    workers = commands.add_parser("workers", parents=[server_flag], help="the workers connected to each server")
    workers.add_argument("--all", action="store_true", help="also list connections that serve no function")
    workers.add_argument("--json", action="store_true", help="machine-readable output")
    workers.set_defaults(handler=cmd_workers)

    version = commands.add_parser("version", parents=[server_flag], help="each server's gearmand version")
    version.set_defaults(handler=cmd_version)

    cancel = commands.add_parser(
        "cancel",
        parents=[server_flag],
        help="cancel a queued (not yet running) job",
        description=f"Cancel a queued job: {CANCEL_NOTE}.",
    )
    cancel.add_argument("handle", metavar="HANDLE")
    cancel.set_defaults(handler=cmd_cancel)


#: The NOTE of ``status`` for a function with jobs queued and no worker (the failure that piled up the original
#: module's heartbeat unnoticed), and for a server that could not be asked.
NO_WORKER: Final = "NO WORKER"
SERVER_DOWN: Final = "DOWN"
#: The longest ``--timeout`` (ten years): beyond it a deadline is a typo, and ``inf`` is not a deadline.
MAX_TIMEOUT: Final = 10 * 365 * 86400.0
MAX_INTERVAL: Final = 86400.0
#: What gearmand 1.1.20's admin ``cancel job`` does (and what ``cancel`` says): it marks the job, it does not remove it.
CANCEL_NOTE: Final = (
    "gearmand only marks the job; it drops it when a worker reaches it, and status counts it until then"
)
#: Seconds the servers may take together to say whether a worker serves the function before a foreground submit
#: (at most half of ``--timeout``, which the check counts against).
UNSERVED_CHECK: Final = 2.0
#: A Drupal uid: ASCII digits, at most this many (a 64-bit integer).
MAX_UID_DIGITS: Final = 19
#: How deep a JSON argument may nest; far beyond any real payload, far below what json and Python can recurse.
MAX_JSON_DEPTH: Final = 200


def _seconds(maximum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not 0 < value <= maximum:  # also refuses nan and inf
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0 and at most {maximum:g} seconds")
        return value

    return parse


def _uid(text: str) -> int:
    """A Drupal user id: ASCII digits only (``int()`` takes ``²``, ``--5`` would not be a uid)."""
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_UID_DIGITS):
        raise argparse.ArgumentTypeError(f"{text!r} is not a user id (up to {MAX_UID_DIGITS} ASCII digits)")
    return int(text)


def _job_argument(position: int, text: str) -> Any:
    """One ARG: JSON when it is valid JSON, else the text; broken or too deeply nested JSON is a usage error."""
    try:
        value = parse_cli_argument(text)
    except PayloadError as exc:
        raise PayloadError(f"ARG {position} {_shorten(text)}: {exc}") from exc
    except RecursionError:
        value = None
        depth = MAX_JSON_DEPTH + 1
    else:
        depth = _depth(value)
    if depth > MAX_JSON_DEPTH:
        raise PayloadError(f"ARG {position}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _shorten(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (iterative: the value may be very deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                return level
            stack.extend((child, level + 1) for child in item)
    return deepest


def _servers(args: argparse.Namespace) -> list[ServerAddress]:
    return servers_from_environment(args.server)


def _error(message: str) -> None:
    print(f"islandora-job: {escape_controls(message)}", file=sys.stderr)


# -- submit --------------------------------------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        job_args = list(args.args) if args.string else [_job_argument(p, text) for p, text in enumerate(args.args, 1)]
    except PayloadError as exc:
        _error(str(exc))
        return exit_codes.USAGE
    options: dict[str, Any] = {
        "priority": args.priority,
        "unique": args.unique,
        "dedupe": args.dedupe,
        "alias": args.alias,
        "timeout": args.timeout,
    }
    try:
        with JobClient(
            _servers(args), site=args.site, uid=args.uid, multisite=args.multisite, dead_peer=args.dead_peer_timeout
        ) as client:
            if args.background:
                handle = client.submit_background(args.name, *job_args, **options)
                print(handle)
                return exit_codes.OK
            started = time.monotonic()
            budget = UNSERVED_CHECK if args.timeout is None else min(UNSERVED_CHECK, args.timeout / 2)
            _warn_unserved(client.servers, function_name(args.name, args.alias, args.multisite), budget)
            if args.timeout is not None:  # the check counts against --timeout: "at most this long, whatever happens"
                options["timeout"] = max(args.timeout - (time.monotonic() - started), 0.001)
            progress = JobProgress(sys.stderr)
            try:
                data = client.submit(args.name, *job_args, **options, on_status=progress)
            finally:
                progress.end()
    except PayloadError as exc:
        _error(str(exc))
        return exit_codes.USAGE
    except JobError as exc:
        _error(str(exc))
        return exit_codes.JOB_FAILED
    except ConnectionLost as exc:
        # The server had accepted the job (the client re-sends anything not yet accepted): it may have run.
        _error(f"{exc}; outcome unknown")
        return exit_codes.OUTCOME_UNKNOWN
    except (ServerUnavailable, ProtocolError) as exc:
        _error(str(exc))
        return exit_codes.UNREACHABLE
    write_result(data)
    return exit_codes.OK


def _warn_unserved(servers: Sequence[ServerAddress], function: str, budget: float) -> None:
    """Say at once on stderr when no worker serves the function on a server: the job would wait there, silently,
    until one registers. One admin ``status`` per server, all within ``budget`` seconds; a server that does not
    answer in time is left to the submission to report."""
    deadline = time.monotonic() + budget
    reachable, without = 0, []
    for address in servers:
        left = deadline - time.monotonic()
        if left <= 0:
            return  # not asked: say nothing rather than something wrong
        try:
            with AdminClient(address, timeout=left, answer_timeout=left) as admin:
                statuses = admin.status()
        except IslandoraJobError:
            continue
        reachable += 1
        if not any(status.function == function and status.workers > 0 for status in statuses):
            without.append(str(address))
    if without and len(without) == reachable:
        _error(f"no worker serves function {function!r} ({', '.join(without)}); waiting until one registers")
    elif without:
        _error(f"no worker serves function {function!r} on {', '.join(without)}: a job queued there waits")


# -- status --------------------------------------------------------------------------------------------------------


def _collect_status(servers: list[ServerAddress]) -> list[dict[str, Any]]:
    """One entry per server: its functions' queues, or the error that kept us from asking."""
    report: list[dict[str, Any]] = []
    for address in servers:
        entry: dict[str, Any] = {"server": str(address), "up": True, "error": None, "functions": []}
        try:
            with AdminClient(address) as admin:
                statuses = admin.status()
                priorities = {p.function: p for p in admin.priority_status()}
        except IslandoraJobError as exc:
            entry.update(up=False, error=str(exc))
            report.append(entry)
            continue
        for status in statuses:
            row = {
                "function": status.function,
                "queued": status.total,
                "running": status.running,
                "waiting": status.waiting,
                "workers": status.workers,
                "no_worker": status.total > 0 and status.workers == 0,
            }
            if (priority := priorities.get(status.function)) is not None:
                row.update(high=priority.high, normal=priority.normal, low=priority.low)
            entry["functions"].append(row)
        report.append(entry)
    return report


def _render_status(report: list[dict[str, Any]], out: TextIO) -> None:
    headers = ("SERVER", "FUNCTION", "WAITING", "RUNNING", "WORKERS", "HIGH", "NORMAL", "LOW", "NOTE")
    rows: list[tuple[str, ...]] = []
    for entry in report:
        if entry["error"]:
            rows.append((entry["server"], f"(unreachable: {entry['error']})", "", "", "", "", "", "", SERVER_DOWN))
            continue
        for f in entry["functions"]:
            rows.append(
                (
                    entry["server"],
                    f["function"],
                    str(f["waiting"]),
                    str(f["running"]),
                    str(f["workers"]),
                    str(f.get("high", "")),
                    str(f.get("normal", "")),
                    str(f.get("low", "")),
                    NO_WORKER if f["no_worker"] else "",
                )
            )
    _table(headers, rows, out)


def _table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    rows = [tuple(escape_controls(cell) for cell in row) for row in rows]  # a cell is one line, whatever it holds
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


def cmd_status(args: argparse.Namespace) -> int:
    servers = _servers(args)
    render: Callable[[list[dict[str, Any]], TextIO], None]
    render = _render_json if args.json else _render_status
    if not args.watch:
        report = _collect_status(servers)
        render(report, sys.stdout)
        return _unreachable_exit(report)
    try:
        while True:
            report = _collect_status(servers)
            if sys.stdout.isatty():
                sys.stdout.buffer.write(b"\x1b[H\x1b[2J")  # home and clear, past the escaping text layer
                sys.stdout.buffer.flush()
            sys.stdout.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  every {args.interval:g}s, Ctrl-C to stop\n")
            render(report, sys.stdout)
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return exit_codes.OK
    except OutputFailed as exc:
        if not isinstance(exc.__cause__, BrokenPipeError):
            raise
        silence_stdout()  # the reader had enough (status --watch | head): the normal end of a watch
        return exit_codes.OK


def _render_json(report: list[dict[str, Any]], out: TextIO) -> None:
    json.dump(report, out, indent=2)
    out.write("\n")


def _unreachable_exit(report: list[dict[str, Any]]) -> int:
    """Exit 3 when any server could not be asked: a monitor must notice a missing server."""
    failed = [entry for entry in report if entry["error"]]
    for entry in failed:
        _error(f"{entry['server']}: {entry['error']}")
    return exit_codes.UNREACHABLE if failed else exit_codes.OK


# -- workers, version, cancel --------------------------------------------------------------------------------------


def cmd_workers(args: argparse.Namespace) -> int:
    report: list[dict[str, Any]] = []
    for address in _servers(args):
        entry: dict[str, Any] = {"server": str(address), "error": None, "workers": []}
        try:
            with AdminClient(address) as admin:
                workers = admin.workers()
        except IslandoraJobError as exc:
            entry["error"] = str(exc)
        else:
            entry["workers"] = [asdict(w) for w in workers if args.all or w.functions]
        report.append(entry)
    if args.json:
        _render_json(report, sys.stdout)
    else:
        rows = [
            (entry["server"], str(w["fd"]), w["ip"], w["client_id"], " ".join(w["functions"]))
            for entry in report
            for w in entry["workers"]
        ]
        _table(("SERVER", "FD", "IP", "CLIENT_ID", "FUNCTIONS"), rows, sys.stdout)
    return _unreachable_exit(report)


def cmd_version(args: argparse.Namespace) -> int:
    report: list[dict[str, Any]] = []
    for address in _servers(args):
        entry: dict[str, Any] = {"server": str(address), "error": None}
        try:
            with AdminClient(address) as admin:
                version = admin.version()
        except IslandoraJobError as exc:
            entry["error"] = str(exc)
        else:  # outside the try: a failed print is the output's failure (exit 5), not the server's
            print(f"{address}\t{escape_controls(version)}")
        report.append(entry)
    return _unreachable_exit(report)


def cmd_cancel(args: argparse.Namespace) -> int:
    reachable = 0
    for address in _servers(args):
        try:
            with AdminClient(address) as admin:
                reachable += 1
                admin.cancel_job(args.handle)
        except AdminError as exc:
            if exc.code == "UNKNOWN_JOB":
                continue
            _error(f"{address}: {exc}")
            return exit_codes.JOB_FAILED
        except ValueError as exc:
            _error(str(exc))
            return exit_codes.USAGE
        except IslandoraJobError as exc:
            _error(str(exc))
            reachable -= 1
            continue
        print(f"marked {escape_controls(args.handle)} cancelled on {address}: {CANCEL_NOTE}")
        return exit_codes.OK
    if reachable == 0:
        return exit_codes.UNREACHABLE
    _error(f"no server has a queued job {args.handle} (running jobs cannot be cancelled)")
    return exit_codes.JOB_FAILED
