"""The worker side: a supervisor, its worker processes, and what runs a job inside one.

Nothing on the client side (the flat modules next to this package: codec, connection, client, admin, payload,
queue_move, ...) imports from here; this package builds on them. docs/architecture.md has the picture of a job's
path through these modules, and tests/unit/test_layering.py checks the rule.

- :mod:`~islandora_job.worker.pool`: the supervisor. Starts, watches, recycles and reloads worker processes.
- :mod:`~islandora_job.worker.child`: one worker process's entry point (``python -m islandora_job.worker.child``).
- :mod:`~islandora_job.worker.process`: the worker's I/O loop, one selector over every server link.
- :mod:`~islandora_job.worker.link` and :mod:`~islandora_job.worker.protocol`: one server link's socket, and its
  socket-free Gearman state machine.
- :mod:`~islandora_job.worker.router`, :mod:`~islandora_job.worker.registry`, :mod:`~islandora_job.worker.context`:
  from an assignment to a Python job's call and back to an outcome.
- :mod:`~islandora_job.worker.bridge`: command jobs (drush and other programs) run as a process group.
- :mod:`~islandora_job.worker.persistent` and :mod:`~islandora_job.worker.runner_protocol`: the persistent PHP
  runner (``persistent = true`` entries, ``islandora_job/php/runner.php``), and its socket-free framing.
- :mod:`~islandora_job.worker.config`, :mod:`~islandora_job.worker.runtime`: worker.toml, and what it builds.
- :mod:`~islandora_job.worker.deadlines`, :mod:`~islandora_job.worker.deadletters`,
  :mod:`~islandora_job.worker.metrics`, :mod:`~islandora_job.worker.sdnotify`: the supervisor's watch on a hung
  job, failed jobs kept, Prometheus figures, systemd readiness.
"""
