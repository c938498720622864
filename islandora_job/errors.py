"""The exceptions islandora_job raises.

One type per way things go wrong, so that a caller (and the CLI's exit codes) can tell "no server answered" from
"the server spoke nonsense" from "the job itself failed" without parsing messages.

Every exception the package raises on purpose derives from :class:`IslandoraJobError`, including those defined
next to the code that raises them (``ConnectFailed`` in connection.py, ``PayloadError`` in payload.py,
``BridgeRefused`` in bridge.py, ...). Where callers rely on a stdlib type, it stays as a second parent:
``ConnectFailed`` is also an ``OSError``, ``PayloadError`` also a ``ValueError``. The one exception outside the
hierarchy is :class:`islandora_job.worker.router.Fail`: job code raises it, not the package. tests/unit/test_errors.py
checks every class of the package.
"""

from __future__ import annotations

from collections.abc import Sequence


class IslandoraJobError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(IslandoraJobError):
    """A configuration value is wrong; the message names the file, key or variable."""


class ServerUnavailable(IslandoraJobError):
    """No configured server could be reached; lists every address tried and why each failed."""

    def __init__(self, attempts: Sequence[tuple[str, str]]) -> None:
        self.attempts = list(attempts)
        if self.attempts:
            detail = "; ".join(f"{address}: {reason}" for address, reason in self.attempts)
        else:
            detail = "no servers configured"
        super().__init__(f"no Gearman server reachable ({detail})")


class ConnectionLost(IslandoraJobError):
    """An established connection broke (reset, closed by the server, or a write that timed out)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"connection to {address} lost: {reason}")
        self.address = address
        self.reason = reason


class ProtocolError(IslandoraJobError):
    """The peer sent bytes that are not valid Gearman (bad magic, unknown type, oversized or truncated packet).

    The connection that saw it is unusable and is closed; reconnecting starts from a clean stream.
    """


class JobError(IslandoraJobError):
    """A submitted job did not complete; ``handle`` is its Gearman job handle when one was assigned."""

    def __init__(self, message: str, handle: str | None = None) -> None:
        super().__init__(message)
        self.handle = handle


class JobFailed(JobError):
    """The worker reported WORK_FAIL (gearmand also sends this when a job hits --job-retries)."""


class JobException(JobError):
    """The worker reported WORK_EXCEPTION; ``data`` is the exception text it sent."""

    def __init__(self, data: str, handle: str | None = None) -> None:
        super().__init__(f"job raised: {data}" if data else "job raised an exception", handle)
        self.data = data


class JobTimeout(JobError):
    """The client stopped waiting. The job may still run: gearmand has no way to withdraw a running job."""
