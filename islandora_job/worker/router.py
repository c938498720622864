"""The router: from a job assignment (function, handle, unique key, payload bytes) to an outcome. No I/O.

What the original drush ``islandora-job-router`` did for each job, without a bootstrap per job: decode the payload,
find the job (by name, alias or multisite-prefixed function), call it with the payload's ``args`` as positional
arguments, and turn what happened into one of three outcomes, each sent by the worker as one packet:

* ``complete``: the return value as bytes: None, booleans and numbers as PHP's ``echo`` prints them (True → ``1``,
  False and None → empty), str → UTF-8, bytes as is, anything else → JSON;
* ``exception``: the reason as text; the worker sends WORK_EXCEPTION, which gearmand delivers as such to clients
  that asked for exceptions and as WORK_FAIL to the others: one packet, never both;
* ``fail``: a plain WORK_FAIL, when the job raises :class:`Fail` (the original's "non-zero exit").

An unknown ``func`` is a failure (the original silently succeeded). So is a ``func`` naming a job other than the one
the Gearman function serves: the function decides what runs (``pool.dedicated``, time limits and the operator's
view all key on it), so a payload cannot pick another job. A command job gets the payload unchanged: the program
behind it (the drush router) resolves ``func`` itself. A value that cannot be encoded (not JSON, nested too deeply)
is a failure of that job, never an exception in the worker. Retries happen here, in the worker, because a
worker cannot tell a background job from a foreground one: the client only sees the final outcome.

The worker passes :class:`Hooks`: progress reporting, and ``arm`` before each attempt (the time limit of that
attempt; the worker's watchdog enforces it) and ``sleep`` between attempts.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from islandora_job.backoff import Backoff
from islandora_job.payload import DEFAULT_SITE, Payload, PayloadError, decode
from islandora_job.worker import context as job_context
from islandora_job.worker import php_echo
from islandora_job.worker.context import JobContext, NullReporter, Reporter
from islandora_job.worker.registry import JobSpec, Registry

log = logging.getLogger(__name__)

Status = Literal["complete", "exception", "fail"]
#: Longest reason sent to a client in WORK_EXCEPTION (the full text is in the log).
MAX_REASON = 4096


class Fail(Exception):
    """Raise to fail a job plainly (WORK_FAIL, no exception text, no retry), as the original's non-zero exit did."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """A job the server gave us (JOB_ASSIGN_UNIQ)."""

    function: str
    handle: str
    unique: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    data: bytes = b""
    reason: str = ""
    #: Attempts made; 0 when the job never ran (bad payload, unknown job).
    attempts: int = 0
    #: Whether the job completed: asked several times per job, so computed once (it was a property).
    ok: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ok", self.status == "complete")

    @classmethod
    def failure(cls, reason: str, attempts: int = 0) -> Outcome:
        return cls("exception", reason=reason[:MAX_REASON], attempts=attempts)


class Hooks(Protocol):
    """What the router needs from the worker while a job runs."""

    reporter: Reporter

    def arm(self, seconds: float) -> None:
        """Start the time limit of one attempt."""

    def sleep(self, seconds: float) -> None:
        """Wait between attempts."""


class ExternalJob(Protocol):
    """A job run outside this process (the command bridge): takes the payload bytes, returns an outcome."""

    name: str
    timeout: float

    def run(self, assignment: Assignment, payload: Payload | None) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class Prepared:
    """A resolved job, ready to run: ``timeout`` is known before it starts."""

    assignment: Assignment
    name: str
    timeout: float
    retries: int
    spec: JobSpec | None = None
    external: ExternalJob | None = None
    payload: Payload | None = None


