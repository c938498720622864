"""``islandora-job exporter`` against real gearmands: one with work and no worker, one down, one frozen (SIGSTOP),
and stand-ins that trickle, flood and send one endless line. Its exposition is checked by ``promtool``.

One exporter serves every test of the module (started once: the module adds a few seconds to CI).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from islandora_job.address import ServerAddress
from islandora_job.codec import Command, encode
from islandora_job.connection import Connection
from islandora_job.worker.deadletters import DeadLetterStore
from tests.support.exporter import CLI, HostileServer, fetch, peak_rss_kib, running_exporter, sample
from tests.support.gearmand import Gearmand, free_port
from tests.support.peers import wait_for

LONELY = "ij_exp_lonely"
EVIL = 'ij_exp_<b>"evil&'
SERVED = "ij_exp_served"
NOT_UTF8 = b"ij_exp_\xff\xfe"
#: The exporter's deadline for one server, in seconds.
TIMEOUT = 1.0


def _submit(server: Gearmand, function: str, *flags: str) -> None:
    """A background job through the ``gearman`` CLI: a client we did not write."""
    subprocess.run(
        ["gearman", "-h", "127.0.0.1", "-p", str(server.port), "-f", function, "-b", *flags],
        input=b"payload",
        check=True,
        timeout=10,
    )


def _submit_raw(server: Gearmand, function: bytes) -> None:
    """A background job to a function name that is not UTF-8 (gearmand takes any bytes but NUL)."""
    connection = Connection(ServerAddress("127.0.0.1", server.port))
    connection.connect()
    try:
        connection.send(encode(Command.SUBMIT_JOB_BG, function, b"raw-1", b"payload"))
        assert connection.receive()[0].command is Command.JOB_CREATED
    finally:
        connection.close()


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.good = Gearmand(tmp)
        self.frozen = Gearmand(tmp)
        self.down = f"127.0.0.1:{free_port()}"
        self.hostile = [HostileServer(mode) for mode in ("trickle", "flood", "huge")]
        self.worker: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.pid = 0

    def start(self) -> None:
        self.good.start()
        self.frozen.start()
        _submit(self.good, LONELY)
        _submit(self.good, LONELY, "-I")  # high priority
        _submit(self.good, EVIL)
        _submit(self.frozen, LONELY)
        # a worker we did not write, serving one function
        self.worker = subprocess.Popen(
            ["gearman", "-h", "127.0.0.1", "-p", str(self.good.port), "-w", "-f", SERVED, "--", "cat"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: f"{SERVED}\t0\t0\t1" in _status(self.good), timeout=10, message="the gearman worker")
        _submit_raw(self.good, NOT_UTF8)  # after the wait: the tests' own admin helper decodes strictly
        assert self.frozen.process is not None
        os.kill(self.frozen.process.pid, signal.SIGSTOP)

    def servers(self) -> list[str]:
        return [self.good.address, self.down, self.frozen.address, *(h.address for h in self.hostile)]

    def stop(self) -> None:
        if self.frozen.process is not None:
            os.kill(self.frozen.process.pid, signal.SIGCONT)
        if self.worker is not None:
            self.worker.kill()
            self.worker.wait()
        for hostile in self.hostile:
            hostile.close()
        self.good.stop()
        self.frozen.stop()


def _status(server: Gearmand) -> str:
    from tests.support.gearmand import admin

    return admin(server.port, "status")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("exporter")
    cluster = Cluster(tmp)
    store = DeadLetterStore(str(tmp / "dead.sqlite3"))
    for n in range(3):
        store.record(function=LONELY, name="x", handle=f"H:{n}", unique=f"u{n}", payload=b"p", error="e", attempts=1)
    (tmp / "worker.toml").write_text(f'[dead_letters]\npath = "{tmp / "dead.sqlite3"}"\n')
    try:
        cluster.start()
        args = [f"--server={s}" for s in cluster.servers()]
        args += ["--timeout", str(TIMEOUT), "--refresh", "5", "--worker-config", str(tmp / "worker.toml")]
        with running_exporter(args, tmp / "exporter.log") as url:
            cluster.url = url
            cluster.pid = int(subprocess.check_output(["pgrep", "-f", f"exporter --listen {url[7:]}"]).split()[0])
            yield cluster
    finally:
        cluster.stop()


def test_metrics_report_every_server_and_function_and_pass_promtool(cluster: Cluster) -> None:
    text = fetch(cluster.url + "/metrics")
    good = cluster.good.address
    assert sample(text, "islandora_job_gearmand_up", server=good) == 1
    for server in [cluster.down, cluster.frozen.address, *(h.address for h in cluster.hostile)]:
        assert sample(text, "islandora_job_gearmand_up", server=server) == 0, server
    assert sample(text, "islandora_job_gearmand_jobs_queued", server=good, function=LONELY) == 2
    assert sample(text, "islandora_job_gearmand_workers", server=good, function=LONELY) == 0
    assert sample(text, "islandora_job_gearmand_workers", server=good, function=SERVED) == 1
    assert sample(text, "islandora_job_gearmand_jobs_running", server=good, function=SERVED) == 0
    by_priority = "islandora_job_gearmand_jobs_queued_by_priority"
    assert sample(text, by_priority, server=good, function=LONELY, priority="high") == 1
    assert sample(text, by_priority, server=good, function=LONELY, priority="normal") == 1
    assert sample(text, "islandora_job_gearmand_jobs_queued", server=good, function='ij_exp_<b>\\"evil&') == 1
    assert sample(text, "islandora_job_exporter_dead_letters", function=LONELY) == 3
    # a function name that is not UTF-8 neither takes the server down nor breaks the exposition
    assert sample(text, "islandora_job_gearmand_jobs_queued", server=good, function="ij_exp_\\\\xff\\\\xfe") == 1
    assert (sample(text, "islandora_job_exporter_scrape_duration_seconds") or 0) > 0
    # the flood's functions never made it in: the answer was refused whole, past its byte cap
    assert "ij_flood_" not in text
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_hostile_and_frozen_servers_neither_hang_the_exporter_nor_grow_its_memory(cluster: Cluster) -> None:
    """Each scrape ends (each server's exchange is cut at its deadline: the fetch would time out at 30 s
    otherwise), and the peak memory stays far under what the flood sent (about a gigabyte a second)."""
    for _ in range(4):
        text = fetch(cluster.url + "/metrics")
        assert sample(text, "islandora_job_gearmand_up", server=cluster.good.address) == 1
        time.sleep(0.6)  # past the exporter's shared-round window: each fetch asks again
    for server in [cluster.frozen.address, *(h.address for h in cluster.hostile)]:
        took = sample(text, "islandora_job_gearmand_scrape_duration_seconds", server=server)
        assert took is not None and took < TIMEOUT + 5, (server, took)
    assert peak_rss_kib(cluster.pid) < 150 * 1024
    log = (cluster.tmp / "exporter.log").read_text()
    assert log.count(f"gearmand {cluster.frozen.address}: no complete admin answer within the 1s deadline") == 1
    for hostile in cluster.hostile:  # each exchange was ended by the exporter, none left hanging
        assert hostile.max_open <= 2, (hostile.mode, hostile.max_open)


def test_idle_http_clients_do_not_block_the_exporter(cluster: Cluster) -> None:
    """Connections that send nothing, or half a request line, hold a thread each, not the server."""
    host, port = cluster.url[7:].split(":")
    idle = [socket.create_connection((host, int(port)), timeout=5) for _ in range(40)]
    try:
        for sock in idle[::2]:
            sock.sendall(b"GET /metr")
        assert sample(fetch(cluster.url + "/metrics"), "islandora_job_gearmand_up", server=cluster.good.address) == 1
    finally:
        for sock in idle:
            sock.close()


def test_the_page_flags_unserved_functions_and_down_servers_escaped(cluster: Cluster) -> None:
    page = fetch(cluster.url + "/")
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "<script" not in page
    assert f'<code class="function">{LONELY}</code> has 2 job(s) waiting' in page
    assert "ij_exp_&lt;b&gt;&quot;evil&amp;</code> has 1 job(s) waiting" in page
    assert '<b>"evil' not in page
    assert f"{SERVED}</code> has" not in page  # served: not flagged
    for server in (cluster.down, cluster.frozen.address):
        assert f'Server <code>{server}</code> is <span class="down">DOWN</span>' in page
    assert "Dead letters in" in page and f"{LONELY}</code></td><td>3</td>" in page


def test_bad_settings_are_one_line_naming_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "exporter.toml"
    cases = {
        '[exporter]\ntimeout = "soon"\n': "[exporter] timeout: 'soon' is not a number",
        "[exporter]\nlisten = 9\n": "[exporter] listen: must be",
        "[exporter]\nport = 9\n": "[exporter] has unknown key(s) port",
        '[exporter]\nservers = ["a..b:1"]\n': "[exporter] servers:",
        "[exporter\n": "not valid TOML",
    }
    for text, expected in cases.items():
        config.write_text(text)
        result = subprocess.run([*CLI, "exporter", "--config", str(config)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (text, result.stderr)
        assert str(config) in result.stderr and expected in result.stderr, (text, result.stderr)
        assert "Traceback" not in result.stderr
    busy = subprocess.run([*CLI, "exporter", "--listen", "203.0.113.1:1"], capture_output=True, text=True, timeout=30)
    assert busy.returncode == 2 and "cannot listen on 203.0.113.1:1" in busy.stderr, busy.stderr


def test_settings_from_the_file(tmp_path: Path, cluster: Cluster) -> None:
    config = tmp_path / "exporter.toml"
    config.write_text(f'[exporter]\nservers = ["{cluster.good.address}"]\ntimeout = 2\nrefresh = 7\n')
    with running_exporter(["--config", str(config)], tmp_path / "log") as url:
        page = fetch(url + "/")
        assert '<meta http-equiv="refresh" content="7">' in page
        text = fetch(url + "/metrics")
        assert sample(text, "islandora_job_gearmand_up", server=cluster.good.address) == 1
        assert "islandora_job_exporter_dead_letters" not in text  # no worker configuration given


class _Rows(HTMLParser):
    """The function name of each table row, and whether the row is flagged (class ``unserved``)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, bool]] = []
        self.scripts = 0
        self._row: bool | None = None
        self._in_name = False
        self._name = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "tr":
            self._row = attributes.get("class") == "unserved"
        if tag == "code" and attributes.get("class") == "function" and self._row is not None:
            self._in_name, self._name = True, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "code" and self._in_name:
            self._in_name = False
            assert self._row is not None
            self.rows.append((self._name, self._row))
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._in_name:
            self._name += data


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        timeout=120,
    )


