"""The status page: one HTML document a person reads, no JavaScript, refreshing itself with a meta refresh.

Problems come first and in words (a server down, a function with jobs waiting and no worker), then a table per
server. Every text from the network (function names, error texts) is HTML-escaped here and nowhere else.
"""

from __future__ import annotations

import html
import time

from islandora_job.exporter.scrape import ServerSnapshot, Snapshot

_STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
p.meta { color: #555; margin: 0 0 1em; }
ul.problems { background: #fde8e8; border-left: 5px solid #c62828; padding: .6em 1em .6em 2em; }
p.ok { background: #e6f4ea; border-left: 5px solid #2e7d32; padding: .6em 1em; }
table { border-collapse: collapse; min-width: 32em; }
th, td { padding: .25em .8em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.unserved td { background: #fde8e8; font-weight: bold; }
span.flag { color: #fff; background: #c62828; border-radius: 3px; padding: 0 .4em; font-size: .85em; }
span.down { color: #fff; background: #c62828; border-radius: 3px; padding: 0 .4em; }
span.up { color: #fff; background: #2e7d32; border-radius: 3px; padding: 0 .4em; }
code { background: #f3f3f3; padding: 0 .2em; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def problems(snapshot: Snapshot) -> list[str]:
    """Each problem as one sentence of HTML (escaped): servers down, then functions waiting with no worker."""
    found: list[str] = []
    for server in snapshot.servers:
        if not server.up:
            found.append(
                f'Server <code>{_e(server.server)}</code> is <span class="down">DOWN</span>: {_e(server.error)}'
            )
    for server in snapshot.servers:
        for row in server.functions:
            if row.unserved:
                found.append(
                    f'<span class="flag">NO WORKER</span> <code class="function">{_e(row.function)}</code> has '
                    f"{row.waiting} job(s) waiting on <code>{_e(server.server)}</code> and no worker"
                )
    if snapshot.dead_letters_error:
        found.append(f"Dead letters cannot be read: {_e(snapshot.dead_letters_error)}")
    return found


def _server_table(server: ServerSnapshot, letters: dict[str, int] | None) -> str:
    state = '<span class="up">up</span>' if server.up else '<span class="down">DOWN</span>'
    head = f"<h2>{_e(server.server)} {state} <small>({server.seconds * 1000:.0f} ms)</small></h2>\n"
    if not server.up:
        return head + f"<p>{_e(server.error)}</p>\n"
    if not server.functions:
        return head + "<p>No function known to this server.</p>\n"
    dead = "<th>Dead letters</th>" if letters is not None else ""
    out = [head, "<table>\n<tr><th>Function</th><th>Waiting</th><th>Running</th><th>Workers</th>"]
    out.append(f"<th>High</th><th>Normal</th><th>Low</th>{dead}</tr>\n")
    for row in server.functions:
        flag = ' <span class="flag">NO WORKER</span>' if row.unserved else ""
        cls = ' class="unserved"' if row.unserved else ""
        cells = [
            row.waiting,
            row.running,
            row.workers,
            *(("" if n is None else n) for n in (row.high, row.normal, row.low)),
        ]
        if letters is not None:
            cells.append(letters.get(row.function, 0))
        out.append(
            f'<tr{cls}><td><code class="function">{_e(row.function)}</code>{flag}</td>'
            + "".join(f"<td>{_e(cell)}</td>" for cell in cells)
            + "</tr>\n"
        )
    out.append("</table>\n")
    if server.dropped:
        out.append(f"<p>{server.dropped} more function(s) not shown (the exporter's max_functions).</p>\n")
    return "".join(out)


def _dead_letter_table(snapshot: Snapshot) -> str:
    if snapshot.dead_letters is None:
        return ""
    where = f"<h2>Dead letters in <code>{_e(snapshot.dead_letters_path)}</code></h2>\n"
    if not snapshot.dead_letters:
        return where + "<p>None.</p>\n"
    rows = "".join(
        f'<tr><td><code class="function">{_e(f)}</code></td><td>{n}</td></tr>\n'
        for f, n in sorted(snapshot.dead_letters.items())
    )
    return where + f"<table>\n<tr><th>Function</th><th>Dead letters</th></tr>\n{rows}</table>\n"


def render(snapshot: Snapshot, refresh: int) -> str:
    """The page; ``refresh`` seconds until the browser loads it again."""
    found = problems(snapshot)
    if found:
        summary = '<ul class="problems">\n' + "".join(f"<li>{p}</li>\n" for p in found) + "</ul>\n"
    else:
        summary = '<p class="ok">No problem: every server answers, and every function with jobs has a worker.</p>\n'
    title = f"{len(found)} problem(s)" if found else "OK"
    body = "".join(_server_table(server, snapshot.dead_letters) for server in snapshot.servers)
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="refresh" content="{int(refresh)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>islandora-job: {title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        "<h1>islandora-job: Gearman queues</h1>\n"
        f'<p class="meta">{_e(when)}; refreshes every {int(refresh)} s; '
        f"asked {len(snapshot.servers)} server(s) in {snapshot.seconds * 1000:.0f} ms; "
        '<a href="metrics">metrics</a></p>\n'
        f"{summary}{body}{_dead_letter_table(snapshot)}</body>\n</html>\n"
    )
