"""``islandora-job exporter``: serve every gearmand's queue as Prometheus metrics and a status page."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from islandora_job import exit_codes, logsetup
from islandora_job.errors import ConfigError

log = logging.getLogger("islandora_job.exporter")


def register(commands: Any) -> None:
    exporter = commands.add_parser(
        "exporter",
        help="serve the gearmand queues as Prometheus metrics (/metrics) and a status page (/)",
        description=(
            "Asks each gearmand for its queue (admin status and prioritystatus) at each scrape, all in parallel "
            "and each within --timeout, and serves /metrics (Prometheus text format) and / (a status page that "
            "flags every server down and every function with jobs waiting and no worker). Flags override the "
            "[exporter] table of --config."
        ),
    )
    exporter.add_argument("--config", metavar="FILE", help="TOML file with an [exporter] table")
    exporter.add_argument(
        "--server", action="append", default=[], metavar="HOST:PORT", help="a gearmand to ask (repeatable)"
    )
    exporter.add_argument("--listen", metavar="ADDR:PORT", help="where to serve HTTP (default 127.0.0.1:9465)")
    exporter.add_argument("--timeout", type=float, metavar="SECONDS", help="deadline of one server's answer (3)")
    exporter.add_argument("--refresh", type=int, metavar="SECONDS", help="the page reloads itself this often (10)")
    exporter.add_argument("--max-functions", type=int, metavar="N", help="functions kept per server (5000)")
    exporter.add_argument(
        "--worker-config", metavar="FILE", help="a worker's TOML: its dead-letter store is counted (read-only)"
    )
    exporter.set_defaults(handler=cmd_exporter)


def cmd_exporter(args: argparse.Namespace) -> int:
    from islandora_job.exporter.http import ExporterServer
    from islandora_job.exporter.scrape import Scraper
    from islandora_job.exporter.settings import resolve

    settings = resolve(
        path=args.config,
        servers=args.server,
        listen=args.listen,
        timeout=args.timeout,
        refresh=args.refresh,
        max_functions=args.max_functions,
        worker_config=args.worker_config,
    )
    logsetup.configure("INFO")
    counts = None
    store_path = ""
    if settings.worker_config:
        from islandora_job.worker.config import load
        from islandora_job.worker.deadletters import DeadLetterStore
        from islandora_job.worker.metrics import CountsWhenChanged

        store = DeadLetterStore.from_config(load(settings.worker_config).dead_letters)
        counts, store_path = CountsWhenChanged(store), store.path
    scraper = Scraper(
        settings.servers,
        timeout=settings.timeout,
        max_functions=settings.max_functions,
        dead_letters=counts,
        dead_letters_path=store_path,
    )
    try:
        server = ExporterServer((settings.listen.host, settings.listen.port), scraper, settings.refresh)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {settings.listen}: {exc.strerror or exc}") from None
    log.info("exporter on http://%s/ asking %s", settings.listen, ", ".join(str(s) for s in settings.servers))
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return exit_codes.OK
