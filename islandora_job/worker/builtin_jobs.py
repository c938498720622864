"""Jobs that come with islandora-job itself (registered through the ``islandora_job.jobs`` entry point).

Both answer any payload (``payload="any"``): monitoring sends whatever its tool sends (``gearman -f
islandora_job.ping`` sends plain text or nothing), and a failed check must mean a dead worker, never a dead letter.
Both step aside for a site's own job or command entry on the same name or function (``steps_aside``).
"""

from __future__ import annotations

from typing import Final

from islandora_job.worker.registry import job

#: The Drupal module's cron heartbeat: job name, and its alias, the Gearman function ``hook_cron`` submits to.
HEARTBEAT: Final = "islandora_job_heartbeat"
HEARTBEAT_FUNCTION: Final = "ijh"


@job("islandora_job.ping", timeout=10, payload="any", steps_aside=True)
def ping(*_args: object) -> str:
    """Answer ``pong``: for smoke tests and monitoring."""
    return "pong"


@job(HEARTBEAT, alias=HEARTBEAT_FUNCTION, timeout=10, payload="any", steps_aside=True)
def heartbeat(*_args: object) -> bool:
    """The module's ``islandora_job_heartbeat('ping', time())``: it returns TRUE (PHP echoes ``1``), so that a
    site's cron heartbeat is served and does not stay queued for ever. A normal Python job in every other way: its
    outcome goes through the router like any job's (the module's status table row included, when kept)."""
    return True
