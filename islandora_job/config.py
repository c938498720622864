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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class PoolConfig:
    max_jobs: int = 10000
    max_lifetime: float = 86400.0
    lifetime_splay: float = 600.0
    max_rss_mb: int = 512
    shutdown_timeout: float = 30.0
    default_timeout: float = 600.0
    #: Seconds between defensive grabs while asleep, in case a NOOP was lost.
    idle_grab_interval: float = 15.0
    #: Seconds a server has to answer a grab (or the probe after connecting) before it is treated as down.
    grab_timeout: float = 1.0
    #: Cap of the backoff before restarting a child that crashed.
    restart_backoff_max: float = 30.0
    #: Extra processes that serve only one job or function each: ``{"islandora_derivatives" = 2}``.
    dedicated: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"
    json: bool = False


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str = ""


@dataclass(frozen=True, slots=True)
class DeadLettersConfig:
    path: str = "/var/lib/islandora-job/dead-letters.sqlite3"
    #: The store's cap (``max_size_mb``), retention (``max_age_days``), stored payload cap (``max_payload_kb``) and
    #: the longest a record waits for another process's lock (``lock_timeout``), in bytes and seconds.
    max_bytes: int = 256 * 1024 * 1024
    max_age: float = 30 * 86400.0
    max_payload: int = 1024 * 1024
    lock_timeout: float = 0.2


DEFAULT_DEAD_LETTERS: Final = DeadLettersConfig().path


@dataclass(frozen=True, slots=True)
class CommandJobConfig:
    #: Gearman functions served by this command: ``name``, ``names`` and what ``discover_argv`` printed.
    names: tuple[str, ...]
    argv: tuple[str, ...]
    allowed_sites: tuple[str, ...] = ()
    allowed_uids: tuple[int, ...] = ()
    timeout: float = 600.0
    max_output_bytes: int = 1024 * 1024
    #: A command printing more function names (e.g. ``drush islandora-job-list-functions``), run at start-up.
    discover_argv: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    source: str = "(defaults)"
    servers: tuple[ServerAddress, ...] = (ServerAddress("127.0.0.1"),)
    concurrency: int = 1
    jobs_modules: tuple[str, ...] = ()
    allow_root: bool = False
    entry_points: bool = True
    send_exceptions: bool = False
    multisite_prefixes: tuple[str, ...] = ()
    pool: PoolConfig = field(default_factory=PoolConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    dead_letters: DeadLettersConfig = field(default_factory=DeadLettersConfig)
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


#: Scalar keys that an environment variable may override: ``ISLANDORA_JOB_POOL_MAX_JOBS`` → ``pool.max_jobs``.
_ENV_KEYS: Final = (
    "concurrency",
    "allow_root",
    "entry_points",
    "send_exceptions",
    "jobs_modules",
    "multisite_prefixes",
    "pool.max_jobs",
    "pool.max_lifetime",
    "pool.lifetime_splay",
    "pool.max_rss_mb",
    "pool.shutdown_timeout",
    "pool.default_timeout",
    "pool.idle_grab_interval",
    "pool.grab_timeout",
    "pool.restart_backoff_max",
    "logging.level",
    "logging.json",
    "metrics.listen",
    "dead_letters.path",
    "dead_letters.max_size_mb",
    "dead_letters.max_age_days",
    "dead_letters.max_payload_kb",
    "dead_letters.lock_timeout",
)
_LIST_KEYS: Final = frozenset({"servers", "jobs_modules", "multisite_prefixes"})


def env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def _apply_environment(settings: dict[str, Any], env: Mapping[str, str], origins: dict[str, str]) -> None:
    if env.get(ENV_SERVERS, "").strip():
        settings["servers"] = [part for part in env[ENV_SERVERS].split(",") if part.strip()]
        origins["servers"] = ENV_SERVERS
    for key in _ENV_KEYS:
        name = env_name(key)
        if name not in env:
            continue
        text = env[name]
        value: Any = _env_list(text) if key in _LIST_KEYS else _env_scalar(text)
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
    cpus = os.cpu_count() or 1
    concurrency = cpus if top.get("concurrency", None) is None else top.integer("concurrency", 1, minimum=1)
    jobs_modules = top.strings("jobs_modules")
    allow_root = top.flag("allow_root", False)
    use_entry_points = top.flag("entry_points", True)
    send_exceptions = top.flag("send_exceptions", False)
    multisite_prefixes = top.strings("multisite_prefixes")

    pool_table = top.table("pool")
    pool = PoolConfig(
        max_jobs=pool_table.integer("max_jobs", 10000),
        max_lifetime=pool_table.number("max_lifetime", 86400.0),
        lifetime_splay=pool_table.number("lifetime_splay", 600.0),
        max_rss_mb=pool_table.integer("max_rss_mb", 512),
        shutdown_timeout=pool_table.number("shutdown_timeout", 30.0),
        default_timeout=pool_table.number("default_timeout", 600.0, positive=True),
        idle_grab_interval=pool_table.number("idle_grab_interval", 15.0, positive=True),
        grab_timeout=pool_table.number("grab_timeout", 1.0, positive=True),
        restart_backoff_max=pool_table.number("restart_backoff_max", 30.0, positive=True),
        dedicated=_dedicated(pool_table.table("dedicated")),
    )
    pool_table.done()

    logging_table = top.table("logging")
    level = logging_table.text("level", "INFO").upper()
    if level not in LOG_LEVELS:
        logging_table.fail("level", f"must be one of {', '.join(LOG_LEVELS)}")
    log_config = LoggingConfig(level=level, json=logging_table.flag("json", False))
    logging_table.done()

    metrics_table = top.table("metrics")
    listen = metrics_table.text("listen", "")
    if listen:
        try:
            ServerAddress.parse(listen)
        except ConfigError as exc:
            metrics_table.fail("listen", f"must be HOST:PORT ({exc})")
    metrics_table.done()

    dead_table = top.table("dead_letters")
    dead_letters = DeadLettersConfig(
        path=dead_table.text("path", DEFAULT_DEAD_LETTERS),
        max_bytes=dead_table.integer("max_size_mb", 256, minimum=1) * 1024 * 1024,
        max_age=dead_table.number("max_age_days", 30, positive=True) * 86400,
        max_payload=dead_table.integer("max_payload_kb", 1024, minimum=1) * 1024,
        lock_timeout=dead_table.number("lock_timeout", 0.2, positive=True),
    )
    dead_table.done()

    command_jobs = _command_jobs(top, check_commands)
    top.done()
    if top.errors:
        raise ConfigError("\n".join(top.errors))
    return WorkerConfig(
        source=source,
        servers=tuple(servers),
        concurrency=concurrency,
        jobs_modules=jobs_modules,
        allow_root=allow_root,
        entry_points=use_entry_points,
        send_exceptions=send_exceptions,
        multisite_prefixes=multisite_prefixes,
        pool=pool,
        logging=log_config,
        metrics=MetricsConfig(listen=listen),
        dead_letters=dead_letters,
        command_jobs=command_jobs,
        raw=json.loads(json.dumps(settings)),
    )


def _dedicated(table: _Table) -> dict[str, int]:
    counts = {}
    for name in list(table.data):
        counts[name] = table.integer(name, 0, minimum=1)
    return counts


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
        jobs.append(
            CommandJobConfig(
                names=tuple(dict.fromkeys(names)),
                argv=argv,
                allowed_sites=allowed_sites,
                allowed_uids=tuple(uids),
                timeout=table.number("timeout", 600.0, positive=True),
                max_output_bytes=table.integer("max_output_bytes", 1024 * 1024, minimum=1),
                discover_argv=discover_argv,
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
