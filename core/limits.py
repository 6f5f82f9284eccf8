"""Admission limits: how many orders may be open, and how fast one account may submit."""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable

from core.errors import Overloaded


class AccountRateLimit:
    """Allow at most `per_minute` accepted orders per account in any 60-second window."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._accepted: dict[str, deque[float]] = defaultdict(deque)

    def check(self, account_id: str) -> None:
        """Raise Overloaded (with a Retry-After) when the account is at its limit."""
        if self.per_minute <= 0:
            return
        now = self._clock()
        window = self._accepted[account_id]
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= self.per_minute:
            wait = max(1, math.ceil(window[0] + 60.0 - now))
            raise Overloaded(
                f"account {account_id!r} reached its limit of {self.per_minute} orders per"
                f" minute; retry in {wait} s", retry_after_s=wait,
            )

    def record(self, account_id: str) -> None:
        """Count one accepted order."""
        if self.per_minute > 0:
            self._accepted[account_id].append(self._clock())

    def forget(self, account_id: str) -> None:
        """Take back the newest count (the order was not stored after all)."""
        window = self._accepted.get(account_id)
        if window:
            window.pop()


def check_open_orders(open_orders: int, bound: int) -> None:
    """Raise Overloaded when `open_orders` already reached `bound` (0: no bound)."""
    if bound > 0 and open_orders >= bound:
        raise Overloaded(
            f"{open_orders} orders are open, the limit is {bound}; retry shortly",
            retry_after_s=1,
        )
