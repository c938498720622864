"""The job registry: the ``@job`` decorator and the discovery of job modules.

This replaces the Drupal module's ``hook_islandora_job_register_jobs``. A package declares its jobs with
``@islandora_job.job("name")`` in a module and names that module in the entry-point group ``islandora_job.jobs``;
an operator can add modules in the config (``jobs_modules``) or with ``--jobs-module``.

Theory of operation: the decorator only *describes* a job (a frozen :class:`JobSpec`, validated at declaration)
and appends it to a process-wide list of declarations. :func:`discover` imports the modules, takes the
declarations that belong to each (the module's own functions and the ones it re-exports) and builds a
:class:`Registry`, which refuses two different jobs under one name, or two jobs served on one Gearman function,
with an error naming both places. Nothing here runs a job.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Final, Literal, TypeVar

from islandora_job.errors import ConfigError
from islandora_job.payload import PayloadError, function_name

ENTRY_POINT_GROUP: Final = "islandora_job.jobs"
log = logging.getLogger(__name__)
PayloadKind = Literal["islandora", "raw", "any"]
PAYLOAD_KINDS: Final = ("islandora", "raw", "any")
F = TypeVar("F", bound=Callable[..., Any])


class RegistryError(ConfigError):
    """A job declaration or a job module is wrong (duplicate name, import failure, bad option)."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything the runtime needs to know about one job, fixed when the job is declared."""

    name: str
    fn: Callable[..., Any] = field(compare=False)
    alias: str | None = None
    timeout: float | None = None
    payload: PayloadKind = "islandora"
    retries: int = 0
    min_backoff: float = 1.0
    max_backoff: float = 60.0
    #: Where the job was declared, for error messages and ``list-jobs``: ``module.function (file:line)``.
    where: str = ""
    #: A built-in job that a site's own job or command entry replaces on its functions (see :meth:`Registry.add`).
    steps_aside: bool = False

    @property
    def module(self) -> str:
        return str(getattr(self.fn, "__module__", ""))

    def functions(self, multisite_prefixes: Sequence[str] = ()) -> list[str]:
        """The Gearman functions this job is served on: its alias or name, and each multisite-prefixed form."""
        names = [function_name(self.name, self.alias)]
        names += [function_name(self.name, self.alias, prefix) for prefix in multisite_prefixes]
        return list(dict.fromkeys(names))


#: Every job declared in this process, in declaration order.
_DECLARED: list[JobSpec] = []


