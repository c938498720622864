"""The exporter's settings: flags over an optional TOML file's ``[exporter]`` table over defaults.

A file of its own rather than a table in the worker's file: the exporter usually runs where no worker does (next
to gearmand, or on a monitoring host). It can still read a worker's file (``worker_config``) for the servers and the
dead-letter store, when it runs beside that worker.

    [exporter]
    servers = ["10.0.0.1:4730", "10.0.0.2:4730"]
    listen = "127.0.0.1:9465"
    timeout = 3            # seconds for one server's whole answer
    refresh = 10           # seconds between the page's reloads
    max_functions = 5000   # per server, busiest first
    worker_config = "/etc/islandora-job/worker.toml"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from islandora_job.address import ServerAddress, parse_servers, servers_from_environment
from islandora_job.errors import ConfigError
from islandora_job.exporter.scrape import DEFAULT_MAX_FUNCTIONS, DEFAULT_TIMEOUT

DEFAULT_LISTEN = "127.0.0.1:9465"
DEFAULT_REFRESH = 10
KEYS = ("servers", "listen", "timeout", "refresh", "max_functions", "worker_config")


@dataclass(frozen=True, slots=True)
class ExporterSettings:
    servers: tuple[ServerAddress, ...]
    listen: ServerAddress
    timeout: float = DEFAULT_TIMEOUT
    refresh: int = DEFAULT_REFRESH
    max_functions: int = DEFAULT_MAX_FUNCTIONS
    worker_config: str = ""


def _table(path: str) -> Mapping[str, Any]:
    from islandora_job.worker.config import read_file

    document = read_file(path)
    table = document.get("exporter", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [exporter] must be a table")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ConfigError(f"{path}: [exporter] has unknown key(s) {', '.join(unknown)} (known: {', '.join(KEYS)})")
    return table


def _number(value: Any, where: str, *, integer: bool = False, maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ConfigError(f"{where}: {value!r} is not a {'whole ' if integer else ''}number")
    if not 0 < value <= maximum or math.isnan(value):
        raise ConfigError(f"{where}: {value!r} must be above 0 and at most {maximum:g}")
    return float(value)


def resolve(
    *,
    path: str | None,
    servers: list[str],
    listen: str | None,
    timeout: float | None,
    refresh: int | None,
    max_functions: int | None,
    worker_config: str | None,
) -> ExporterSettings:
    """Merge the flags (not ``None``/empty) over the file over the defaults, checking each value."""
    table: Mapping[str, Any] = _table(path) if path else {}
    where = f"{path}: [exporter]" if path else "[exporter]"

    def pick(flag: Any, key: str, default: Any) -> tuple[Any, str]:
        if flag is not None:
            return flag, f"--{key.replace('_', '-')}"
        if key in table:
            return table[key], f"{where} {key}"
        return default, key

    worker = pick(worker_config, "worker_config", "")[0]
    if not isinstance(worker, str):
        raise ConfigError(f"{where} worker_config: must be a file name")
    addresses: list[ServerAddress]
    if servers:
        addresses = parse_servers(servers)
    elif "servers" in table:
        listed = table["servers"]
        if not isinstance(listed, list) or not all(isinstance(s, str) for s in listed):
            raise ConfigError(f'{where} servers: must be a list of "HOST:PORT" strings')
        try:
            addresses = parse_servers(listed)
        except ConfigError as exc:
            raise ConfigError(f"{where} servers: {exc}") from None
    elif worker:
        from islandora_job.worker.config import load

        addresses = list(load(worker).servers)
    else:
        addresses = servers_from_environment(())
    if not addresses:
        raise ConfigError(f"{where} servers: no server to ask")
    listen_text, listen_where = pick(listen, "listen", DEFAULT_LISTEN)
    if not isinstance(listen_text, str):
        raise ConfigError(f'{listen_where}: must be "HOST:PORT"')
    try:
        listen_address = ServerAddress.parse(listen_text)
    except ConfigError as exc:
        raise ConfigError(f"{listen_where}: {exc}") from None
    value, key = pick(timeout, "timeout", DEFAULT_TIMEOUT)
    timeout_value = float(_number(value, key, maximum=60))
    value, key = pick(refresh, "refresh", DEFAULT_REFRESH)
    refresh_value = int(_number(value, key, integer=True, maximum=3600))
    value, key = pick(max_functions, "max_functions", DEFAULT_MAX_FUNCTIONS)
    max_value = int(_number(value, key, integer=True, maximum=1_000_000))
    return ExporterSettings(tuple(addresses), listen_address, timeout_value, refresh_value, max_value, worker)
