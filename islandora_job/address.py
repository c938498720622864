"""Where a Gearman server is: ``HOST:PORT`` strings from flags, config files and ``ISLANDORA_JOB_SERVERS``."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from islandora_job.errors import ConfigError

DEFAULT_PORT = 4730
DEFAULT_SERVER = f"127.0.0.1:{DEFAULT_PORT}"
ENV_SERVERS = "ISLANDORA_JOB_SERVERS"
#: One label of a host name once IDNA-encoded: letters, digits, ``-`` and ``_`` (which /etc/hosts and container
#: names use), 1 to 63 characters.
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
#: The longest name DNS carries, without its optional final dot.
MAX_HOST_NAME = 253


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot name a host, or None when it may (whether it resolves is the resolver's business).

    This is the rule for every server name, stated once: Python's resolver raises ``UnicodeError`` or
    ``ValueError`` (not ``OSError``) for an empty label, one over 63 characters or a NUL, so a name like that must
    be caught here, by its text, rather than found at connect time.
    """
    if any(ord(char) < 0x21 or ord(char) == 0x7F or char.isspace() for char in host):
        return "contains a space or a control character"
    try:
        ipaddress.ip_address(host.split("%", 1)[0] if ":" in host else host)  # an IPv6 zone: fe80::1%eth0
    except ValueError:
        pass
    else:
        return None
    if ":" in host:
        return "is neither an IPv6 address nor a host name"
    try:
        encoded = host.encode("idna").decode("ascii")
    except UnicodeError:
        return "has an empty label or one longer than 63 characters"
    name = encoded[:-1] if encoded.endswith(".") else encoded
    if len(name) > MAX_HOST_NAME:
        return f"is longer than {MAX_HOST_NAME} characters"
    if not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return "is not a host name (letters, digits, '-' and '_' between dots)"
    return None


@dataclass(frozen=True, slots=True, order=True)
class ServerAddress:
    host: str
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str, *, check_host: bool = True) -> ServerAddress:
        """Parse ``host``, ``host:port``, ``[v6]:port`` or a bare ``v6`` address; the port defaults to 4730.

        ``check_host``: refuse a host that cannot be one (:func:`host_problem`). The worker's own configuration is
        parsed without it and checked by ``check-config`` instead, as a command's program is: a running pool keeps
        serving its other servers and treats such a name as a server that is down.
        """
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
        problem = host_problem(host) if check_host else None
        if problem:
            raise ConfigError(f"server address {text!r}: host {problem}")
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