def test_the_page_in_headless_chromium_flags_the_function_nobody_serves(cluster: Cluster, tmp_path: Path) -> None:
    """What a browser makes of the page: the DOM after parsing (escaping done right shows the hostile name as the
    text it is), and a screenshot of the right size with more than one colour in it."""
    dom = _chromium(tmp_path / "profile", "--dump-dom", cluster.url + "/")
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    rows = _Rows()
    rows.feed(dom.stdout.decode())
    flagged = {name for name, unserved in rows.rows if unserved}
    assert flagged == {LONELY, EVIL, "ij_exp_\\xff\\xfe"}, rows.rows
    assert (SERVED, False) in rows.rows
    assert rows.scripts == 0
    shot = tmp_path / "page.png"
    taken = _chromium(tmp_path / "profile", "--window-size=1100,900", f"--screenshot={shot}", cluster.url + "/")
    assert taken.returncode == 0 and shot.exists(), taken.stderr.decode(errors="replace")[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1100, 900)
    assert len(png) > 20_000  # a blank page compresses to a few hundred bytes


def test_status_still_reports_a_server_with_a_function_name_that_is_not_utf8(cluster: Cluster) -> None:
    """Before, ``islandora-job status`` called such a server unreachable (exit 3): the admin answer was refused."""
    env = {k: v for k, v in os.environ.items() if k != "ISLANDORA_JOB_SERVERS"}
    result = subprocess.run(
        [*CLI, "status", "--server", cluster.good.address], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "ij_exp_\\xff\\xfe" in result.stdout and LONELY in result.stdout
