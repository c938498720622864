"""islandora_job_worker_pip_args (where a private index's credentials go) stay out of Ansible's output and out of
every process's command line (issue 10): they reach pip through a private config file (PIP_CONFIG_FILE), the
tasks using them have no_log, and a failed build is reported with URL credentials masked. A thread reads every
process's /proc/PID/cmdline while the playbook runs, as `ps` would. Only the role's wheelhouse step runs on this
machine (include_role tasks_from: wheelhouse.yml; it builds on the controller, into a temporary cache, and changes
nothing else): the build fails (the index is a closed loopback port). Check mode would build nothing."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import sys
import threading
from pathlib import Path
from typing import ClassVar

from tests.ansible.helpers import REPO, ansible_env, playbook, run

SECRET = "s3cr3t-fake-token"


def _scan_command_lines(stop: threading.Event, seen: list[str]) -> None:
    while not stop.is_set():
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # the process ended
                continue
            if SECRET in text and "pytest" not in text:
                seen.append(text[:300])
        stop.wait(0.02)


def test_a_failed_build_does_not_print_the_index_credentials(tmp_path: Path) -> None:
    book = tmp_path / "pip-args.yml"
    book.write_text(
        json.dumps(
            [
                {
                    "name": "Worker with a private index",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": True,
                    "gather_subset": ["min"],
                    "vars": {"ansible_python_interpreter": "/usr/bin/python3"},
                    "tasks": [
                        {
                            "name": "Build the wheelhouse (the role's step that runs on the controller)",
                            "ansible.builtin.include_role": {
                                "name": "islandora_job_worker",
                                "tasks_from": "wheelhouse.yml",
                            },
                            "vars": {
                                "islandora_job_worker_pip_args": [
                                    f"--index-url=http://ijuser:{SECRET}@127.0.0.1:9/simple",
                                    "--retries",
                                    "0",
                                    "--timeout=2",
                                ],
                                "islandora_job_worker_wheelhouse_cache": str(tmp_path / "cache"),
                            },
                        }
                    ],
                }
            ]
        )
    )
    stop, seen = threading.Event(), []  # type: ignore[var-annotated]
    scanner = threading.Thread(target=_scan_command_lines, args=(stop, seen), daemon=True)
    scanner.start()
    try:
        result = playbook(book, "-vv", inventory="localhost,", env=ansible_env(), timeout=300)
    finally:
        stop.set()
        scanner.join(10)
    assert not seen, seen[:3]
    assert not list(Path("/tmp").glob("ansible.*.pip")), "the private pip directory was left behind"
    assert result.returncode != 0, result.stdout[-3000:]
    assert "Building the wheelhouse failed" in result.stdout, result.stdout[-3000:]
    assert SECRET not in result.stdout, [line for line in result.stdout.splitlines() if SECRET in line][:5]
    assert "[WARNING]" not in result.stdout, result.stdout[-3000:]


class _PrivateIndex(http.server.BaseHTTPRequestHandler):
    """A PEP 503 index that serves the wheels of a directory only with the right Basic credentials, and records
    every request."""

    wheels: Path
    seen: ClassVar[list[tuple[str, str]]] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.seen.append((self.path, auth))
        if auth != "Basic " + base64.b64encode(f"ijuser:{SECRET}".encode()).decode():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="private"')
            self.end_headers()
            return
        project = self.path.rstrip("/").removeprefix("/simple/").replace("-", "_")
        matches = [w for w in self.wheels.glob("*.whl") if w.name.split("-")[0].lower() == project]
        if self.path.startswith("/simple/") and matches:
            digest = hashlib.sha256(matches[0].read_bytes()).hexdigest()
            body = f'<a href="/files/{matches[0].name}#sha256={digest}">{matches[0].name}</a>'.encode()
        elif self.path.startswith("/files/") and (self.wheels / self.path[len("/files/") :]).is_file():
            body = (self.wheels / self.path[len("/files/") :]).read_bytes()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        html = self.path.startswith("/simple/")
        self.send_header("Content-Type", "text/html" if html else "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_credentials_still_reach_the_private_index(tmp_path: Path) -> None:
    """The role's build through an index that needs user:password from the URL: pip authenticates (netrc), the
    wheelhouse is built, and no process's command line held the password."""
    wheels = tmp_path / "wheels"
    got = run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--dest",
            str(wheels),
            "--require-hashes",
            "-r",
            str(REPO / "requirements" / "worker.lock"),
        ]
    )
    assert got.returncode == 0, got.stdout[-2000:]
    # The build backend for our own wheel, from a plain directory (the fake index serves pygearman only).
    backend = tmp_path / "backend"
    got = run([sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(backend), "setuptools>=77"])
    assert got.returncode == 0, got.stdout[-2000:]
    handler = type("Handler", (_PrivateIndex,), {"wheels": wheels, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    book = tmp_path / "build.yml"
    book.write_text(
        json.dumps(
            [
                {
                    "name": "Only the role's wheelhouse build, through a private index",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {"ansible_python_interpreter": sys.executable},
                    "tasks": [
                        {
                            "name": "Build",
                            "ansible.builtin.include_role": {
                                "name": "islandora_job_worker",
                                "tasks_from": "wheelhouse",
                            },
                            "vars": {
                                "islandora_job_worker_python": sys.executable,
                                "islandora_job_worker_pip_args": [
                                    f"--index-url=http://ijuser:{SECRET}@127.0.0.1:{port}/simple",
                                    "--retries=0",
                                    f"--find-links={backend}",
                                ],
                                "islandora_job_worker_wheelhouse_cache": str(tmp_path / "cache"),
                            },
                        },
                        {"name": "Show", "ansible.builtin.debug": {"var": "__islandora_job_worker_manifest.wheels"}},
                    ],
                }
            ]
        )
    )
    stop, seen = threading.Event(), []  # type: ignore[var-annotated]
    scanner = threading.Thread(target=_scan_command_lines, args=(stop, seen), daemon=True)
    scanner.start()
    try:
        # PIP_* variables beat pip's config files: this machine's PIP_FIND_LINKS would replace the test's.
        env = {k: v for k, v in ansible_env().items() if k != "PIP_FIND_LINKS"}
        result = playbook(book, inventory="localhost,", env=env, timeout=300)
    finally:
        stop.set()
        scanner.join(10)
        server.shutdown()
    assert result.returncode == 0, result.stdout[-3000:]
    assert "pygearman-0.2.6-py3-none-any.whl" in result.stdout
    assert any(path.startswith("/files/pygearman") and auth for path, auth in handler.seen), handler.seen
    assert not seen, seen[:3]
    assert SECRET not in result.stdout
