"""Admission limits: how many orders may be open, and how fast one account may submit."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict, deque
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


class OpenOrders:
    """Count the open (non-terminal) orders, in all and per account, against their bounds.

    A submission reserves its place before it is stored (`reserve`), so a concurrent burst
    cannot pass the check together; it keeps the place as the order it became (`hold`) or
    gives it back (`release`). Orders found open at start are `adopt`ed without a check.
    `close` ends an order's place. A bound of 0 means no bound.
    """

    def __init__(self, bound: int = 0, per_account: int = 0) -> None:
        self.bound = bound
        self.per_account = per_account
        self._total = 0
        self._by_account: Counter[str] = Counter()
        self._owner: dict[str, str] = {}

    def __len__(self) -> int:
        return self._total

    def of(self, account_id: str) -> int:
        return self._by_account[account_id]

    def reserve(self, account_id: str) -> None:
        """Take one place for `account_id`, or raise Overloaded (nothing taken)."""
        if self.bound > 0 and self._total >= self.bound:
            raise Overloaded(
                f"{self._total} orders are open, the limit is {self.bound}; retry shortly",
                retry_after_s=1,
            )
        held = self._by_account[account_id]
        if self.per_account > 0 and held >= self.per_account:
            raise Overloaded(
                f"account {account_id!r} has {held} open orders, its limit is"
                f" {self.per_account}; retry when some have finished", retry_after_s=1,
            )
        self._take(account_id)

    def release(self, account_id: str) -> None:
        """Give back a place reserved for an order that was not created."""
        self._give(account_id)

    def hold(self, order_id: str, account_id: str) -> None:
        """Keep a reserved place as `order_id`'s until it is closed."""
        if order_id in self._owner:  # already open (a repeat): the reservation goes back
            self._give(account_id)
        else:
            self._owner[order_id] = account_id

    def adopt(self, order_id: str, account_id: str) -> None:
        """Count an order that is already open (found at start), whatever the bounds."""
        if order_id not in self._owner:
            self._owner[order_id] = account_id
            self._take(account_id)

    def close(self, order_id: str) -> None:
        """The order is no longer open here: its place is free."""
        account_id = self._owner.pop(order_id, None)
        if account_id is not None:
            self._give(account_id)

    def _take(self, account_id: str) -> None:
        self._total += 1
        self._by_account[account_id] += 1

    def _give(self, account_id: str) -> None:
        self._total -= 1
        self._by_account[account_id] -= 1
        if self._by_account[account_id] <= 0:
            del self._by_account[account_id]
