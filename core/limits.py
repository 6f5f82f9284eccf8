"""Admission limits: how many orders may be open, how long the engine may make them wait, how
fast one account may submit, and how much of each token one order and one day may sell
(safety caps for real money)."""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal

from core.errors import AtCapacity, InvalidInput, LimitExceeded, Overloaded
from core.settings import Settings
from core.tokens import TokenRegistry


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

    def close(self, order_id: str) -> bool:
        """The order is no longer open here: its place is free. False: it was not open."""
        account_id = self._owner.pop(order_id, None)
        if account_id is None:
            return False
        self._give(account_id)
        return True

    def _take(self, account_id: str) -> None:
        self._total += 1
        self._by_account[account_id] += 1

    def _give(self, account_id: str) -> None:
        self._total -= 1
        self._by_account[account_id] -= 1
        if self._by_account[account_id] <= 0:
            del self._by_account[account_id]


class LatencyAdmission:
    """Refuse new orders while the engine already holds more than it finishes in time.

    Little's law: the mean time an order spends in the engine is the number in flight divided
    by the rate they finish. So the engine admits a new order only while

        in_flight < max(floor, throughput * (baseline + budget))

    `throughput` is the rate orders reached a final status, an average over the last few
    `window_s` windows. `baseline` is what an order takes when it waits for nothing: the
    lowest median duration of a successful order in any of the last `history` windows (five
    minutes by default; venues and chain included, so slow venues raise the bound and only
    the engine's own queueing counts against `budget`). A median, not the quickest order: on a
    chain whose confirmations vary, the quickest would put the bound below what an unloaded
    engine holds. Failed orders do not count: one refused at once says nothing of how long an
    order takes. Under load every order waits, so the baseline comes from the quieter moments
    of the last minutes; an overload longer than `history` lets it drift up to what orders
    take then. Past the bound, orders would queue into more than
    `budget` of extra latency: they are refused at once, with a Retry-After of when enough
    will have finished.
    The count in flight moves the moment an order is admitted, so the bound answers a burst
    at once; the estimates only follow what finished. A cold engine (no throughput measured
    yet) admits up to `floor`. A `budget_s` of 0 switches this off.
    """

    def __init__(self, budget_s: float, *, floor: int = 256, window_s: float = 1.0,
                 history: int = 300, min_samples: int = 1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_s = budget_s
        self.floor = floor
        self._window = window_s
        self._min_samples = min_samples
        self._clock = clock
        self._window_start = clock()
        self._finished = 0  # in the current window
        self._durations: list[float] = []  # of the current window's orders
        self._throughput = 0.0  # orders per second
        self._lows: deque[float] = deque(maxlen=history)  # each window's median duration
        self._baseline: float | None = None  # min(self._lows), kept as windows close

    @property
    def throughput(self) -> float:
        self._roll()
        return self._throughput

    @property
    def baseline_s(self) -> float | None:
        self._roll()
        return self._baseline

    def bound(self) -> int | None:
        """Orders in flight beyond which a new one is refused (None: no bound)."""
        if self.budget_s <= 0:
            return None
        baseline = self.baseline_s
        if baseline is None:
            return self.floor
        return max(self.floor, math.ceil(self._throughput * (baseline + self.budget_s)))

    def admits(self, in_flight: int) -> bool:
        """Whether one more order may join the `in_flight` ones."""
        bound = self.bound()
        return bound is None or in_flight < bound

    def check(self, in_flight: int) -> None:
        """Raise AtCapacity when one more order would be past the bound (nothing counted)."""
        bound = self.bound()
        if bound is None or in_flight < bound:  # as admits(), with the bound computed once
            return
        rate = self._throughput
        wait = math.ceil((in_flight - bound + 1) / rate) if rate > 0 else 1
        raise AtCapacity(
            f"the engine is at capacity ({in_flight} orders in flight, finishing"
            f" {rate:.0f}/s); retry in {max(1, wait)} s", retry_after_s=max(1, wait))

    def finished(self, duration_s: float | None) -> None:
        """An order reached its final status; `duration_s` is how long a successful one
        spent in the engine (None: it failed, or an earlier run admitted it)."""
        self._roll()
        self._finished += 1
        if duration_s is not None:
            self._durations.append(duration_s)

    def _roll(self) -> None:
        now = self._clock()
        while now - self._window_start >= self._window:
            self._throughput = 0.5 * self._throughput + 0.5 * self._finished / self._window
            if len(self._durations) >= self._min_samples:
                self._lows.append(statistics.median(self._durations))
                # Once a window, not on every submission's check.
                self._baseline = min(self._lows)
            self._finished = 0
            self._durations = []
            self._window_start += self._window
            if now - self._window_start >= 8 * self._window:  # idle: nothing to average
                self._throughput = 0.0
                self._window_start = now


class AmountCaps:
    """What one order may sell, and what all orders of one UTC day may sell, per input mint
    (base units; a mint without a cap has none).

    The day's tally counts every order accepted that day that has not failed (a failed order
    gives its amount back); dry runs are not counted. It is kept by the one OrderManager, so
    concurrent submissions cannot pass a cap together; at start it is read back from the
    orders table (`load`).
    """

    def __init__(self, per_order: dict[str, int] | None = None,
                 per_day: dict[str, int] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.per_order = dict(per_order or {})
        self.per_day = dict(per_day or {})
        self._clock = clock
        self._day = clock().date()
        self._spent: Counter[str] = Counter()
        self._orders: dict[str, tuple[str, int, date]] = {}  # id -> (mint, amount, its day)

    @staticmethod
    def day_start(now: datetime) -> datetime:
        return datetime(now.year, now.month, now.day, tzinfo=UTC)

    def check_order(self, mint: str, amount: int, symbol: str = "") -> None:
        """Raise LimitExceeded when one order sells more than its cap."""
        cap = self.per_order.get(mint)
        if cap is not None and amount > cap:
            raise LimitExceeded(f"the order sells {amount} base units of {symbol or mint}; the"
                                f" per-order cap is {cap} (DEXEC_MAX_ORDER_AMOUNTS)")

    def load(self, spent: dict[str, int]) -> None:
        """Today's amounts already sold or selling, by mint (read at start)."""
        self._roll()
        self._spent = Counter(spent)

    def reserve(self, mint: str, amount: int, symbol: str = "") -> date:
        """Count `amount` against today's cap, or raise LimitExceeded (nothing counted);
        return the day it counts on (a reservation is given back only on that day)."""
        self._roll()
        cap = self.per_day.get(mint)
        if cap is not None and self._spent[mint] + amount > cap:
            raise LimitExceeded(
                f"today's orders already sell {self._spent[mint]} base units of"
                f" {symbol or mint}; this one would pass the daily cap of {cap}"
                " (DEXEC_MAX_DAILY_AMOUNTS, days in UTC)")
        self._spent[mint] += amount
        return self._day

    def release(self, mint: str, amount: int, day: date) -> None:
        """Give back a reservation whose order was not created (or failed), if its day is
        still today: a day that rolled over started from nothing."""
        self._roll()
        if day == self._day:
            self._spent[mint] = max(0, self._spent[mint] - amount)

    def hold(self, order_id: str, mint: str, amount: int, day: date) -> None:
        """Keep a reservation made on `day` as `order_id`'s, until it finishes or fails."""
        self._orders[order_id] = (mint, amount, day)

    def failed(self, order_id: str) -> None:
        """The order failed: its amount was never sold."""
        found = self._orders.pop(order_id, None)
        if found is not None:
            self.release(*found)

    def finished(self, order_id: str) -> None:
        self._orders.pop(order_id, None)

    def _roll(self) -> None:
        today = self._clock().date()
        if today != self._day:
            self._day = today
            self._spent.clear()
            self._orders = {k: v for k, v in self._orders.items() if v[2] == today}


def caps_in_base_units(caps: dict[str, Decimal], tokens: TokenRegistry) -> dict[str, int]:
    """`{"SOL": Decimal("50")}` as `{sol_mint: 50 * 10**9}`; InvalidInput for an unknown token
    or an amount a token cannot hold."""
    found: dict[str, int] = {}
    for ref, amount in caps.items():
        token = tokens.resolve(ref)
        try:
            found[token.mint] = token.to_base_units(amount)
        except InvalidInput as exc:
            raise InvalidInput(f"cap for {ref}: {exc.message}") from None
    return found


def amount_caps(settings: Settings) -> AmountCaps:
    """The caps of DEXEC_MAX_ORDER_AMOUNTS and DEXEC_MAX_DAILY_AMOUNTS, on the network's
    tokens (InvalidInput for a token it does not have: `dexec up` refuses to start)."""
    tokens = TokenRegistry.for_network(settings.network)
    return AmountCaps(caps_in_base_units(settings.max_order_amounts, tokens),
                      caps_in_base_units(settings.max_daily_amounts, tokens))


def latency_admission(settings: Settings) -> LatencyAdmission:
    """The latency-bounded admission of DEXEC_ADMISSION_BUDGET_MS and DEXEC_ADMISSION_FLOOR."""
    return LatencyAdmission(settings.admission_budget_ms / 1000, floor=settings.admission_floor)
