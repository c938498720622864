"""Assembling a worker from a configuration: registry, command bridge, router, served functions.

Shared by the worker processes, ``list-jobs`` and ``check-config`` so that what they report is what would run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from islandora_job.errors import ConfigError
from islandora_job.worker.bridge import CommandJob, command_jobs, discover_names
from islandora_job.worker.config import WorkerConfig, with_discovered
from islandora_job.worker.registry import Registry, discover
from islandora_job.worker.router import Router


@dataclass(frozen=True, slots=True)
class Runtime:
    config: WorkerConfig
    registry: Registry
    bridge: dict[str, CommandJob]
    router: Router

    def functions_for(self, only: Sequence[str] | None) -> list[str]:
        """The Gearman functions a process serves: all, or those of the named jobs/functions (dedicated slots)."""
        every = self.router.functions()
        if only is None:
            return every
        chosen: list[str] = []
        for name in only:
            spec = self.registry.get(name)
            if spec is not None:
                chosen += self.registry.functions_of(name)
            elif name in every:
                chosen.append(name)
            else:
                raise ConfigError(f"{self.config.source}: pool.dedicated: no job or function named {name!r}")
        return list(dict.fromkeys(chosen))


def run_discovery(config: WorkerConfig) -> WorkerConfig:
    """Run each command job's ``discover_argv`` once and fold the names into the config."""
    found: dict[int, list[str]] = {}
    for index, entry in enumerate(config.command_jobs):
        if entry.discover_argv:
            try:
                found[index] = discover_names(entry.discover_argv)
            except OSError as exc:
                raise ConfigError(f"{config.source}: command_jobs[{index}].discover_argv: {exc}") from exc
    return with_discovered(config, found)


def build(config: WorkerConfig) -> Runtime:
    """Import the job modules and check that every name is served once. Raises ConfigError."""
    registry = discover(
        config.jobs_modules,
        use_entry_points=config.entry_points,
        multisite_prefixes=config.multisite_prefixes,
    )
    bridge = command_jobs(config.command_jobs)
    for function in bridge:
        spec = registry.by_function(function)
        if spec is not None and not registry.withdraw(function, "a command_jobs entry"):  # a built-in steps aside
            raise ConfigError(
                f"{config.source}: command_jobs: function {function!r} is also served by job {spec.name!r} "
                f"({spec.where})"
            )
    router = Router(registry, external=bridge, default_timeout=config.pool.default_timeout)
    if not router.functions():
        raise ConfigError(f"{config.source}: no jobs to serve (jobs_modules, entry points and command_jobs are empty)")
    return Runtime(config, registry, bridge, router)
