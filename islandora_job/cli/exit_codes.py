"""Named exit codes of the ``islandora-job`` command, shared by every sub-command (docs/cli.md lists them).

Scripts retry on these, so each means one thing: in particular 3 is only "nothing was submitted, no server
reachable" (safe to retry), never "the job may have run" (4).
"""

from typing import Final

OK: Final = 0
#: The job failed (or: no such dead letter, a refused cancel, a corrupt dead-letter store).
JOB_FAILED: Final = 1
#: Usage or configuration error: nothing was submitted.
USAGE: Final = 2
#: No server reachable: nothing was submitted. Safe to retry.
UNREACHABLE: Final = 3
#: The server accepted a foreground job and then the connection was lost: it may or may not have run.
OUTCOME_UNKNOWN: Final = 4
#: The command did its work but could not write its output (stdout closed or full).
OUTPUT_FAILED: Final = 5
#: A bug: an error nobody foresaw, reported in one line (``ISLANDORA_JOB_DEBUG=1`` shows its traceback).
INTERNAL: Final = 70
