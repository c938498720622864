"""The molecule harness (molecule/shared/nspawn-hosts and its package nspawn_hosts) where it needs no root: a
scenario's platforms checked with the platform and the key named, addresses assigned, the iptables rules it owns
read back as argv, and its command line.

The package is on the test path (pyproject: pytest pythonpath), as the entry point puts it on its own path.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from nspawn_hosts import cli, network, platform, prerequisites
from nspawn_hosts.system import HarnessError

ENTRY = Path(__file__).parents[2] / "molecule" / "shared" / "nspawn-hosts"
SUBNET = ipaddress.IPv4Network("198.18.2.0/24")


def addr(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def parse(*platforms: dict[str, object], subnet: ipaddress.IPv4Network = SUBNET) -> list[platform.Platform]:
    return platform.parse_spec({"platforms": list(platforms)}, subnet)


def test_flags_default_and_must_be_booleans() -> None:
    [p] = parse({"name": "h1"})
    assert (p.suite, p.egress, p.policy_rc_d) == ("bookworm", True, False)
    for flag in ("policy_rc_d", "egress"):
        with pytest.raises(HarnessError, match=f"platform h2: {flag} must be true or false"):
            parse({"name": "h2", flag: "yes"})
    [p] = parse({"name": "h3", "egress": False, "policy_rc_d": True, "suite": "trixie", "groups": ["x"]})
    assert (p.suite, p.egress, p.policy_rc_d) == ("trixie", False, True)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "no platforms in the spec"),
        ({"platforms": []}, "no platforms in the spec"),
        ({"platforms": "h1"}, "must be a list of mappings"),
        ({"platforms": [{"name": ""}]}, "platform name '': use letters, digits and '-'"),
        ({"platforms": [{"name": "a_b"}]}, "platform name 'a_b'"),
        ({"platforms": [{"name": "hé"}]}, "platform name 'hé'"),
        ({"platforms": [{"name": "h" * 41}]}, "at most 40"),
        ({"platforms": [{"name": 7}]}, "platform name 7"),
        ({"platforms": [{"name": "h1"}, {"name": "h1"}]}, "platform name 'h1' used twice"),
        ({"platforms": [{"name": "h1", "suite": "buster"}]}, "platform h1: suite 'buster' unknown"),
    ],
)
def test_bad_spec_names_the_cause(spec: object, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        platform.parse_spec(spec, SUBNET)


def test_addresses_in_platform_order_from_host_11_around_requested_ones() -> None:
    hosts = parse({"name": "a"}, {"name": "b", "address": 12}, {"name": "c"}, {"name": "d", "address": "198.18.2.5"})
    assert [(p.name, p.address) for p in hosts] == [
        ("a", addr("198.18.2.11")),
        ("b", addr("198.18.2.12")),
        ("c", addr("198.18.2.13")),
        ("d", addr("198.18.2.5")),
    ]
    # A host number as a string, as YAML may give it.
    assert platform.assign_addresses(["x"], {"x": "21"}, SUBNET) == {"x": addr("198.18.2.21")}


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        (1, "address 198.18.2.1 is not a host address"),  # the gateway, the bridge on this machine
        ("198.18.2.1", "address 198.18.2.1 is not a host address"),
        (255, "address 198.18.2.255 is not a host address"),  # broadcast
        (0, None),  # 0 or empty: no address asked for, one is given
        ("198.18.3.7", "address 198.18.3.7 is not a host address"),
        (300, "address 300 is neither an IPv4 address nor a host number"),
        ("web", "address 'web' is neither"),
        (True, "address True is neither"),
        ("2001:db8::1", "address '2001:db8::1' is neither an IPv4 address"),
    ],
)
def test_a_requested_address_outside_the_hosts_is_refused(requested: object, message: str | None) -> None:
    if message is None:
        assert parse({"name": "h1", "address": requested})[0].address == addr("198.18.2.11")
        return
    with pytest.raises(HarnessError, match=re.escape(f"platform h1: {message}")):
        parse({"name": "h1", "address": requested})


def test_an_address_twice_is_refused_and_a_full_subnet_named() -> None:
    with pytest.raises(HarnessError, match=re.escape("platform b: address 198.18.2.21 used twice")):
        parse({"name": "a", "address": 21}, {"name": "b", "address": "198.18.2.21"})
    small = ipaddress.IPv4Network("198.18.2.0/28")  # hosts .1-.14: the gateway, then .11-.14 for platforms
    assert [p.address for p in parse(*({"name": f"h{i}"} for i in range(4)), subnet=small)][-1] == addr("198.18.2.14")
    with pytest.raises(HarnessError, match=re.escape("platform h4: no free address left in 198.18.2.0/28")):
        parse(*({"name": f"h{i}"} for i in range(5)), subnet=small)


def test_only_the_harness_iptables_rules_are_read_back_and_deleted_as_argv() -> None:
    listing = [
        "-P FORWARD DROP",
        '-A FORWARD -s 198.18.2.12/32 ! -d 198.18.0.0/15 -m comment --comment "islandora-job-molecule" -j REJECT',
        '-A FORWARD -i docker0 -m comment --comment "islandora-job-molecule-other" -j ACCEPT',
        "-A FORWARD -i eth0 -j ACCEPT",
        "-A POSTROUTING -s 198.18.2.0/24 ! -o ijm-br0 -m comment --comment islandora-job-molecule -j MASQUERADE",
    ]
    rules = network.ours(listing)
    assert [network.delete_argv("filter", r) for r in rules] == [
        ["iptables", "-w", "-t", "filter", "-D", "FORWARD", "-s", "198.18.2.12/32", "!", "-d", "198.18.0.0/15",
         "-m", "comment", "--comment", "islandora-job-molecule", "-j", "REJECT"],
        ["iptables", "-w", "-t", "filter", "-D", "POSTROUTING", "-s", "198.18.2.0/24", "!", "-o", "ijm-br0",
         "-m", "comment", "--comment", "islandora-job-molecule", "-j", "MASQUERADE"],
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not an appended rule"):
        network.delete_argv("filter", ["-P", "FORWARD", "DROP"])


def test_links_of_the_harness_are_told_from_others() -> None:
    assert [n for n in ("ijm-br0", "ijmv0", "ijmp3", "eth0", "ijm", "docker0") if network.is_ours(n)] == [
        "ijm-br0",
        "ijmv0",
        "ijmp3",
    ]


def test_a_subnet_in_use_on_this_machine_is_named() -> None:
    addrs = [
        "2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0",
        "3: ijm-br0    inet 198.18.2.1/24 scope global ijm-br0",  # the harness's own bridge: no conflict
        "4: tun0    inet 198.18.2.77/25 scope global tun0",
    ]
    routes = ["default via 10.0.0.1 dev eth0", "198.18.0.0/16 via 10.0.0.9 dev eth0", "198.18.2.0/24 dev ijm-br0"]
    problems = prerequisites.subnet_conflicts(addrs, routes, SUBNET)
    assert len(problems) == 2
    assert problems[0].startswith("address range 198.18.2.0/24 is in use on tun0 (198.18.2.77/25)")
    assert problems[1].startswith("a route to 198.18.0.0/16 overlaps 198.18.2.0/24")


def test_command_line_errors_are_one_message_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 0
    assert "shell NAME [CMD...]" in capsys.readouterr().out
    assert cli.main(["up", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: cannot read the spec" in capsys.readouterr().err
    bad = tmp_path / "spec.json"
    bad.write_text(json.dumps({"platforms": [{"name": "h1", "address": 300}]}))
    assert cli.main(["up", str(bad)]) == 2
    assert "platform h1: address 300 is neither" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["bogus"])
    assert exc.value.code == 2


def test_entry_point_runs_with_the_system_python_from_anywhere(tmp_path: Path) -> None:
    """molecule/shared/*.yml run the executable by path; the system python3 has no venv (standard library only)."""
    for python in ("/usr/bin/python3", sys.executable):
        res = subprocess.run([python, str(ENTRY), "--help"], cwd=tmp_path, capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr
        assert "up SPEC.json" in res.stdout
    res = subprocess.run(
        [str(ENTRY), "up", str(tmp_path / "none.json")], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr.startswith("nspawn-hosts: ") and "Traceback" not in res.stderr
