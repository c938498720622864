"""Molecule harness: print a playbook's wall time and its slowest tasks (ansible-core has no profile_tasks).

Enabled by the base molecule config (.config/molecule/config.yml: callbacks_enabled) for every scenario, so that
each scenario's log says where its minutes went.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ansible.plugins.callback import CallbackBase

if TYPE_CHECKING:
    from ansible.executor.stats import AggregateStats
    from ansible.playbook import Playbook
    from ansible.playbook.task import Task

DOCUMENTATION = """
name: ijm_timer
type: aggregate
short_description: wall time of the playbook and its slowest tasks
description:
  - At the end of each playbook, prints its wall time and the ten slowest tasks (summed over hosts' runs).
requirements:
  - enabled in callbacks_enabled
"""

SLOWEST = 10


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ijm_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._start = time.monotonic()
        self._playbook = ""
        self._current: tuple[str, float] | None = None
        self._tasks: dict[str, float] = {}

    def v2_playbook_on_start(self, playbook: Playbook) -> None:
        self._start = time.monotonic()
        self._playbook = str(getattr(playbook, "_file_name", ""))

    def _close(self) -> None:
        """Add the running task's time to its total (a task name run on several plays adds up)."""
        if self._current is not None:
            name, started = self._current
            self._tasks[name] = self._tasks.get(name, 0.0) + time.monotonic() - started
            self._current = None

    def _open(self, name: str) -> None:
        self._close()
        self._current = (name, time.monotonic())

    def v2_playbook_on_task_start(self, task: Task, is_conditional: bool) -> None:
        self._open(str(task.get_name()))

    def v2_playbook_on_handler_task_start(self, task: Task) -> None:
        self._open(f"handler: {task.get_name()}")

    def v2_playbook_on_stats(self, stats: AggregateStats) -> None:
        self._close()
        total = time.monotonic() - self._start
        slowest = sorted(self._tasks.items(), key=lambda kv: kv[1], reverse=True)[:SLOWEST]
        self._display.display(f"TIMING {self._playbook}: {total:.1f} s; slowest tasks:")
        for name, secs in slowest:
            self._display.display(f"  {secs:6.1f} s  {name}")
