"""``islandora-job php-runner``: the absolute path of the persistent PHP runner shipped in the package.

A worker.toml names that path in a ``persistent = true`` entry's argv (``php RUNNER --bootstrap FILE`` or
``drush ... php-script RUNNER``); see docs/worker.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from islandora_job import exit_codes

RUNNER = Path(__file__).resolve().parent.parent / "php" / "runner.php"


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "php-runner", help="print the path of the persistent PHP runner (for [[command_jobs]] persistent = true)"
    )
    parser.set_defaults(handler=cmd_php_runner)


def cmd_php_runner(_args: argparse.Namespace) -> int:
    print(RUNNER)
    return exit_codes.OK
