"""The exporter's nftables table (worker role), loaded for real in a private network namespace with a real
`islandora-job exporter` behind it: the allowed addresses (IPv4 and IPv6) get its HTTP answer, an outsider is
reset, loopback is accepted. The namespaces and the probe are test_firewall_netns.py's (gearmand's table)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.ansible.helpers import ROLES, playbook
from tests.ansible.test_firewall_netns import (
    ALLOWED_V4,
    ALLOWED_V6,
    OUTSIDER_V4,
    OUTSIDER_V6,
    SERVER_V4,
    SERVER_V6,
    namespaces,
    probe,
    run,
)
from tests.support.gearmand import free_port

__all__ = ["namespaces"]  # the fixture, used by name

WORKER = ROLES / "islandora_job_worker"
EXPORTER = str(Path(sys.executable).parent / "islandora-job")


def render_table(tmp: Path, port: int) -> Path:
    dest = tmp / "exporter.nft"
    variables = {
        "islandora_job_worker_exporter_enabled": True,
        "__islandora_job_worker_systemd": True,
        "islandora_job_worker_exporter_listen": f"[::]:{port}",
        "islandora_job_worker_exporter_allowed_clients": [f"{ALLOWED_V4}/32", f"{ALLOWED_V6}/128"],
    }
    play = {
        "name": "Render the exporter's table",
        "hosts": "localhost",
        "gather_facts": False,
        "vars_files": [str(WORKER / "defaults" / "main.yml")],
        "tasks": [
            {
                "name": "Settings",
                "vars": variables,
                "ansible.builtin.include_tasks": str(WORKER / "tasks" / "exporter_settings.yml"),
            },
            {
                "name": "Render",
                "vars": variables,
                "ansible.builtin.template": {
                    "src": str(WORKER / "templates" / "islandora-job-exporter.nft.j2"),
                    "dest": str(dest),
                    "mode": "0644",
                },
            },
        ],
    }
    book = tmp / "render.yml"
    book.write_text(json.dumps([play]))
    result = playbook(book, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    return dest


def test_only_allowed_clients_reach_the_exporter(namespaces: tuple[str, str], tmp_path: Path) -> None:
    server, client = namespaces
    port = free_port()
    table = render_table(tmp_path, port)
    result = run(["ip", "netns", "exec", server, "nft", "-f", str(table)])
    assert result.returncode == 0, result.stdout
    log = tmp_path / "exporter.log"
    with open(log, "wb") as out:
        exporter = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                server,
                EXPORTER,
                "exporter",
                "--server",
                "127.0.0.1:1",
                "--listen",
                f"[::]:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(100):
            if probe(server, "127.0.0.1", "127.0.0.1", port).startswith("answer:"):
                break
            assert exporter.poll() is None, log.read_text(errors="replace")
            subprocess.run(["sleep", "0.1"], check=True)
        # The probe sends "version\n" (an HTTP/0.9 request to the exporter): its error page is an answer all the same.
        assert probe(server, "127.0.0.1", "127.0.0.1", port).startswith("answer:"), "loopback must be accepted"
        assert probe(client, ALLOWED_V4, SERVER_V4, port).startswith("answer:")
        assert probe(client, ALLOWED_V6, SERVER_V6, port).startswith("answer:")
        assert probe(client, OUTSIDER_V4, SERVER_V4, port) == "refused"
        assert probe(client, OUTSIDER_V6, SERVER_V6, port) == "refused"
    finally:
        exporter.kill()
        exporter.wait(10)
