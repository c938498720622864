"""A scenario's platforms (molecule.yml's ``platforms:``, as create.yml writes them to SPEC.json), checked.

Pure functions of the spec and the subnet: no root, no system state, so the unit tests call them directly.
Keys of a platform that are molecule's own (``groups``, ...) are ignored here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import settings
from .system import HarnessError

MAX_NAME = 40  # a netns name is ijm-<name>, and the name is the host's hostname


@dataclass(frozen=True)
class Platform:
    """One test host: its name (hostname, netns ijm-<name>), Debian suite, address and network options."""

    name: str
    address: ipaddress.IPv4Address
    suite: str = settings.DEFAULT_SUITE
    # False: the host reaches only 198.18.0.0/15 (the other hosts), no package index.
    egress: bool = True
    # True: /usr/sbin/policy-rc.d denies every service start from a package install, as Docker-derived images ship.
    policy_rc_d: bool = False

    def netns(self) -> str:
        return f"{settings.PREFIX}-{self.name}"


def _flag(name: str, raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise HarnessError(f"platform {name}: {key} must be true or false (is {value!r})")
    return value


def _name(raw: Mapping[str, Any], seen: set[str]) -> str:
    name = raw.get("name", "")
    if (
        not isinstance(name, str)
        or not name
        or not all(c.isascii() and (c.isalnum() or c == "-") for c in name)
        or len(name) > MAX_NAME
    ):
        raise HarnessError(f"platform name {name!r}: use letters, digits and '-' (at most {MAX_NAME})")
    if name in seen:
        raise HarnessError(f"platform name '{name}' used twice")
    seen.add(name)
    return name


def gateway(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The bridge's address on the host: the subnet's first host address."""
    return subnet[1]


def requested_address(name: str, raw: object, subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """A platform's own ``address:``: a full address, or a host number in the subnet (21 is .21 in a /24)."""
    try:
        if (isinstance(raw, int) and not isinstance(raw, bool)) or (isinstance(raw, str) and raw.isdigit()):
            number = int(raw)
            if not 0 <= number < subnet.num_addresses:
                raise ValueError(raw)
            addr = subnet[number]
        elif isinstance(raw, str):
            addr = ipaddress.IPv4Address(raw)
        else:
            raise ValueError(raw)
    except ValueError:
        raise HarnessError(
            f"platform {name}: address {raw!r} is neither an IPv4 address nor a host number in {subnet}"
        ) from None
    if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address, gateway(subnet)):
        raise HarnessError(
            f"platform {name}: address {addr} is not a host address in {subnet} (gateway {gateway(subnet)} excluded)"
        )
    return addr


def assign_addresses(
    names: Sequence[str], requested: Mapping[str, object], subnet: ipaddress.IPv4Network
) -> dict[str, ipaddress.IPv4Address]:
    """Each platform's address: its own if it asked for one, else the next free host number from FIRST_HOST on,
    in platform order. No address twice, never the gateway."""
    taken = {gateway(subnet)}
    result: dict[str, ipaddress.IPv4Address] = {}
    for name in names:
        if name in requested:
            addr = requested_address(name, requested[name], subnet)
            if addr in taken:
                raise HarnessError(f"platform {name}: address {addr} used twice")
            taken.add(addr)
            result[name] = addr
    free = (a for a in subnet.hosts() if int(a) - int(subnet.network_address) >= settings.FIRST_HOST and a not in taken)
    for name in names:
        if name not in result:
            found = next(free, None)
            if found is None:
                raise HarnessError(f"platform {name}: no free address left in {subnet}")
            result[name] = found
    return {name: result[name] for name in names}


def parse_spec(spec: object, subnet: ipaddress.IPv4Network) -> list[Platform]:
    """The platforms of SPEC.json, checked: unique valid names, known suites, boolean flags, addresses assigned."""
    raw_platforms = spec.get("platforms") if isinstance(spec, dict) else None
    if not raw_platforms:
        raise HarnessError("no platforms in the spec")
    if not isinstance(raw_platforms, list) or not all(isinstance(p, dict) for p in raw_platforms):
        raise HarnessError("the spec's platforms must be a list of mappings")
    seen: set[str] = set()
    names = [_name(raw, seen) for raw in raw_platforms]
    requested = {name: raw["address"] for name, raw in zip(names, raw_platforms, strict=True) if raw.get("address")}
    addresses = assign_addresses(names, requested, subnet)
    platforms = []
    for name, raw in zip(names, raw_platforms, strict=True):
        suite = raw.get("suite", settings.DEFAULT_SUITE)
        if suite not in settings.SUITES:
            raise HarnessError(f"platform {name}: suite '{suite}' unknown (known: {', '.join(settings.SUITES)})")
        platforms.append(
            Platform(
                name=name,
                address=addresses[name],
                suite=suite,
                egress=_flag(name, raw, "egress", default=True),
                policy_rc_d=_flag(name, raw, "policy_rc_d", default=False),
            )
        )
    return platforms
