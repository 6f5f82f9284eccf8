"""The one retry policy: exponential backoff with jitter and an attempt cap."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from core.errors import DexecError, ErrorClass, reason

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        raw = min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1))
        spread = raw * self.jitter
        jittered = raw - spread + (rng or random).random() * 2 * spread
        return min(self.max_delay_s, max(0.0, jittered))


async def retry_until_done(
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    first_delay_s: float = 0.5,
    max_delay_s: float = 10.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `attempt` until it succeeds, doubling the wait after each failure up to a cap.

    For start-up steps that must eventually happen (the database may still be down when an
    actor restarts); order work never retries this way, it goes through RetryPolicy.
    """
    delay = first_delay_s
    while True:
        try:
            return await attempt()
        except Exception as exc:
            log.warning("%s failed (%s); retrying in %.1fs", what, reason(exc), delay)
            await sleep(delay)
            delay = min(delay * 2, max_delay_s)
