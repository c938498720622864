"""Worker sub-commands: worker, list-jobs, check-config, dead-letters.

Configuration problems exit 2 with ``SOURCE: key: reason`` on stderr and nothing started (``main`` prints
:class:`~islandora_job.errors.ConfigError`).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from typing import Any, Final

from islandora_job import exit_codes, logsetup
from islandora_job.client import JobClient, JobRequest
from islandora_job.errors import ConfigError, ConnectionLost, ProtocolError, ServerUnavailable
from islandora_job.worker import config as config_module
from islandora_job.worker import runtime
from islandora_job.worker.deadletters import DeadLetter, DeadLetterStore, DeadLetterStoreError


def register(commands: Any) -> None:
    """Add this module's sub-commands to the ``islandora-job`` parser."""
    config_flag = argparse.ArgumentParser(add_help=False)
    config_flag.add_argument(
        "--config",
        metavar="FILE",
        help=f"worker configuration (default: $ISLANDORA_JOB_CONFIG, else {config_module.DEFAULT_PATH} if present)",
    )
    modules_flag = argparse.ArgumentParser(add_help=False)
    modules_flag.add_argument(
        "--jobs-module", action="append", default=[], metavar="MODULE", help="import jobs from MODULE (repeatable)"
    )

    worker = commands.add_parser(
        "worker",
        parents=[config_flag, modules_flag],
        help="run the worker pool (the service)",
        description="Run the supervised worker pool. SIGTERM: warm stop; second SIGTERM or SIGINT: cold stop; "
        "SIGHUP: reload the configuration and replace the worker processes one at a time.",
    )
    worker.add_argument("--server", action="append", default=[], metavar="HOST:PORT", help="gearmand (repeatable)")
    worker.add_argument("--concurrency", type=_positive_int, metavar="N", help="worker processes serving every job")
    worker.set_defaults(handler=cmd_worker)

    list_jobs = commands.add_parser(
        "list-jobs", parents=[config_flag, modules_flag], help="the jobs a worker with this configuration serves"
    )
    list_jobs.add_argument("--json", action="store_true", help="machine-readable output")
    list_jobs.set_defaults(handler=cmd_list_jobs)

    check = commands.add_parser("check-config", help="validate a worker configuration file and its jobs")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=cmd_check_config)

    dead = commands.add_parser("dead-letters", parents=[config_flag], help="jobs that failed for good")
    dead.add_argument("--path", metavar="DB", help="the dead-letter database (default: from the configuration)")
    actions = dead.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="recent dead letters, newest first")
    listing.add_argument("--function", metavar="NAME")
    listing.add_argument("--limit", type=_row_number, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_dead_list)
    show = actions.add_parser("show", help="one dead letter, payload included")
    show.add_argument("id", type=_row_number)
    show.set_defaults(handler=cmd_dead_show)
    requeue = actions.add_parser("requeue", help="submit dead letters again as background jobs")
    requeue.add_argument("ids", type=_row_number, nargs="+", metavar="ID")
    requeue.add_argument("--server", action="append", default=[], metavar="HOST:PORT")
    requeue.set_defaults(handler=cmd_dead_requeue)
    purge = actions.add_parser("purge", help="delete dead letters")
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", type=_row_number, nargs="*", default=[], metavar="ID")
    which.add_argument("--all", action="store_true")
    which.add_argument("--older-than", type=_age, metavar="SECONDS")
    purge.set_defaults(handler=cmd_dead_purge)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _overrides(args: argparse.Namespace) -> config_module.Overrides:
    return config_module.Overrides(
        servers=getattr(args, "server", []),
        jobs_modules=args.jobs_module,
        concurrency=getattr(args, "concurrency", None),
    )