class Router:
    def __init__(
        self,
        registry: Registry,
        *,
        external: Mapping[str, ExternalJob] | None = None,
        default_timeout: float = 600.0,
    ) -> None:
        self.registry = registry
        self.external = dict(external or {})
        self.default_timeout = default_timeout
        self._aliases = {spec.alias: spec for spec in (r.spec for r in registry) if spec.alias}

    def functions(self) -> list[str]:
        """Every Gearman function to CAN_DO."""
        return list(dict.fromkeys([*self.registry.functions(), *self.external]))

    def prepare(self, assignment: Assignment) -> Prepared | Outcome:
        """Resolve the job for an assignment, or the failure outcome when the payload or the name is wrong."""
        external = self.external.get(assignment.function)
        if external is not None:
            payload = None
            with contextlib.suppress(PayloadError):  # the bridge needs one only for {site}/{uid}
                payload = decode(assignment.data)
            return Prepared(assignment, external.name, external.timeout, 0, external=external, payload=payload)
        spec = self.registry.by_function(assignment.function)
        if spec is not None and spec.payload == "raw":
            return self._prepared(assignment, spec, None)
        if spec is not None and spec.payload == "any":
            return self._prepared(assignment, spec, self._own_payload(assignment.data, spec))
        try:
            payload = decode(assignment.data)
        except PayloadError as exc:
            return Outcome.failure(f"bad payload: {exc}")
        spec = self._resolve(payload)
        if spec is None:
            return Outcome.failure(f"unknown job {payload.func!r}")
        if not self._serves(spec, assignment.function):
            return Outcome.failure(
                f"payload func {payload.func!r} names job {spec.name!r}, which Gearman function "
                f"{assignment.function!r} does not serve"
            )
        if spec.payload == "raw":
            return Outcome.failure(f"job {spec.name!r} takes raw bytes, not an islandora_job payload")
        return self._prepared(assignment, spec, payload)

    def _prepared(self, assignment: Assignment, spec: JobSpec, payload: Payload | None) -> Prepared:
        timeout = spec.timeout if spec.timeout is not None else self.default_timeout
        return Prepared(assignment, spec.name, timeout, spec.retries, spec=spec, payload=payload)

    def _own_payload(self, data: bytes, spec: JobSpec) -> Payload | None:
        """For a ``payload="any"`` job: the islandora_job payload when the bytes are one naming this job, else None
        (the job gets the bytes): such a job answers whatever it is sent."""
        try:
            payload = decode(data)
        except PayloadError:
            return None
        return payload if self._resolve(payload) is spec else None

    def _resolve(self, payload: Payload) -> JobSpec | None:
        """``func`` is the job's name (the original module sends the un-aliased name); accept its alias and a
        multisite-prefixed form too."""
        spec = self.registry.get(payload.func) or self._aliases.get(payload.func)
        if spec is None:
            spec = self.registry.by_function(payload.func)
        if spec is None and payload.site and payload.site != DEFAULT_SITE:
            prefix = f"{payload.site}_"
            if payload.func.startswith(prefix):
                bare = payload.func[len(prefix) :]
                spec = self.registry.get(bare) or self._aliases.get(bare)
        return spec

    def _serves(self, spec: JobSpec, function: str) -> bool:
        """Whether ``function`` is the job's name, its alias, or one of their multisite-prefixed forms (the
        configured prefixes: a payload's ``site`` is not trusted to make up new ones)."""
        bases = [spec.name] if spec.alias is None else [spec.name, spec.alias]
        if function in bases:
            return True
        return any(function == f"{prefix}_{base}" for prefix in self.registry.multisite_prefixes for base in bases)

    def run(self, prepared: Prepared, hooks: Hooks) -> Outcome:
        """Run a prepared job to its final outcome, retrying as the job declares."""
        if prepared.external is not None:
            hooks.arm(prepared.timeout)
            try:
                return prepared.external.run(prepared.assignment, prepared.payload)
            except Exception as exc:  # a bug in the bridge costs this job, not the worker process
                log.error("job %s handle=%s: %s", prepared.name, prepared.assignment.handle, exc, exc_info=True)
                return Outcome.failure(f"command job {prepared.name!r} failed: {_describe(exc)}", 1)
        spec = prepared.spec
        assert spec is not None
        backoff: Backoff | None = None  # made on the first failure: a Backoff seeds a random generator
        attempt = 1
        while True:
            hooks.arm(prepared.timeout)
            outcome = self._attempt(prepared, spec, attempt, hooks.reporter)
            if outcome.ok or outcome.status == "fail" or attempt > spec.retries:
                return outcome
            backoff = backoff or Backoff(initial=spec.min_backoff, cap=spec.max_backoff)
            delay = backoff.next_delay()
            log.warning(
                "job %s handle=%s attempt %d/%d failed (%s); retrying in %.2fs",
                spec.name,
                prepared.assignment.handle,
                attempt,
                spec.retries + 1,
                outcome.reason,
                delay,
            )
            hooks.sleep(delay)
            attempt += 1

    def _attempt(self, prepared: Prepared, spec: JobSpec, attempt: int, reporter: Reporter) -> Outcome:
        assignment, payload = prepared.assignment, prepared.payload
        context = JobContext(
            name=spec.name,
            function=assignment.function,
            handle=assignment.handle,
            unique=assignment.unique,
            site=payload.site if payload else None,
            uid=payload.uid if payload else None,
            attempt=attempt,
            reporter=reporter,
        )
        args: tuple[Any, ...] = (assignment.data,) if payload is None else payload.args
        try:
            token = job_context.enter(context)
            try:
                value = spec.fn(*args)
            finally:
                job_context.leave(token)
        except Fail as exc:
            return Outcome("fail", reason=str(exc) or "failed", attempts=attempt)
        except SystemExit as exc:
            return Outcome.failure(f"job called sys.exit({exc.code!r})", attempt)
        except Exception as exc:
            log.debug("job %s handle=%s raised", spec.name, assignment.handle, exc_info=True)
            return Outcome.failure(_describe(exc), attempt)
        try:
            return Outcome("complete", data=to_bytes(value), attempts=attempt)
        except RecursionError:
            return Outcome.failure("job returned a value nested too deeply to encode as JSON", attempt)
        except (TypeError, ValueError) as exc:
            return Outcome.failure(f"job returned a value that is not JSON-serialisable: {exc}", attempt)
        except Exception as exc:  # whatever a user type's methods raised while being encoded
            return Outcome.failure(f"job returned a value that cannot be encoded: {_describe(exc)}", attempt)


def to_bytes(value: object) -> bytes:
    """A job's return value as the bytes of WORK_COMPLETE: scalars as PHP's ``echo`` prints them (what the drush
    router sent), text as UTF-8, bytes as they are, lists and dicts as JSON (where PHP would print ``Array``)."""
    if value is None or isinstance(value, bool | int | float):
        return php_echo.echo(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: For callers building a router in tests: a hooks object with no time limit and real sleeps.
class PlainHooks:
    def __init__(self, reporter: Reporter | None = None, sleep: Callable[[float], None] | None = None) -> None:
        self.reporter: Reporter = reporter or NullReporter()
        self._sleep = sleep
        self.armed: list[float] = []

    def arm(self, seconds: float) -> None:
        self.armed.append(seconds)

    def sleep(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
