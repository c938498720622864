"""The hosts' network: a bridge on this machine, one network namespace per host with a veth into the bridge,
outbound NAT for the subnet, and forward rules (a REJECT for a host without egress).

Every iptables rule carries the harness's comment; removing them reads ``iptables -S`` back and deletes exactly
those rules, as argv lists (``shlex`` undoes iptables' quoting; no shell).
"""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import settings
from .platform import Platform, gateway
from .system import run

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
NETNS_DIR = Path("/run/netns")
TABLES = ("nat", "filter")


def ip_forward_saved() -> Path:
    """ip_forward as it was before the first up, restored by down."""
    return settings.STATE / "ip_forward.orig"


def ipt(table: str, *rule: str) -> None:
    run(["iptables", "-w", "-t", table, *rule, "-m", "comment", "--comment", settings.COMMENT])


def ours(rule_lines: Iterable[str]) -> list[list[str]]:
    """The rules of ``iptables -S`` output that carry the harness's comment, each as its argv."""
    rules = []
    for line in rule_lines:
        argv = shlex.split(line)
        if any(a == "--comment" and b == settings.COMMENT for a, b in itertools.pairwise(argv)):
            rules.append(argv)
    return rules


def delete_argv(table: str, rule: Sequence[str]) -> list[str]:
    """The command that deletes a rule listed by ``iptables -S`` (``-A CHAIN ...``)."""
    if len(rule) < 2 or rule[0] != "-A":
        raise ValueError(f"not an appended rule: {shlex.join(rule)}")
    return ["iptables", "-w", "-t", table, "-D", *rule[1:]]


def our_rules(table: str) -> list[list[str]]:
    return ours(run(["iptables", "-t", table, "-S"], check=False).stdout.splitlines())


def veth_names(index: int) -> tuple[str, str]:
    """The host-side and namespace-side veth of the index-th host (the inner one is renamed eth0)."""
    return f"{settings.PREFIX}v{index}", f"{settings.PREFIX}p{index}"


def is_ours(link: str) -> bool:
    return link == settings.BRIDGE or link.startswith((f"{settings.PREFIX}v", f"{settings.PREFIX}p"))


def setup(platforms: Sequence[Platform]) -> None:
    subnet = settings.SUBNET
    gw = str(gateway(subnet))
    run(["ip", "link", "add", settings.BRIDGE, "type", "bridge"])
    run(["ip", "addr", "add", f"{gw}/{subnet.prefixlen}", "dev", settings.BRIDGE])
    run(["ip", "link", "set", settings.BRIDGE, "up"])
    saved = ip_forward_saved()
    if not saved.exists():
        saved.write_text(IP_FORWARD.read_text())
    IP_FORWARD.write_text("1\n")
    # Outbound NAT for the hosts (the package registries), and forwarding for the bridge only.
    ipt("nat", "-A", "POSTROUTING", "-s", str(subnet), "!", "-o", settings.BRIDGE, "-j", "MASQUERADE")
    for p in platforms:
        if not p.egress:
            # This host reaches only the test range and its own loopback: no index, no registry.
            ipt("filter", "-I", "FORWARD", "-s", str(p.address), "!", "-d", str(settings.TEST_RANGE), "-j", "REJECT")
    ipt("filter", "-A", "FORWARD", "-i", settings.BRIDGE, "-j", "ACCEPT")
    ipt("filter", "-A", "FORWARD", "-o", settings.BRIDGE, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
        "-j", "ACCEPT")  # fmt: skip
    for index, p in enumerate(platforms):
        ns = p.netns()
        host_if, peer_if = veth_names(index)
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if])
        run(["ip", "link", "set", peer_if, "netns", ns])
        run(["ip", "link", "set", host_if, "master", settings.BRIDGE])
        run(["ip", "link", "set", host_if, "up"])
        run(["ip", "-n", ns, "link", "set", peer_if, "name", "eth0"])
        run(["ip", "-n", ns, "addr", "add", f"{p.address}/{subnet.prefixlen}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "route", "add", "default", "via", gw])


def our_netns() -> list[str]:
    if not NETNS_DIR.exists():
        return []
    return sorted(ns.name for ns in NETNS_DIR.iterdir() if ns.name.startswith(settings.PREFIX + "-"))


def teardown() -> list[str]:
    """Remove the namespaces, veths, bridge and rules of the harness and restore ip_forward; what was removed."""
    removed = []
    for ns in our_netns():
        run(["ip", "netns", "delete", ns], check=False)
        removed.append(f"netns {ns}")
    for line in run(["ip", "-o", "link", "show"]).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if is_ours(name):
            run(["ip", "link", "delete", name], check=False)
            removed.append(f"link {name}")
    for table in TABLES:
        for rule in our_rules(table):
            run(delete_argv(table, rule), check=False)
            removed.append(f"iptables -t {table} {shlex.join(rule)}")
    saved = ip_forward_saved()
    if saved.exists():
        IP_FORWARD.write_text(saved.read_text().strip() + "\n")
        saved.unlink()
    return removed
