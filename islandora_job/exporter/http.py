"""The exporter's HTTP server: ``/metrics`` for Prometheus, ``/`` for a person, with the stdlib's threading server.

Each request is answered from :meth:`Scraper.snapshot`, which shares one round of questions among requests that
arrive together. A client that opens a connection and sends nothing is dropped after :data:`REQUEST_TIMEOUT`.
"""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from islandora_job.exporter import exposition, page
from islandora_job.exporter.scrape import Scraper

log = logging.getLogger(__name__)

#: Seconds a client has to send its request (and take the answer).
REQUEST_TIMEOUT = 10.0


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True
    #: The listen backlog: socketserver's 5 makes the sixth of a burst of connections wait for a SYN retry (1 s).
    request_queue_size = 128
    #: ``HOST:PORT`` to listen on may name an IPv6 address.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], scraper: Scraper, refresh: int) -> None:
        import socket

        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.scraper = scraper
        self.refresh = refresh
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    timeout = REQUEST_TIMEOUT
    server_version = "islandora-job-exporter"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, exposition.CONTENT_TYPE, exposition.render(self.server.scraper.snapshot()))
        elif path in ("/", "/index.html"):
            snapshot = self.server.scraper.snapshot()
            self._send(200, "text/html; charset=utf-8", page.render(snapshot, self.server.refresh))
        else:
            self._send(404, "text/plain; charset=utf-8", "not found: try / or /metrics\n")

    def do_HEAD(self) -> None:
        self._send(200 if self.path.split("?", 1)[0] in ("/", "/metrics") else 404, "text/plain", "", body=False)

    def _send(self, code: int, content_type: str, text: str, *, body: bool = True) -> None:
        data = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)