def job(
    name: str,
    *,
    alias: str | None = None,
    timeout: float | None = None,
    payload: PayloadKind = "islandora",
    retries: int = 0,
    min_backoff: float = 1.0,
    max_backoff: float = 60.0,
    steps_aside: bool = False,
) -> Callable[[F], F]:
    """Declare a function as the job ``name``.

    ``alias`` is the Gearman function to serve instead of the name (the original module's alias);
    ``timeout`` overrides the pool's ``default_timeout`` (seconds); ``payload="raw"`` passes the job's bytes as the
    only argument instead of decoding an islandora_job payload, ``payload="any"`` passes the payload's args when the
    bytes are an islandora_job payload for this job and the bytes otherwise (a job that must answer anything);
    ``retries`` failed attempts are retried in the worker, waiting a capped exponential backoff from
    ``min_backoff`` to ``max_backoff`` seconds. ``steps_aside`` is for the built-in jobs: another job or a command
    entry on the same name or function replaces it instead of being refused as a duplicate.
    The function is returned unchanged, so it can still be called directly.
    """
    _check_name("name", name)
    if alias is not None:
        _check_name("alias", alias)
    if timeout is not None and not timeout > 0:
        raise RegistryError(f"job {name!r}: timeout must be a positive number of seconds, not {timeout!r}")
    if payload not in PAYLOAD_KINDS:
        raise RegistryError(f"job {name!r}: payload must be one of {', '.join(PAYLOAD_KINDS)}, not {payload!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise RegistryError(f"job {name!r}: retries must be a non-negative integer, not {retries!r}")
    if not 0 < min_backoff <= max_backoff:
        raise RegistryError(f"job {name!r}: need 0 < min_backoff <= max_backoff")

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise RegistryError(f"job {name!r}: @job must decorate a function")
        spec = JobSpec(
            name=name,
            fn=fn,
            alias=alias,
            timeout=None if timeout is None else float(timeout),
            payload=payload,
            retries=retries,
            min_backoff=float(min_backoff),
            max_backoff=float(max_backoff),
            where=_where(fn),
            steps_aside=steps_aside,
        )
        _DECLARED.append(spec)
        fn.__islandora_job__ = spec  # type: ignore[attr-defined]
        return fn

    return decorate


def _check_name(what: str, value: object) -> None:
    if not isinstance(value, str) or not value or "\0" in value or value != value.strip():
        raise RegistryError(f"job {what} must be a non-empty string without NUL or surrounding spaces: {value!r}")


def _where(fn: Callable[..., Any]) -> str:
    qualname = getattr(fn, "__qualname__", repr(fn))
    try:
        file = inspect.getsourcefile(fn) or "?"
        line = inspect.getsourcelines(fn)[1]
    except (OSError, TypeError):
        return f"{fn.__module__}.{qualname}"
    return f"{fn.__module__}.{qualname} ({file}:{line})"


@dataclass(frozen=True, slots=True)
class Registered:
    """A job in a registry, with the origin that brought it in (an entry point or a configured module)."""

    spec: JobSpec
    origin: str


class Registry:
    """Jobs by name. ``add`` refuses a second, different job under a name or on a Gearman function."""

    def __init__(self, multisite_prefixes: Sequence[str] = ()) -> None:
        self.multisite_prefixes = tuple(multisite_prefixes)
        self._by_name: dict[str, Registered] = {}
        self._by_function: dict[str, Registered] = {}

    def add(self, spec: JobSpec, origin: str = "") -> None:
        """Add a job; a second, different job under its name or on one of its functions is an error, unless one of
        the two is a built-in that steps aside (``steps_aside``): then the other one serves, with an INFO line."""
        known = self._by_name.get(spec.name)
        if known is not None and known.spec is spec:
            return
        try:
            functions = spec.functions(self.multisite_prefixes)
        except PayloadError as exc:
            raise RegistryError(f"job {spec.name!r}: {exc}") from exc
        # Each job already here that clashes with this one: by name (no function), or on a function.
        clashes: list[tuple[Registered, str | None]] = [(known, None)] if known is not None else []
        for function in functions:
            other = self._by_function.get(function)
            if other is not None and all(other is not rival for rival, _ in clashes):
                clashes.append((other, function))
        for rival, clash in clashes:
            if spec.steps_aside and not rival.spec.steps_aside:
                log.info("built-in job %r steps aside: job %r (%s) serves it", spec.name, rival.spec.name, rival.origin)
                return
            if rival.spec.steps_aside and not spec.steps_aside:
                log.info("built-in job %r steps aside: job %r (%s) serves it", rival.spec.name, spec.name, origin)
                self._drop(rival.spec.name)
            elif clash is None:
                raise RegistryError(
                    f"job {spec.name!r} is declared twice: {rival.spec.where} [{rival.origin}] and "
                    f"{spec.where} [{origin}]"
                )
            else:
                raise RegistryError(
                    f"Gearman function {clash!r} is served by two jobs: {rival.spec.name!r} "
                    f"({rival.spec.where}) and {spec.name!r} ({spec.where})"
                )
        entry = Registered(spec, origin)
        self._by_name[spec.name] = entry
        for function in functions:
            self._by_function[function] = entry

    def withdraw(self, function: str, by: str) -> bool:
        """A command entry (``by``) serves ``function``: a built-in job on it steps aside from that function (and
        leaves when it has none left), with an INFO line. False when a job that does not step aside serves it."""
        entry = self._by_function.get(function)
        if entry is None:
            return True
        if not entry.spec.steps_aside:
            return False
        log.info("built-in job %r steps aside from Gearman function %r: %s serves it", entry.spec.name, function, by)
        del self._by_function[function]
        if not self.functions_of(entry.spec.name):
            del self._by_name[entry.spec.name]
        return True

    def _drop(self, name: str) -> None:
        entry = self._by_name.pop(name)
        for function in [f for f, other in self._by_function.items() if other is entry]:
            del self._by_function[function]

    def functions_of(self, name: str) -> list[str]:
        """The Gearman functions the job ``name`` serves here (fewer than its declared ones once it stepped aside)."""
        return [function for function, entry in self._by_function.items() if entry.spec.name == name]

    def __iter__(self) -> Iterator[Registered]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> JobSpec | None:
        entry = self._by_name.get(name)
        return None if entry is None else entry.spec

    def by_function(self, function: str) -> JobSpec | None:
        entry = self._by_function.get(function)
        return None if entry is None else entry.spec

    def functions(self) -> list[str]:
        return list(self._by_function)


def jobs_of(module: ModuleType) -> list[JobSpec]:
    """The jobs a module brings: declared in it or a submodule of it, or re-exported by it."""
    name = module.__name__
    found = [spec for spec in _DECLARED if spec.module == name or spec.module.startswith(name + ".")]
    for value in list(vars(module).values()):
        spec = getattr(value, "__islandora_job__", None)
        if isinstance(spec, JobSpec) and spec not in found:
            found.append(spec)
    return found


def import_module(name: str, origin: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:  # any error in user code at import time is a start-up error
        raise RegistryError(f"{origin}: cannot import {name!r}: {type(exc).__name__}: {exc}") from exc


def entry_point_modules() -> list[tuple[str, str]]:
    """(module, origin) of every module registered in the ``islandora_job.jobs`` entry-point group."""
    found = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        dist = getattr(ep.dist, "name", "?") if ep.dist is not None else "?"
        found.append((ep.module, f"entry point {ep.name!r} of {dist}"))
    return found


def discover(
    modules: Iterable[str] = (),
    *,
    use_entry_points: bool = True,
    multisite_prefixes: Sequence[str] = (),
) -> Registry:
    """Import the entry-point modules, then ``modules``, and return the registry of their jobs."""
    sources = entry_point_modules() if use_entry_points else []
    sources += [(name, f"module {name!r} (config or --jobs-module)") for name in modules]
    registry = Registry(multisite_prefixes)
    for module_name, origin in sources:
        module = import_module(module_name, origin)
        for spec in jobs_of(module):
            registry.add(spec, origin)
    return registry
