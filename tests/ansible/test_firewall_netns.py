"""The gearman_server firewall table, loaded for real in a private network namespace.

Two namespaces joined by a veth pair: a "server" one running gearmand (listening on every address) with
the role's rendered nftables table loaded, and a "client" one holding both an allowed and an outsider
address, IPv4 and IPv6. Allowed sources get gearmand's answer, outsiders are reset, another port of the
same host is untouched, loopback is accepted, and reloading the table leaves other tables alone. Only the
test's namespaces are touched (never the host's ruleset); they are deleted at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ansible.helpers import GEARMAND, ROLES, playbook, run, system_binary
from tests.support.gearmand import free_port

ROLE = ROLES / "gearman_server"
SERVER_V4, ALLOWED_V4, OUTSIDER_V4 = "198.18.251.1", "198.18.251.2", "198.18.251.3"
SERVER_V6, ALLOWED_V6, OUTSIDER_V6 = "2001:db8:251::1", "2001:db8:251::2", "2001:db8:251::3"

PROBE = textwrap.dedent("""
    import socket, sys
    family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    s.bind((sys.argv[1], 0))
    try:
        s.connect((sys.argv[2], int(sys.argv[3])))
        s.sendall(b"version\\n")
        print("answer:" + s.recv(100).decode().strip())
    except ConnectionRefusedError:
        print("refused")
    except OSError as exc:
        print("error:" + str(exc))
""")


def ip(*args: str) -> None:
    result = run(["ip", *args])
    assert result.returncode == 0, f"ip {' '.join(args)}: {result.stdout}"


@pytest.fixture
def namespaces(tmp_path: Path) -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        raise AssertionError("network namespaces need root: run the tests as root, as CI does")
    system_binary("/usr/sbin/nft", "nftables")
    system_binary("/usr/sbin/ip", "iproute2")
    tag = f"ij{os.getpid() % 100000}"
    server, client = f"{tag}srv", f"{tag}cli"
    try:
        ip("netns", "add", server)
        ip("netns", "add", client)
        ip("link", "add", f"{tag}a", "netns", server, "type", "veth", "peer", "name", f"{tag}b", "netns", client)
        for ns, dev, addrs in (
            (server, f"{tag}a", [f"{SERVER_V4}/24", f"{SERVER_V6}/64"]),
            (client, f"{tag}b", [f"{ALLOWED_V4}/24", f"{OUTSIDER_V4}/24", f"{ALLOWED_V6}/64", f"{OUTSIDER_V6}/64"]),
        ):
            for addr in addrs:
                ip("-n", ns, "addr", "add", addr, "dev", dev, *(["nodad"] if ":" in addr else []))
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield server, client
    finally:
        for ns in (server, client):
            pids = run(["ip", "netns", "pids", ns]).stdout.split()
            for pid in pids:
                run(["kill", "-KILL", pid])
            run(["ip", "netns", "del", ns])


def render_table(tmp: Path, port: int) -> Path:
    book = tmp / "render.yml"
    dest = tmp / "firewall.nft"
    book.write_text(
        json.dumps(
            [
                {
                    "name": "Render the firewall table",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
                    "tasks": [
                        {
                            "name": "Render",
                            "vars": {
                                "gearman_server_port": port,
                                "gearman_server_allowed_clients": [f"{ALLOWED_V4}/32", f"{ALLOWED_V6}/128"],
                            },
                            "ansible.builtin.template": {
                                "src": str(ROLE / "templates" / "firewall.nft.j2"),
                                "dest": str(dest),
                                "mode": "0644",
                            },
                        }
                    ],
                }
            ]
        )
    )
    result = playbook(book, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    return dest


def probe(ns: str, source: str, dest: str, port: int) -> str:
    result = run(["ip", "netns", "exec", ns, "python3", "-c", PROBE, source, dest, str(port)], timeout=30)
    return result.stdout.strip()


def test_only_allowed_clients_reach_gearmand(namespaces: tuple[str, str], tmp_path: Path) -> None:
    server, client = namespaces
    port, other_port = free_port(), free_port()
    table = render_table(tmp_path, port)
    assert run(["ip", "netns", "exec", server, "nft", "add", "table", "inet", "someone_else"]).returncode == 0
    for _ in range(2):  # loading twice replaces the table, atomically
        result = run(["ip", "netns", "exec", server, "nft", "-f", str(table)])
        assert result.returncode == 0, result.stdout
    tables = run(["ip", "netns", "exec", server, "nft", "list", "tables"]).stdout
    assert "table inet gearman_server" in tables and "table inet someone_else" in tables, tables

    argv = [
        system_binary(GEARMAND, "gearman-job-server"),
        f"--port={port}",
        "--config-file=/dev/null",
        f"--log-file={tmp_path / 'gearmand.log'}",
        "--user=root",
    ]
    gearmand = subprocess.Popen(
        ["ip", "netns", "exec", server, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    other = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            server,
            "python3",
            "-c",
            f"import socket,time; s=socket.create_server(('0.0.0.0', {other_port})); "
            "c,_=s.accept(); c.sendall(b'other\\n'); time.sleep(1)",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):
            if probe(server, "127.0.0.1", "127.0.0.1", port).startswith("answer:OK"):
                break
            assert gearmand.poll() is None, (tmp_path / "gearmand.log").read_text(errors="replace")
            subprocess.run(["sleep", "0.1"], check=True)
        assert probe(server, "127.0.0.1", "127.0.0.1", port).startswith("answer:OK"), "loopback must be accepted"
        assert probe(client, ALLOWED_V4, SERVER_V4, port).startswith("answer:OK")
        assert probe(client, OUTSIDER_V4, SERVER_V4, port) == "refused"
        assert probe(client, ALLOWED_V6, SERVER_V6, port).startswith("answer:OK")
        assert probe(client, OUTSIDER_V6, SERVER_V6, port) == "refused"
        assert probe(client, OUTSIDER_V4, SERVER_V4, other_port) == "answer:other", "other ports are not filtered"
    finally:
        for proc in (gearmand, other):
            proc.kill()
            proc.wait(10)
