"""Named exit codes of the ``islandora-job`` command, shared by every sub-command."""

from typing import Final

OK: Final = 0
JOB_FAILED: Final = 1
USAGE: Final = 2
UNREACHABLE: Final = 3