# --- worker ---------------------------------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from islandora_job.worker.metrics import PoolMetrics, serve
    from islandora_job.worker.pool import Supervisor
    from islandora_job.worker.sdnotify import Notifier

    # A reload requested while we start is moot (the configuration is being read now), and must not kill us.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    overrides = _overrides(args)

    def load() -> config_module.WorkerConfig:
        return runtime.run_discovery(config_module.load(args.config, overrides))

    config = config_module.load(args.config, overrides)
    config_module.check_user(config)
    logsetup.configure(config.logging.level, config.logging.json)
    config = runtime.run_discovery(config)
    runtime.build(config)  # import every job module now: a bad one is a start-up error, not a crash loop
    metrics = None
    server = None
    if config.metrics.listen:
        metrics = PoolMetrics(dead_letters=DeadLetterStore.from_config(config.dead_letters))
        server = serve(metrics, config.metrics.listen)
    try:
        return Supervisor(config, reload=load, notifier=Notifier.from_environment(), metrics=metrics).run()
    finally:
        if server is not None:
            server.shutdown()


# --- list-jobs and check-config -------------------------------------------------------------------------------------


def cmd_list_jobs(args: argparse.Namespace) -> int:
    config = runtime.run_discovery(config_module.load(args.config, _overrides(args)))
    built = runtime.build(config)
    rows: list[dict[str, Any]] = []
    for entry in built.registry:
        spec = entry.spec
        rows.append(
            {
                "name": spec.name,
                "alias": spec.alias,
                "functions": built.registry.functions_of(spec.name),
                "payload": spec.payload,
                "timeout": spec.timeout if spec.timeout is not None else config.pool.default_timeout,
                "retries": spec.retries,
                "source": f"{entry.origin}: {spec.where}",
            }
        )
    for function, command in built.bridge.items():
        rows.append(
            {
                "name": function,
                "alias": None,
                "functions": [function],
                "payload": "command",
                "timeout": command.timeout,
                "retries": 0,
                "source": f"command_jobs: {' '.join(command.config.argv)}",
            }
        )
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return exit_codes.OK
    print(f"{'JOB':<32} {'ALIAS':<20} {'FUNCTIONS':<32} SOURCE")
    for row in rows:
        functions = ",".join(row["functions"])
        print(f"{row['name']:<32} {row['alias'] or '-':<20} {functions:<32} {row['source']}")
    return exit_codes.OK


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = config_module.load(args.file, environ={}, check_commands=True)
        config = runtime.run_discovery(config)
        built = runtime.build(config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return exit_codes.USAGE
    print(
        f"{args.file}: OK ({len(built.registry)} job(s), {len(built.bridge)} command job(s), "
        f"{len(built.router.functions())} Gearman function(s), {config.concurrency} worker process(es) "
        f"+ {sum(config.pool.dedicated.values())} dedicated)"
    )
    return exit_codes.OK


# --- dead-letters -----------------------------------------------------------------------------------------------------


#: SQLite's largest integer: no dead letter's id (nor a useful --limit) is larger.
MAX_ROW_NUMBER: Final = 2**63 - 1


def _row_number(text: str) -> int:
    """A dead letter's id or a ``--limit``: a whole number from 1 to SQLite's largest integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_ROW_NUMBER:
        raise argparse.ArgumentTypeError(f"{text!r} must be from 1 to {MAX_ROW_NUMBER}")
    return value


def _age(text: str) -> float:
    """``purge --older-than``: seconds, 0 or more. A negative age would purge every letter, ``nan`` none."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number of seconds, 0 or more")
    return value


def _store(args: argparse.Namespace) -> DeadLetterStore:
    path = args.path or config_module.load(args.config).dead_letters.path
    if not path:
        raise ConfigError("dead_letters.path is empty: dead letters are disabled")
    return DeadLetterStore(path)


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _as_dict(letter: DeadLetter, with_payload: bool) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": letter.id,
        "function": letter.function,
        "job": letter.name,
        "handle": letter.handle,
        "unique": letter.unique_key,
        "error": letter.error,
        "attempts": letter.attempts,
        "failed_at": letter.failed_at,
        "requeued_at": letter.requeued_at,
        "requeued_handle": letter.requeued_handle,
        "payload_size": letter.payload_size,
    }
    if with_payload:
        document["payload"] = letter.payload.decode("utf-8", "replace")
    return document


