"""``islandora-job php-runner``: the absolute path of the persistent PHP runner shipped in the package.

A worker.toml names that path in a ``persistent = true`` entry's argv (``php RUNNER --bootstrap FILE`` or
``drush ... php-script RUNNER``); see docs/worker.md. The path must survive upgrades and rollbacks, so when the
package lives in a release that a ``current`` link points at (the role's ``PREFIX/current`` →
``PREFIX/releases/VERSION``), the path printed goes through that link.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from islandora_job import exit_codes

RUNNER = Path(os.path.abspath(Path(__file__).parent.parent / "php" / "runner.php"))


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "php-runner", help="print the path of the persistent PHP runner (for [[command_jobs]] persistent = true)"
    )
    parser.set_defaults(handler=cmd_php_runner)


def cmd_php_runner(_args: argparse.Namespace) -> int:
    print(stable_path(RUNNER))
    return exit_codes.OK


def stable_path(path: Path) -> Path:
    """``path`` through a ``current`` link beside its release (or beside the release's directory), if one points at
    it: ``/opt/islandora-job/releases/0.3.0-ab/lib/…`` → ``/opt/islandora-job/current/lib/…``."""
    for release in path.parents:
        for holder in (release.parent, release.parent.parent):
            link = holder / "current"
            try:
                if link.is_symlink() and link.resolve() == release.resolve() and link != release:
                    return link / path.relative_to(release)
            except OSError:
                continue
    return path
