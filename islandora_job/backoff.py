"""Capped exponential backoff with full jitter.

Used wherever we retry something that failed because of someone else (a server down, a job failing): the delay
doubles each attempt up to a cap, and each actual wait is drawn at random below it so a fleet of workers that lost
the same server does not come back in lockstep ("thundering herd").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    initial: float = 0.1
    cap: float = 30.0
    multiplier: float = 2.0
    jitter: bool = True
    attempts: int = field(default=0, init=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def ceiling(self, attempt: int) -> float:
        """The largest delay for a zero-based attempt number."""
        return float(min(self.cap, self.initial * self.multiplier ** min(attempt, 64)))

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one attempt."""
        ceiling = self.ceiling(self.attempts)
        self.attempts += 1
        if not self.jitter:
            return ceiling
        # Full jitter, but never below a tenth of the ceiling so a retry loop cannot spin.
        return self._rng.uniform(ceiling / 10, ceiling)

    def reset(self) -> None:
        self.attempts = 0


@dataclass(slots=True)
class Throttle:
    """At most one log line per ``window`` seconds for a condition that repeats (a server that keeps failing).

    A reconnection loop logs through one of these, so a server that accepts and then misbehaves costs one line a
    minute, not two per attempt; the line that is let through says how many were held back since the last one.
    """

    window: float = 60.0
    _last: float = field(default=float("-inf"), init=False)
    _held: int = field(default=0, init=False)

    def allow(self, now: float) -> int | None:
        """None to stay quiet; otherwise the number of lines held back since the last one let through."""
        if now - self._last < self.window:
            self._held += 1
            return None
        held, self._last, self._held = self._held, now, 0
        return held

    def reset(self) -> None:
        self._last = float("-inf")
        self._held = 0