def cmd_dead_list(args: argparse.Namespace) -> int:
    letters = _store(args).list(function=args.function, limit=args.limit)
    if args.json:
        json.dump([_as_dict(letter, with_payload=False) for letter in letters], sys.stdout, indent=2)
        print()
        return exit_codes.OK
    print(f"{'ID':>6} {'FAILED AT':<19} {'FUNCTION':<28} {'TRIES':>5} {'REQUEUED':<8} ERROR")
    for letter in letters:
        requeued = "yes" if letter.requeued_at else "no"
        error = logsetup.escape_controls(letter.error.splitlines()[0][:80] if letter.error else "")
        function = logsetup.escape_controls(letter.function)
        print(f"{letter.id:>6} {_when(letter.failed_at):<19} {function:<28} {letter.attempts:>5} {requeued:<8} {error}")
    return exit_codes.OK


def cmd_dead_show(args: argparse.Namespace) -> int:
    letter = _store(args).get(args.id)
    if letter is None:
        print(f"islandora-job: no dead letter {args.id}", file=sys.stderr)
        return exit_codes.JOB_FAILED
    json.dump(_as_dict(letter, with_payload=True), sys.stdout, indent=2, ensure_ascii=False)
    print()
    return exit_codes.OK


def cmd_dead_requeue(args: argparse.Namespace) -> int:
    from islandora_job.address import servers_from_environment

    store = _store(args)
    if args.server:
        servers = servers_from_environment(args.server)
    else:
        try:
            servers = list(config_module.load(args.config).servers)
        except ConfigError:
            servers = servers_from_environment()
    status = exit_codes.OK
    checked = False
    for letter_id in args.ids:
        letter = store.get(letter_id)
        if letter is None:
            print(f"islandora-job: no dead letter {letter_id}", file=sys.stderr)
            status = exit_codes.JOB_FAILED
            continue
        if letter.truncated:
            print(f"islandora-job: dead letter {letter.id}: payload was cut when stored; not requeued", file=sys.stderr)
            status = exit_codes.JOB_FAILED
            continue
        if not checked:  # a job is queued only if its letter can then be marked: a rerun must not queue it again
            try:
                store.check_writable()
            except DeadLetterStoreError as exc:
                print(f"islandora-job: {exc}; nothing requeued", file=sys.stderr)
                return exit_codes.JOB_FAILED
            checked = True
        request = JobRequest(letter.function, raw=letter.payload)
        try:
            with JobClient(servers) as client:
                [result] = client.submit_batch([request], background=True, raise_unavailable=True)
        except (ServerUnavailable, ConnectionLost, ProtocolError) as exc:
            print(f"islandora-job: {exc}", file=sys.stderr)
            return exit_codes.UNREACHABLE
        if result.error is not None or result.handle is None:
            print(f"islandora-job: dead letter {letter.id}: {result.error}", file=sys.stderr)
            status = exit_codes.JOB_FAILED
            continue
        handle = result.handle
        try:
            store.mark_requeued(letter.id, handle)
        except DeadLetterStoreError as exc:  # the job is queued all the same: say which, so that nobody reruns it
            print(
                f"islandora-job: dead letter {letter.id} was requeued as job {handle} but not marked so ({exc});"
                " do not requeue it again",
                file=sys.stderr,
            )
            print(f"{letter.id}\t{handle}")
            return exit_codes.JOB_FAILED
        print(f"{letter.id}\t{handle}")
    return status


def cmd_dead_purge(args: argparse.Namespace) -> int:
    store = _store(args)
    count = store.purge(args.ids, older_than=args.older_than, everything=args.all)
    print(f"purged {count} dead letter(s)")
    return exit_codes.OK
