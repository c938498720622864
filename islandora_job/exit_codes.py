"""Every exit status the package's processes return, defined once (docs/cli.md and docs/worker.md list them).

Two audiences read them. Operators and scripts read the ``islandora-job`` command's status, so each value means
one thing: in particular 3 is only "nothing was submitted, no server reachable" (safe to retry), never "the job
may have run" (4). The pool supervisor reads its worker processes' status to decide how to replace them, and
systemd reads the supervisor's (``RestartPreventExitStatus=2``: a configuration error is not restarted).

A configuration error is 2 everywhere, for the command, the supervisor and a worker process alike. This module
imports nothing from the package, so the worker side and the command line can both depend on it.
"""

from typing import Final

# --- every process -----------------------------------------------------------------------------------------------
OK: Final = 0
#: Usage or configuration error: nothing was submitted or started (systemd does not restart the supervisor).
USAGE: Final = 2

# --- the islandora-job command -----------------------------------------------------------------------------------
#: The job failed (or: no such dead letter, a refused cancel, a corrupt dead-letter store).
JOB_FAILED: Final = 1
#: No server reachable: nothing was submitted. Safe to retry.
UNREACHABLE: Final = 3
#: The server accepted a foreground job and then the connection was lost: it may or may not have run.
OUTCOME_UNKNOWN: Final = 4
#: The command did its work but could not write its output (stdout closed or full).
OUTPUT_FAILED: Final = 5
#: A bug: an error nobody foresaw, reported in one line (``ISLANDORA_JOB_DEBUG=1`` shows its traceback).
INTERNAL: Final = 70

# --- the pool supervisor and its worker processes ------------------------------------------------------------------
#: The supervisor after a cold stop (second SIGTERM, or SIGINT): children were killed, gearmand requeues their jobs.
COLD_STOP: Final = 1
#: A worker process whose watchdog answered a hung job (the supervisor replaces it without delay). Only the
#: supervisor reads it; the value is sysexits' EX_SOFTWARE, as :data:`INTERNAL` is for the command.
HUNG_JOB: Final = 70
#: A worker process whose supervisor died (killed its command groups and left; nobody reads it but PID 1). The
#: same value as a cold stop: gearmand requeues the job it held.
SUPERVISOR_GONE: Final = 3
