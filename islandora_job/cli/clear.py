"""``islandora-job clear FUNCTION``: empty a function's queue on running gearmands, recording every job cleared.

Progress goes to stderr (a bar on a terminal, a line every few seconds elsewhere); the summary to stdout, as a table
or ``--json``. Exit codes: 0 cleared (the queue is empty, or the limit reached); 1 stopped part way (a record could
not be written: the jobs not cleared stay queued); 2 refused (workers serve the function, no record to write to,
bad arguments); 3 a server unreachable or lost.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from islandora_job import exit_codes
from islandora_job.address import servers_from_environment
from islandora_job.errors import ConfigError, ConnectionLost, ProtocolError, ServerUnavailable
from islandora_job.queue_clear import (
    CLEARED,
    ClearedJob,
    ClearFailed,
    ClearRefused,
    ClearResult,
    FileRecorder,
    QueueClearer,
)
from islandora_job.worker import config as config_module
from islandora_job.worker.deadletters import DeadLetterStore, DeadLetterStoreError


def register(commands: Any) -> None:
    clear = commands.add_parser(
        "clear",
        help="take a function's queued jobs off gearmand, recording each, without running them",
        description=(
            "Takes FUNCTION's queued jobs as a worker would, records each (function, handle, unique key, payload) in "
            "the worker's dead-letter store, or in FILE with --to, and ends it with WORK_FAIL without running it. "
            "Stops when the queue is empty or after --limit jobs. A job is ended only once its record is written; "
            "interrupted, the jobs not yet recorded stay queued. Cleared letters can be submitted again with "
            "'islandora-job dead-letters requeue'."
        ),
    )
    clear.add_argument("function", metavar="FUNCTION", help="the Gearman function whose queue to clear")
    clear.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a gearmand to clear (repeatable; default ISLANDORA_JOB_SERVERS or 127.0.0.1:4730)",
    )
    clear.add_argument("--limit", type=_positive_int, metavar="N", help="clear at most N jobs in all")
    clear.add_argument("--to", metavar="FILE", help="append the jobs to FILE (JSON lines) instead of the store")
    clear.add_argument(
        "--config", metavar="FILE", help="the worker configuration naming the dead-letter store (default: the worker's)"
    )
    clear.add_argument(
        "--allow-workers", action="store_true", help="clear even while workers serve the function (they race it)"
    )
    clear.add_argument("--json", action="store_true", help="machine-readable summary on stdout")
    clear.set_defaults(handler=cmd_clear)


def _positive_int(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number of at least 1")
    return int(text)


def _error(message: str) -> None:
    print(f"islandora-job: {message}", file=sys.stderr)


class StoreRecorder:
    """Into the worker's dead-letter store, as letters that ``dead-letters requeue`` can submit again."""

    def __init__(self, store: DeadLetterStore) -> None:
        self.store = store
        self.where = str(store.path)
        try:
            store.check_writable()
        except DeadLetterStoreError as exc:
            raise ClearRefused(str(exc)) from None

    def record_all(self, jobs: list[ClearedJob]) -> None:
        for job in jobs:
            self._record(job)

    def _record(self, job: ClearedJob) -> None:
        if len(job.payload) > self.store.max_payload:
            raise ClearFailed(
                f"a payload of {len(job.payload)} bytes is over the store's max_payload_kb "
                f"({self.store.max_payload // 1024}): it would be kept cut; clear with --to FILE instead"
            )
        letter = self.store.record(
            function=job.function,
            name=job.function,
            handle=job.handle,
            unique=job.unique,
            payload=job.payload,
            error=CLEARED,
            attempts=0,
        )
        if not letter:
            raise ClearFailed(f"{self.where}: the dead-letter store did not take the record (see the log line above)")

    def close(self) -> None:
        pass


def _recorder(args: argparse.Namespace) -> FileRecorder | StoreRecorder:
    if args.to:
        return FileRecorder(args.to)
    settings = config_module.load(args.config).dead_letters
    if not settings.path:
        raise ConfigError("dead_letters.path is empty (dead letters are disabled): clear with --to FILE")
    return StoreRecorder(DeadLetterStore.from_config(settings))


def cmd_clear(args: argparse.Namespace) -> int:
    from islandora_job.cli.queue import ProgressReport

    function: str = args.function
    if not function or "\0" in function:
        _error("FUNCTION must be a non-empty name without NUL")
        return exit_codes.USAGE
    servers = servers_from_environment(args.server)
    try:
        recorder = _recorder(args)
    except ClearRefused as exc:
        _error(f"refused: {exc}")
        return exit_codes.USAGE
    results: list[ClearResult] = []
    code = exit_codes.OK
    try:
        for server in servers:
            limit = None if args.limit is None else args.limit - sum(r.cleared for r in results)
            if limit is not None and limit <= 0:
                break
            with QueueClearer(server) as clearer:
                waiting, _ = clearer.waiting(function)
                progress = ProgressReport(sys.stderr, waiting if limit is None else min(waiting, limit), verb="cleared")
                try:
                    results.append(
                        clearer.clear(
                            function, recorder, limit=limit, allow_workers=args.allow_workers, progress=progress
                        )
                    )
                finally:
                    progress.close()
    except ClearRefused as exc:
        _error(f"refused: {exc}")
        code = exit_codes.USAGE
    except (ServerUnavailable, ConnectionLost) as exc:
        _error(f"{exc}; the jobs not yet cleared stay queued")
        code = exit_codes.UNREACHABLE
    except (ClearFailed, ProtocolError) as exc:
        _error(f"clear stopped: {exc}; the jobs not yet cleared stay queued")
        code = exit_codes.JOB_FAILED
    finally:
        recorder.close()
    _summary(function, recorder.where, results, args.json)
    return code


def _summary(function: str, where: str, results: list[Any], as_json: bool) -> None:
    cleared = sum(r.cleared for r in results)
    left = sum(r.left for r in results)
    if as_json:
        document = {
            "function": function,
            "recorded_in": where,
            "servers": [
                {"server": r.server, "waiting": r.waiting, "cleared": r.cleared, "left": r.left} for r in results
            ],
            "cleared": cleared,
            "left": left,
        }
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for r in results:
        note = f", {r.keyless_returned} keyless handed back (clear without --limit)" if r.keyless_returned else ""
        sys.stdout.write(f"{r.server}: cleared {r.cleared} of {r.waiting} waiting, {r.left} left{note}\n")
    sys.stdout.write(f"cleared {cleared} job(s) of {function}; recorded in {where}\n")
