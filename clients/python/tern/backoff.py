"""The reconnect policy: exponential backoff with full jitter.

Owns: the delay before each reconnect attempt, `random(0, min(cap, base * 2**n))`, and the
attempt limit. Never: sleeps (the client does), or reads a clock.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """`base` and `cap` in seconds; `max_attempts` None retries forever, 0 never reconnects."""

    base: float = 0.1
    cap: float = 5.0
    max_attempts: int | None = None

    @staticmethod
    def disabled() -> ReconnectPolicy:
        return ReconnectPolicy(max_attempts=0)

    def allows(self, attempt: int) -> bool:
        """Whether attempt number `attempt` (counting consecutive failures from 0) may run."""
        return self.max_attempts is None or attempt < self.max_attempts

    def ceiling(self, attempt: int) -> float:
        return float(min(self.cap, self.base * (2 ** min(attempt, 62))))

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))

    def schedule(self, seed: int) -> Iterator[float]:
        """The delays a client with `jitter_seed=seed` would wait, attempt by attempt."""
        rng = random.Random(seed)
        n = 0
        while self.allows(n):
            yield self.delay(n, rng)
            n += 1
