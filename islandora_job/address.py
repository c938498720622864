"""Where a Gearman server is: ``HOST:PORT`` strings from flags, config files and ``ISLANDORA_JOB_SERVERS``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from islandora_job.errors import ConfigError

DEFAULT_PORT = 4730
DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"
ENV_SERVERS = "ISLANDORA_JOB_SERVERS"


@dataclass(frozen=True, slots=True, order=True)
class ServerAddress:
    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> ServerAddress:
        """Parse ``host``, ``host:port``, ``[v6]:port`` or a bare ``v6`` address; the port defaults to 4730."""
        value = text.strip()
        if not value:
            raise ConfigError("empty server address")
        host, port_text = value, ""
        if value.startswith("["):
            end = value.find("]")
            if end == -1:
                raise ConfigError(f"server address {text!r}: unclosed '['")
            host, rest = value[1:end], value[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise ConfigError(f"server address {text!r}: expected ':PORT' after ']'")
                port_text = rest[1:]
        elif value.count(":") == 1:
            host, port_text = value.split(":")
            if not port_text:
                raise ConfigError(f"server address {text!r}: empty port")
        if not host:
            raise ConfigError(f"server address {text!r}: no host")
        if not port_text:
            return cls(host)
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"server address {text!r}: port must be a number from 1 to 65535")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_servers(values: Iterable[str]) -> list[ServerAddress]:
    """Parse a list of addresses (each may itself be comma-separated), dropping duplicates, keeping order."""
    seen: dict[ServerAddress, None] = {}
    for value in values:
        for part in value.split(","):
            if part.strip():
                seen.setdefault(ServerAddress.parse(part), None)
    return list(seen)


def servers_from_environment(
    flags: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> list[ServerAddress]:
    """Servers named on the command line, else in ``ISLANDORA_JOB_SERVERS``, else ``127.0.0.1:4730``."""
    flagged = parse_servers(flags)
    if flagged:
        return flagged
    env = os.environ if environ is None else environ
    raw = env.get(ENV_SERVERS, "")
    if raw.strip():
        try:
            return parse_servers([raw])
        except ConfigError as exc:
            raise ConfigError(f"{ENV_SERVERS}: {exc}") from exc
    return [ServerAddress.parse(DEFAULT_SERVER)]
