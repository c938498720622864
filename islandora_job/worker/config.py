"""Worker configuration: a TOML file, then environment overrides, then command-line flags, in that order.

Every key is checked here, once, before anything starts; an error reads ``SOURCE: key: reason``, where SOURCE is
the file (or the environment variable, or the flag) the bad value came from. Unknown keys are errors too: a
misspelt ``max_job`` silently ignored is how a pool ends up never recycling. Every error of a file is reported at
once, one per line (an operator fixing them one ``check-config`` run at a time is how a deploy takes an hour).
``check-config`` also resolves each command's program (``argv[0]``) on PATH, at check time.

The merged settings are a plain dict (what TOML gives); :func:`build` turns one into a frozen
:class:`WorkerConfig`. The supervisor hands the same dict to its children as JSON, so a child cannot disagree with
its parent about the configuration.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Final

from islandora_job.address import ENV_SERVERS, ServerAddress
from islandora_job.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_PATH: Final = "/etc/islandora-job/worker.toml"
ENV_PREFIX: Final = "ISLANDORA_JOB_"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_ALLOWED_PLACEHOLDERS: Final = frozenset({"{site}", "{uid}"})


# --- the settings: each default is written once, in the dataclasses below ------------------------------------------


@dataclass(frozen=True, slots=True)
class _Setting:
    """How one dataclass field is read from the settings (file and environment).

    The field's type comes from its default (bool, int, float, str, tuple of str). ``key`` is the name in the file
    when it differs from the field's (a unit in the name: ``max_size_mb``); the file gives the value in units of
    ``scale`` (MiB, days) and the field holds it multiplied. ``when_absent`` computes the value when the key is not
    given (``concurrency``: the number of CPUs).
    """

    key: str | None = None
    scale: int = 1
    minimum: int = 0
    positive: bool = False
    when_absent: Callable[[], Any] | None = None

    def read(self, table: _Table, name: str, default: Any) -> Any:
        key = self.key or name
        if self.when_absent is not None and table.get(key, None) is None:
            return self.when_absent()
        if isinstance(default, bool):
            return table.flag(key, default)
        if isinstance(default, int):
            return table.integer(key, default // self.scale, minimum=self.minimum) * self.scale
        if isinstance(default, float):
            return table.number(key, default / self.scale, positive=self.positive) * self.scale
        if isinstance(default, str):
            return table.text(key, default)
        return table.strings(key, default)


def setting(
    default: Any,
    *,
    key: str | None = None,
    scale: int = 1,
    minimum: int = 0,
    positive: bool = False,
    when_absent: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field that the file sets (and an ``ISLANDORA_JOB_...`` variable overrides); see :class:`_Setting`.

    ``minimum`` bounds an integer; ``positive`` refuses 0 for a number of seconds (negative is always refused).
    """
    spec = _Setting(key=key, scale=scale, minimum=minimum, positive=positive, when_absent=when_absent)
    return field(default=default, metadata={"setting": spec})


def _cpu_count() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class PoolConfig:
    max_jobs: int = setting(10000)
    max_lifetime: float = setting(86400.0)
    lifetime_splay: float = setting(600.0)
    max_rss_mb: int = setting(512)
    shutdown_timeout: float = setting(30.0)
    default_timeout: float = setting(600.0, positive=True)
    #: Seconds between defensive grabs while asleep, in case a NOOP was lost.
    idle_grab_interval: float = setting(15.0, positive=True)
    #: Seconds a server has to answer a grab (or the probe after connecting) before it is treated as down.
    grab_timeout: float = setting(1.0, positive=True)
    #: Cap of the backoff before restarting a child that crashed.
    restart_backoff_max: float = setting(30.0, positive=True)
    #: Extra processes that serve only one job or function each: ``{"islandora_derivatives" = 2}``.
    dedicated: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    #: One of :data:`LOG_LEVELS` (any case in the file).
    level: str = setting("INFO")
    json: bool = setting(False)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    #: ``HOST:PORT`` of the metrics endpoint; empty: none.
    listen: str = setting("")


