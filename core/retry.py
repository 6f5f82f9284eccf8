"""The one retry policy: exponential backoff with jitter and an attempt cap."""

from __future__ import annotations

import random
from dataclasses import dataclass

from core.errors import DexecError, ErrorClass


@dataclass(frozen=True)
class RetryPolicy:
    """Decide whether a failed attempt is retried and how long to wait first."""

    max_attempts: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0
    jitter: float = 0.5

    def should_retry(self, error: DexecError, attempt: int) -> bool:
        """Return True when `attempt` (1-based) failed with `error` and another is allowed."""
        return error.error_class is ErrorClass.RETRYABLE and attempt < self.max_attempts

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the backoff in seconds before attempt `attempt + 1`."""
        raw = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        spread = raw * self.jitter
        jittered = raw - spread + (rng or random).random() * 2 * spread
        return min(self.max_delay_s, max(0.0, jittered))
