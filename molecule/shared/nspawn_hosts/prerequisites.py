"""What this machine must have before the harness creates anything, each missing piece named with its fix."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from . import settings
from .system import HarnessError, run

# Each command the harness runs, and the Debian package that has it.
TOOLS = (
    ("systemd-nspawn", "systemd-container"),
    ("debootstrap", "debootstrap"),
    ("iptables", "iptables"),
    ("ssh-keygen", "openssh-client"),
    ("ssh", "openssh-client"),
    ("nsenter", "util-linux"),
    ("ip", "iproute2"),
)


def subnet_conflicts(addr_lines: Iterable[str], route_lines: Iterable[str], subnet: ipaddress.IPv4Network) -> list[str]:
    """Why the subnet cannot be used here: an address or a route of this machine (``ip -o -4 addr show`` and
    ``ip -o -4 route show`` lines) overlaps it. The harness's own bridge is not a conflict."""
    problems = []
    for line in addr_lines:
        fields = line.split()
        dev, cidr = fields[1], fields[3]
        if dev != settings.BRIDGE and ipaddress.ip_interface(cidr).network.overlaps(subnet):
            problems.append(
                f"address range {subnet} is in use on {dev} ({cidr}); choose another /24 in 198.18.0.0/15 "
                "with IJM_SUBNET=198.18.N.0/24"
            )
    for line in route_lines:
        dest = line.split()[0]
        if dest == "default" or f"dev {settings.BRIDGE}" in line:
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dest, strict=False).overlaps(subnet):
                problems.append(f"a route to {dest} overlaps {subnet}: {line.strip()}; set IJM_SUBNET")
    return problems


def check(suites: Iterable[str] = ()) -> None:
    """Raise one HarnessError listing everything missing (root, tools, overlayfs, a free range, known suites)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (network namespaces, overlay mounts, systemd-nspawn, iptables)")
    problems += [f"'{tool}' not found: apt-get install {pkg}" for tool, pkg in TOOLS if shutil.which(tool) is None]
    if "overlay" not in Path("/proc/filesystems").read_text():
        problems.append("the kernel has no overlayfs (modprobe overlay)")
    if not settings.SUBNET.subnet_of(settings.TEST_RANGE):
        problems.append(f"IJM_SUBNET={settings.SUBNET} is outside 198.18.0.0/15, the only range test hosts may use")
    if shutil.which("ip"):
        problems += subnet_conflicts(
            run(["ip", "-o", "-4", "addr", "show"]).stdout.splitlines(),
            run(["ip", "-o", "-4", "route", "show"]).stdout.splitlines(),
            settings.SUBNET,
        )
    for suite in suites:
        if suite not in settings.SUITES:
            problems.append(f"unknown suite '{suite}' (known: {', '.join(settings.SUITES)})")
        elif shutil.which("debootstrap") and not Path(f"/usr/share/debootstrap/scripts/{suite}").exists():
            problems.append(f"this debootstrap does not know '{suite}': upgrade debootstrap")
    if problems:
        raise HarnessError("prerequisites missing:\n  - " + "\n  - ".join(problems))
