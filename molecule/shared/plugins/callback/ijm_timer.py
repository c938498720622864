# Molecule harness: print a playbook's wall time and its slowest tasks (ansible-core has no profile_tasks).
from __future__ import annotations

DOCUMENTATION = """
name: ijm_timer
type: aggregate
short_description: wall time of the playbook and its slowest tasks
description:
  - At the end of each playbook, prints its wall time and the ten slowest tasks (summed over hosts' runs).
requirements:
  - enabled in callbacks_enabled
"""

import time

from ansible.plugins.callback import CallbackBase


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

    def v2_playbook_on_start(self, playbook) -> None:  # noqa: ANN001
        self._start = time.monotonic()
        self._playbook = getattr(playbook, "_file_name", "")

    def _close(self) -> None:
        if self._current is not None:
            name, started = self._current
            self._tasks[name] = self._tasks.get(name, 0.0) + time.monotonic() - started
            self._current = None

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:  # noqa: ANN001
        self._close()
        self._current = (task.get_name(), time.monotonic())

    def v2_playbook_on_handler_task_start(self, task) -> None:  # noqa: ANN001
        self._close()
        self._current = (f"handler: {task.get_name()}", time.monotonic())

    def v2_playbook_on_stats(self, stats) -> None:  # noqa: ANN001
        self._close()
        total = time.monotonic() - self._start
        slowest = sorted(self._tasks.items(), key=lambda kv: kv[1], reverse=True)[:10]
        self._display.display(f"TIMING {self._playbook}: {total:.1f} s; slowest tasks:")
        for name, secs in slowest:
            self._display.display(f"  {secs:6.1f} s  {name}")
