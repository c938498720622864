"""``islandora-job exporter``: every gearmand's queue as Prometheus metrics (``/metrics``) and a page (``/``).

The worker's own endpoint sees only its own jobs; the failure that costs sites days is a function with jobs
waiting and no worker at all, which only the servers can tell. This exporter asks each gearmand ``status`` and
``prioritystatus`` over one admin connection per scrape, all servers in parallel, each under one short deadline,
and serves the result as metrics and as a status page for a person (no JavaScript, refreshing itself).

Modules: :mod:`.scrape` asks the servers (bounded in time and memory), :mod:`.exposition` writes the Prometheus
text format, :mod:`.page` the HTML page, :mod:`.settings` reads the flags and the TOML file, :mod:`.http` serves.
"""
