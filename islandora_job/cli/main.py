"""Entry point of the ``islandora-job`` command.

Exit codes are part of the interface (operators script against them):
0 done, 1 the job failed, 2 usage or configuration error, 3 no server reachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from islandora_job import __version__
from islandora_job.cli import exit_codes, jobs, queue, worker
from islandora_job.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="islandora-job",
        description="Submit and inspect Gearman jobs, and run the islandora-job worker.",
    )
    parser.add_argument("--version", action="version", version=f"islandora-job {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    jobs.register(commands)
    worker.register(commands)
    queue.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 with the usage line on bad arguments
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"islandora-job: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