@dataclass(frozen=True, slots=True)
class DeadLettersConfig:
    path: str = setting("/var/lib/islandora-job/dead-letters.sqlite3")
    #: The store's cap (``max_size_mb``), retention (``max_age_days``), stored payload cap (``max_payload_kb``) and
    #: the longest a record waits for another process's lock (``lock_timeout``), in bytes and seconds.
    max_bytes: int = setting(256 * 1024 * 1024, key="max_size_mb", scale=1024 * 1024, minimum=1)
    max_age: float = setting(30 * 86400.0, key="max_age_days", scale=86400, positive=True)
    max_payload: int = setting(1024 * 1024, key="max_payload_kb", scale=1024, minimum=1)
    lock_timeout: float = setting(0.2, positive=True)


@dataclass(frozen=True, slots=True)
class DrupalConfig:
    """The Drupal site's database, where the module's job status table lives (see ``worker/drupal_status.py``).

    ``database``: ``mysql://USER:PASSWORD@HOST[:PORT]/DB`` or ``postgresql://...``; empty: the table is not kept.
    ``sites``: payload ``site`` (the site's ``$base_url``) → database, for multisite installs whose sites have
    databases of their own (``[drupal.sites]``); a site not listed uses ``database``.
    """

    database: str = setting("")
    #: Drupal's table prefix (``$databases[...]['prefix']``) and the module's table name.
    prefix: str = setting("")
    table: str = setting("islandora_job_job_status")
    #: Seconds the table may cost a job per statement (connect, each query); then the job goes on without it.
    timeout: float = setting(2.0, positive=True)
    #: Cap of the backoff between reconnections to a database that failed (jobs skip the table meanwhile).
    retry_max: float = setting(30.0, positive=True)
    sites: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommandJobConfig:
    #: Gearman functions served by this command: ``name``, ``names`` and what ``discover_argv`` printed.
    names: tuple[str, ...]
    argv: tuple[str, ...]
    allowed_sites: tuple[str, ...] = ()
    allowed_uids: tuple[int, ...] = ()
    timeout: float = setting(600.0, positive=True)
    max_output_bytes: int = setting(1024 * 1024, minimum=1)
    #: A command printing more function names (e.g. ``drush islandora-job-list-functions``), run at start-up.
    discover_argv: tuple[str, ...] = ()
    #: The persistent PHP runner (``islandora-job php-runner``): argv started once per worker process, not per job;
    #: replaced after ``max_jobs`` jobs or once its RSS passes ``max_rss_mb`` (worker/persistent.py).
    persistent: bool = setting(False)
    max_jobs: int = setting(500, minimum=1)
    max_rss_mb: int = setting(512, minimum=1)
    #: Whether the worker keeps the Drupal status table ([drupal]) for this command's jobs. Off: a command (the
    #: drush router, a persistent runner under drush) keeps the table itself, and a row has one writer.
    status_table: bool = setting(False)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    source: str = "(defaults)"
    servers: tuple[ServerAddress, ...] = (ServerAddress("127.0.0.1"),)
    #: Not given: one worker process per CPU.
    concurrency: int = setting(1, minimum=1, when_absent=_cpu_count)
    jobs_modules: tuple[str, ...] = setting(())
    allow_root: bool = setting(False)
    entry_points: bool = setting(True)
    send_exceptions: bool = setting(False)
    multisite_prefixes: tuple[str, ...] = setting(())
    pool: PoolConfig = field(default_factory=PoolConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    dead_letters: DeadLettersConfig = field(default_factory=DeadLettersConfig)
    drupal: DrupalConfig = field(default_factory=DrupalConfig)
    command_jobs: tuple[CommandJobConfig, ...] = ()
    #: The merged settings this was built from (what a child process receives).
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> str:
        return json.dumps({"source": self.source, "settings": self.raw})


def from_json(text: str) -> WorkerConfig:
    document = json.loads(text)
    return build(document["settings"], document["source"])


# --- loading and merging -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overrides:
    """Values from command-line flags (``None`` or empty = not given)."""

    servers: Sequence[str] = ()
    jobs_modules: Sequence[str] = ()
    concurrency: int | None = None


def load(
    path: str | None = None,
    overrides: Overrides = Overrides(),
    environ: Mapping[str, str] | None = None,
    *,
    check_commands: bool = False,
) -> WorkerConfig:
    """Read the file (the default path may be absent), apply the environment, then the flags, and validate.

    ``check_commands``: also refuse a command job whose program cannot be found or run (see :func:`program_problem`).
    """
    env = os.environ if environ is None else environ
    source = path or env.get(ENV_PREFIX + "CONFIG") or DEFAULT_PATH
    explicit = path is not None or ENV_PREFIX + "CONFIG" in env
    settings: dict[str, Any] = {}
    if explicit or os.path.exists(source):
        settings = read_file(source)
    origins: dict[str, str] = {}
    _apply_environment(settings, env, origins)
    if overrides.servers:
        settings["servers"] = list(overrides.servers)
        origins["servers"] = "--server"
    if overrides.jobs_modules:
        settings["jobs_modules"] = [*settings.get("jobs_modules", []), *overrides.jobs_modules]
        origins["jobs_modules"] = "--jobs-module"
    if overrides.concurrency is not None:
        settings["concurrency"] = overrides.concurrency
        origins["concurrency"] = "--concurrency"
    return build(settings, source, origins, check_commands=check_commands)


def read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; a file saved as Latin-1 is bad input, not a crash
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (line {line}: byte 0x{exc.object[exc.start]:02x})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _settings(cls: type) -> Iterator[tuple[str, _Setting, Any]]:
    """The fields of ``cls`` that are settings: (field name, how it is read, its default)."""
    for item in fields(cls):
        spec = item.metadata.get("setting")
        if spec is not None:
            yield item.name, spec, item.default


def _sections() -> Iterator[tuple[str, type]]:
    """The tables of the file (``[pool]``, ...): the fields of :class:`WorkerConfig` that hold a settings class."""
    for item in fields(WorkerConfig):
        if is_dataclass(item.default_factory):
            yield item.name, item.default_factory


def _env_keys() -> dict[str, bool]:
    """Every setting an environment variable may override, ``section.key`` → whether it is a list.

    ``ISLANDORA_JOB_POOL_MAX_JOBS`` → ``pool.max_jobs``. Derived from the dataclasses, so a new setting is
    overridable as soon as it is declared.
    """
    keys = {spec.key or name: isinstance(default, tuple) for name, spec, default in _settings(WorkerConfig)}
    for section, cls in _sections():
        keys |= {f"{section}.{spec.key or name}": isinstance(default, tuple) for name, spec, default in _settings(cls)}
    return keys


_ENV_KEYS: Final = _env_keys()


def env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def _apply_environment(settings: dict[str, Any], env: Mapping[str, str], origins: dict[str, str]) -> None:
    if env.get(ENV_SERVERS, "").strip():
        settings["servers"] = [part for part in env[ENV_SERVERS].split(",") if part.strip()]
        origins["servers"] = ENV_SERVERS
    for key, is_list in _ENV_KEYS.items():
        name = env_name(key)
        if name not in env:
            continue
        text = env[name]
        value: Any = _env_list(text) if is_list else _env_scalar(text)
        section, _, leaf = key.rpartition(".")
        target = settings
        if section:
            table = settings.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{name}: [{section}] is not a table in the config file")
            target = table
        target[leaf] = value
        origins[key] = name


def _env_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _env_scalar(text: str) -> Any:
    """``42`` → 42, ``1.5`` → 1.5, ``true``/``yes``/``1`` → True where a bool is wanted (see ``_bool``), else text."""
    stripped = text.strip()
    try:
        return tomllib.loads(f"v = {stripped}")["v"]
    except tomllib.TOMLDecodeError:
        return stripped


# --- validation ---------------------------------------------------------------------------------------------------


class _Table:
    """Typed access to one table of the settings; errors name the key and where its value came from.

    An error is collected in ``errors`` (shared by the tables of one file) and the accessor returns its default, so
    that validation goes on and every error is reported at once (:func:`build` raises them together).
    """

    def __init__(
        self, data: Any, source: str, prefix: str, origins: Mapping[str, str], errors: list[str] | None = None
    ) -> None:
        self.source, self.prefix, self.origins = source, prefix, origins
        self.errors: list[str] = [] if errors is None else errors
        self.used: set[str] = set()
        if not isinstance(data, dict):
            self.fail("", "must be a table")
            data = {}
        self.data: dict[str, Any] = data

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def fail(self, name: str, reason: str, fallback: Any = None) -> Any:
        """Record an error about key ``name`` and return ``fallback`` (the value validation goes on with)."""
        key = self.key(name).rstrip(".") or "(top level)"
        origin = self.origins.get(key)
        self.errors.append(f"{origin}: {reason}" if origin is not None else f"{self.source}: {key}: {reason}")
        return fallback

    def get(self, name: str, default: Any) -> Any:
        self.used.add(name)
        return self.data.get(name, default)

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            return int(self.fail(name, f"must be an integer, not {value!r}", default))
        if value < minimum:
            return int(self.fail(name, f"must be at least {minimum}, not {value}", default))
        return int(value)

    def number(self, name: str, default: float, *, positive: bool = False) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return float(self.fail(name, f"must be a number of seconds, not {value!r}", default))
        if not math.isfinite(value):  # TOML has nan and inf: a nan deadline never expires, nor compares
            return float(self.fail(name, f"must be a finite number, not {value}", default))
        if value < 0 or (positive and value == 0):
            reason = f"must be {'greater than' if positive else 'at least'} 0, not {value}"
            return float(self.fail(name, reason, default))
        return float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
        if not isinstance(value, bool):
            return bool(self.fail(name, f"must be true or false, not {value!r}", default))
        return bool(value)

    def text(self, name: str, default: str) -> str:
        value = self.get(name, default)
        if not isinstance(value, str):
            return str(self.fail(name, f"must be a string, not {value!r}", default))
        if "\0" in value:
            return str(self.fail(name, f"must not contain a NUL character: {value!r}", default))
        return str(value)

    def strings(self, name: str, default: Sequence[str] = (), *, nonempty: bool = False) -> tuple[str, ...]:
        """A list of non-empty strings. None may hold a NUL (TOML allows ``\\u0000``): no argv, path, host or
        Gearman function name can carry one, and the error is found here rather than when a job runs."""
        value = self.get(name, list(default))
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            return tuple(self.fail(name, f"must be a list of non-empty strings, not {value!r}", tuple(default)))
        if any("\0" in item for item in value):
            return tuple(self.fail(name, f"must not contain a NUL character: {value!r}", tuple(default)))
        if nonempty and not value:
            self.fail(name, "must not be empty")
        return tuple(value)

    def table(self, name: str) -> _Table:
        return _Table(self.get(name, {}), self.source, f"{self.prefix}{name}.", self.origins, self.errors)

    def done(self) -> None:
        for unknown in sorted(set(self.data) - self.used):
            self.fail(unknown, "unknown key")


def build(
    settings: Mapping[str, Any],
    source: str,
    origins: Mapping[str, str] | None = None,
    *,
    check_commands: bool = False,
) -> WorkerConfig:
    """Validate merged settings; raises :class:`ConfigError` with every bad value, one ``SOURCE: key: reason`` a
    line. ``check_commands`` (check-config): also resolve each command's program (:func:`program_problem`) and
    refuse a server name that cannot be a host (:func:`~islandora_job.address.host_problem`); a running worker
    treats such a server as down and serves the others."""
    top = _Table(dict(settings), source, "", origins or {})
    server_texts = top.strings("servers", ["127.0.0.1:4730"], nonempty=True)
    servers = []
    for text in server_texts:
        try:
            servers.append(ServerAddress.parse(text, check_host=check_commands))
        except ConfigError as exc:
            top.fail("servers", str(exc))
    values = _read(top, WorkerConfig)
    for section, cls in _sections():
        table = top.table(section)
        section_values = _read(table, cls)
        if cls is PoolConfig:
            section_values["dedicated"] = _dedicated(table.table("dedicated"))
        elif cls is LoggingConfig:
            section_values["level"] = section_values["level"].upper()
            if section_values["level"] not in LOG_LEVELS:
                table.fail("level", f"must be one of {', '.join(LOG_LEVELS)}")
        elif cls is MetricsConfig and section_values["listen"]:
            try:
                ServerAddress.parse(section_values["listen"])
            except ConfigError as exc:
                table.fail("listen", f"must be HOST:PORT ({exc})")
        elif cls is DrupalConfig:
            section_values["sites"] = _drupal_databases(table, section_values)
        table.done()
        values[section] = cls(**section_values)

    command_jobs = _command_jobs(top, check_commands)
    top.done()
    if top.errors:
        raise ConfigError("\n".join(top.errors))
    return WorkerConfig(
        source=source,
        servers=tuple(servers),
        command_jobs=command_jobs,
        raw=json.loads(json.dumps(settings)),
        **values,
    )


def _read(table: _Table, cls: type) -> dict[str, Any]:
    """The values of the settings of ``cls`` in ``table`` (a bad one is recorded and its default taken)."""
    return {name: spec.read(table, name, default) for name, spec, default in _settings(cls)}


def _dedicated(table: _Table) -> dict[str, int]:
    counts = {}
    for name in list(table.data):
        counts[name] = table.integer(name, 0, minimum=1)
    return counts


def _drupal_databases(table: _Table, values: dict[str, Any]) -> dict[str, str]:
    """Check [drupal]'s database URLs, table prefix and name; return ``[drupal.sites]``. An error shows a URL
    with its password replaced by ``***``: it names the key, never the secret."""
    from islandora_job.worker.drupal_status import database_problem, identifier_problem, redact

    if values["database"] and (problem := database_problem(values["database"])):
        values["database"] = table.fail("database", f"{problem} (got {redact(values['database'])!r})", "")
    for key in ("prefix", "table"):
        if problem := identifier_problem(values[key], empty_ok=key == "prefix"):
            values[key] = table.fail(key, problem, "")
    sites_table = table.table("sites")
    sites = {}
    for site in list(sites_table.data):
        url = sites_table.text(site, "")
        problem = database_problem(url)
        if problem:
            sites_table.fail(site, f"{problem} (got {redact(url)!r})")
        else:
            sites[site] = url
    secrets = [
        value for value in [table.data.get("database"), *sites_table.data.values()] if isinstance(value, str) and value
    ]
    for index, line in enumerate(table.errors):  # e.g. the NUL check of text() shows the value it refused
        for secret in secrets:
            line = line.replace(repr(secret), repr(redact(secret))).replace(secret, redact(secret))
        table.errors[index] = line
    return sites


def _command_jobs(top: _Table, check_commands: bool) -> tuple[CommandJobConfig, ...]:
    value = top.get("command_jobs", [])
    if not isinstance(value, list):
        return tuple(top.fail("command_jobs", "must be an array of tables ([[command_jobs]])", ()))
    jobs = []
    for index, entry in enumerate(value):
        table = _Table(entry, top.source, f"command_jobs[{index}].", top.origins, top.errors)
        names = list(table.strings("names"))
        if "name" in table.data:
            names.insert(0, table.text("name", ""))
        discover_argv = table.strings("discover_argv")
        if not names and not discover_argv:
            table.fail("name", "give name, names or discover_argv")
        argv = table.strings("argv", nonempty=True)
        for arg in argv:
            for placeholder in _PLACEHOLDER.findall(arg):
                if placeholder not in _ALLOWED_PLACEHOLDERS:
                    table.fail("argv", f"unknown placeholder {placeholder} (only {{site}} and {{uid}})")
        uids = table.get("allowed_uids", [])
        if not isinstance(uids, list) or not all(isinstance(u, int) and not isinstance(u, bool) for u in uids):
            uids = table.fail("allowed_uids", f"must be a list of integers, not {uids!r}", [])
        elif any(uid < 0 for uid in uids):
            uids = table.fail("allowed_uids", f"user ids are not negative: {[u for u in uids if u < 0]!r}", [])
        if check_commands:
            for key, command in (("argv", argv), ("discover_argv", discover_argv)):
                problem = program_problem(command[0]) if command else None
                if problem:
                    table.fail(key, problem)
        allowed_sites = table.strings("allowed_sites")
        if any("{site}" in arg for arg in argv) and not allowed_sites:
            table.fail("allowed_sites", "argv uses {site}, so allowed_sites must list the sites")
        if any("{uid}" in arg for arg in argv) and not uids:
            table.fail("allowed_uids", "argv uses {uid}, so allowed_uids must list the user ids")
        if table.data.get("persistent") is True and any(_PLACEHOLDER.search(arg) for arg in argv):
            table.fail("argv", "a persistent runner is started once, not per job: no {site} or {uid} in its argv")
        jobs.append(
            CommandJobConfig(
                names=tuple(dict.fromkeys(names)),
                argv=argv,
                allowed_sites=allowed_sites,
                allowed_uids=tuple(uids),
                discover_argv=discover_argv,
                **_read(table, CommandJobConfig),
            )
        )
        table.done()
    return tuple(jobs)


def program_problem(program: str, path: str | None = None) -> str | None:
    """Why ``program`` (a command's ``argv[0]``) cannot be run, or None when it can.

    A bare name (``drush``, ``php``) is looked up on ``path`` (default: this process's PATH, else the system
    default), as ``execvp`` will; a name with a slash is taken as given. It must be a regular file we may execute.
    A name with a placeholder is only known per job, so it is not checked.
    """
    if "{" in program:
        return None
    if "/" in program:
        candidates = [program]
    else:
        search = os.environ.get("PATH", os.defpath) if path is None else path
        candidates = [os.path.join(directory or ".", program) for directory in search.split(os.pathsep)]
    not_executable = None
    for candidate in candidates:
        try:
            mode = os.stat(candidate).st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode) and os.access(candidate, os.X_OK):
            return None
        not_executable = not_executable or candidate
    if not_executable is not None:
        return f"program {not_executable!r} is not an executable file"
    if "/" in program:
        return f"program {program!r} not found"
    return f"program {program!r} not found on PATH ({search})"


def check_user(config: WorkerConfig, euid: Callable[[], int] = os.geteuid) -> None:
    """Refuse to run jobs as root unless the config allows it explicitly."""
    if euid() == 0 and not config.allow_root:
        raise ConfigError(
            f"{config.source}: allow_root: refusing to run as root; run as a service user "
            f"(or set allow_root = true, or {env_name('allow_root')}=true)"
        )


def with_discovered(config: WorkerConfig, discovered: Mapping[int, Sequence[str]]) -> WorkerConfig:
    """The config with function names found by each command job's ``discover_argv`` added to its ``names``.

    The result's settings carry the names, so children do not run the discovery command again.
    """
    if not discovered:
        return config
    settings = json.loads(json.dumps(config.raw))
    for index, names in discovered.items():
        entry = settings["command_jobs"][index]
        entry["names"] = list(dict.fromkeys([*entry.get("names", []), *names]))
        entry.pop("discover_argv", None)
    return build(settings, config.source)
