"""Unit tests for OrderExecutor and LandingWatcher with in-memory fakes (no Ray, no database)."""

from __future__ import annotations

import asyncio
import random
import struct
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from actors import executor as executor_module
from actors.batching import Coalescer
from actors.executor import OrderExecutor
from actors.landing import LandingWatcher
from core.errors import (
    DexecError,
    InsufficientFunds,
    InsufficientLiquidity,
    InvalidInput,
    LeaseLost,
    NoRoute,
    OrderNotFound,
    OutcomeUnknownError,
    SlippageExceeded,
    TerminalError,
    TransientDatabaseError,
    VenueTimeout,
    VenueUnavailable,
)
from core.orders import (
    Change,
    Order,
    OrderEvent,
    OrderStatus,
    OrderType,
    TimeInForce,
    Trigger,
)
from core.quotes import Quote, SignedSwap, TxStatus, execution_price, min_amount_out
from core.retry import RetryPolicy
from core.tokens import TokenRegistry
from tests.kit.clock import FakeClock
from tests.kit.fakes import BLOCK_TIME_S, START_HEIGHT, VALID_BLOCKS, Call, FakeVenue, SlowVenue
from tests.kit.orders import ONE_SOL, SOL, T0, USDC, make_order

S = OrderStatus


# --- fakes ---------------------------------------------------------------------------------


class FakeStore:
    """In-memory OrderStore; changes go through Order.apply exactly as the repository's do."""

    def __init__(self, calls: list[Call]) -> None:
        self.calls = calls
        self.rows: dict[str, Order] = {}  # what the orders table holds: no quotes, no events
        self.history: dict[str, list[OrderEvent]] = {}
        self.quotes: dict[str, dict[tuple[int, str], Quote]] = {}
        self.swaps: dict[str, list[tuple[SignedSwap, int]]] = {}
        self.swap_status: dict[str, str] = {}
        # One-off outages: (method, detail) -> errors raised by the next matching calls.
        self.outages: dict[tuple[str, str], list[Exception]] = {}
        self._ticks = 0

    def _outage(self, method: str, detail: str) -> None:
        errors = self.outages.get((method, detail))
        if errors:
            raise errors.pop(0)

    def _now(self) -> datetime:
        self._ticks += 1
        return T0 + timedelta(milliseconds=self._ticks)

    def create(self, order_id: str = "order-1", *, slippage_bps: int = 50,
               dry_run: bool = False) -> Order:
        """Persist a pending order with its first event, like OrderRepository.create_orders."""
        now = self._now()
        order = replace(make_order(order_id=order_id, slippage_bps=slippage_bps,
                                   created_at=now), dry_run=dry_run)
        self.rows[order_id] = order
        self.history[order_id] = [OrderEvent(order_id, 1, S.PENDING, now, attempt=0)]
        self.quotes[order_id] = {}
        self.swaps[order_id] = []
        return order

    async def events_since(self, order_id: str, since_seq: int) -> list[OrderEvent]:
        return [e for e in self.history.get(order_id, []) if e.seq > since_seq]

    async def get_order(self, order_id: str) -> Order | None:
        return self.rows.get(order_id)

    async def apply_change(
        self, order_id: str, change: Change, *, epoch: int | None, expected: Order,
        swap: SignedSwap | None = None, at: datetime | None = None, chained: bool = False,
    ) -> tuple[Order, OrderEvent] | None:
        self._outage("apply_change", str(change.trigger))
        row = self.rows.get(order_id)
        if row is None:
            raise OrderNotFound(f"order {order_id} does not exist")
        if expected.seq != row.seq:
            # Like the repository: a change made from a stale copy is refused.
            raise LeaseLost(f"order {order_id} changed concurrently")
        result = row.apply(change, at or self._now())
        if result is None:
            return None
        order, event = result
        self.rows[order_id] = replace(order, quotes=())
        self.history[order_id].append(event)
        for quote in change.quotes or ():
            self.quotes[order_id].setdefault((change.attempt, quote.venue), quote)
        self.calls.append(("apply_change", str(change.trigger), str(change.attempt)))
        if swap is not None:  # in the same write, like the repository
            self.record_swap(order_id, change.attempt, swap)
        return order, event

    def record_swap(self, order_id: str, attempt: int, swap: SignedSwap) -> None:
        self.calls.append(("record_swap", swap.signature))
        if swap.signature not in self.swap_status:
            self.swaps[order_id].append((swap, attempt))
            self.swap_status[swap.signature] = "signed"

    async def set_swap_status(self, signature: str, status: str) -> None:
        self.calls.append(("set_swap_status", signature, status))
        self._outage("set_swap_status", status)
        if signature in self.swap_status:
            self.swap_status[signature] = status

    async def swaps_for_order(self, order_id: str) -> list[tuple[SignedSwap, int, str]]:
        return [(s, a, self.swap_status[s.signature]) for s, a in self.swaps[order_id]]

    def statuses(self, order_id: str = "order-1") -> list[S]:
        return [e.status for e in self.history[order_id]]

    def events(self, order_id: str = "order-1") -> list[OrderEvent]:
        return list(self.history[order_id])


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[OrderEvent] = []

    def publish(self, event: OrderEvent) -> None:
        self.events.append(event)


@dataclass(frozen=True)
class RecordingPolicy(RetryPolicy):
    """The real policy, remembering every error it was asked about."""

    seen: list[DexecError] = field(default_factory=list, compare=False)

    def should_retry(self, error: DexecError, attempt: int) -> bool:
        self.seen.append(error)
        return super().should_retry(error, attempt)


@dataclass
class World:
    calls: list[Call]
    clock: FakeClock
    store: FakeStore
    raydium: FakeVenue
    meteora: FakeVenue
    sink: RecordingSink
    policy: RecordingPolicy

    def executor(self, *venues: FakeVenue, quote_timeout_s: float = 1.0,
                 dry_run: bool = False, max_order_usd: Decimal | None = None) -> OrderExecutor:
        return OrderExecutor(
            self.store, list(venues or (self.raydium, self.meteora)), self.sink,
            TokenRegistry(), policy=self.policy, quote_timeout_s=quote_timeout_s,
            confirm_poll_s=0.25, resend_interval_s=2.0, sleep=self.clock.sleep,
            clock=self.clock, rng=random.Random(0), dry_run=dry_run,
            max_order_usd=max_order_usd,
        )

    def index(self, call: Call) -> int:
        return self.calls.index(call)


@pytest.fixture
def world() -> World:
    calls: list[Call] = []
    clock = FakeClock()
    return World(
        calls=calls, clock=clock, store=FakeStore(calls),
        raydium=FakeVenue("raydium", 150_000_000, calls, clock),
        meteora=FakeVenue("meteora", 149_500_000, calls, clock),
        sink=RecordingSink(), policy=RecordingPolicy(max_attempts=3, base_delay_s=0.2,
                                                     max_delay_s=5.0, jitter=0.5),
    )


async def submitted_order(world: World, swap: SignedSwap, *, status: S = S.SUBMITTED) -> Order:
    """Drive a fresh order to `status` for attempt 1 with `swap` recorded (a crashed worker)."""
    order = world.store.create()
    quote = await world.raydium.quote(SOL, USDC, ONE_SOL)
    steps = [
        Change(Trigger.START_ROUTING, 1),
        Change(Trigger.ROUTE_CHOSEN, 1, venue="raydium", quotes=(quote,)),
        Change(Trigger.TX_SENT, 1, venue="raydium", signature=swap.signature),
    ]
    for step in steps:
        if order.status is status:
            break
        result = await world.store.apply_change(order.order_id, step, epoch=None,
                                                expected=order)
        assert result is not None
        order = result[0]
    world.store.record_swap(order.order_id, 1, swap)
    world.calls.clear()
    return order


def recorded_swap(height: int, signature: str = "raydium-sig-crashed") -> SignedSwap:
    return SignedSwap("raydium", signature, b"crashed-bytes", height + VALID_BLOCKS, 149_250_000)


def assert_gapless(events: list[OrderEvent]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def assert_trail(events: list[OrderEvent], expected: list[tuple[OrderStatus, int]]) -> None:
    """Assert the events are gapless and record exactly these (status, attempt) steps."""
    assert_gapless(events)
    assert [(e.status, e.attempt) for e in events] == expected


class GatedLease:
    """A lease granted once the test opens `gate` (None from try_acquire: the order is busy)."""

    valid = True
    epoch = None
    order = None

    def __init__(self, *, busy: bool = False) -> None:
        self.gate = asyncio.Event()
        self.asked = asyncio.Event()
        self.busy = busy
        self.released = False

    async def try_acquire(self, order_id: str) -> GatedLease | None:
        self.asked.set()
        await self.gate.wait()
        return None if self.busy else self

    async def release(self) -> None:
        self.released = True


# --- the happy path ------------------------------------------------------------------------


async def test_happy_path_goes_pending_to_confirmed_with_gapless_events(world: World) -> None:
    order = world.store.create()

    status = await world.executor().execute(order.order_id)

    assert status == S.CONFIRMED
    events = world.store.events()
    assert [e.status for e in events] == [S.PENDING, S.ROUTING, S.BUILDING, S.SUBMITTED,
                                          S.CONFIRMED]
    assert_gapless(events)
    assert [e.attempt for e in events] == [0, 1, 1, 1, 1]
    # Everything after the stored `pending` event was published, in order.
    assert world.sink.events == events[1:]

    (swap, memo), = world.raydium.built
    building, submitted, confirmed = events[2], events[3], events[4]
    assert building.venue == "raydium"
    assert building.quotes is not None
    assert sorted(q["venue"] for q in building.quotes) == ["meteora", "raydium"]
    assert submitted.signature == swap.signature
    assert confirmed.signature == swap.signature
    assert confirmed.amount_out == 150_000_000
    assert confirmed.price == execution_price(ONE_SOL, 9, 150_000_000, 6) == Decimal(150)

    final = world.store.rows[order.order_id]
    assert final.status is S.CONFIRMED
    assert final.venue == "raydium"
    assert final.signature == swap.signature
    assert final.amount_out == 150_000_000
    assert final.failure_reason is None
    assert world.store.swap_status == {swap.signature: "confirmed"}
    assert world.raydium.sent == [swap.signature]
    assert world.meteora.built == []
    assert world.meteora.sent == []
    # The transaction protects the quote by the order's slippage, and names the order.
    assert swap.min_amount_out == min_amount_out(150_000_000, 50) == 149_250_000
    assert order.order_id in memo


class BatchingStore(FakeStore):
    """FakeStore behind a real Coalescer, as the worker's BatchedStore is: writes asked for
    while a batch gathers travel together, applied in order; each batch is remembered."""

    def __init__(self, calls: list[Call]) -> None:
        super().__init__(calls)
        self.batches: list[list[str]] = []
        # No window, as in the engine by default: a batch leaves at the end of the turn.
        self._writes: Coalescer[tuple[str, Any], Any] = Coalescer(self._write_many,
                                                                  window_s=0)

    async def _write_many(self, ops: list[tuple[str, Any]]) -> list[Any]:
        self.batches.append([op[1][1].trigger.name if op[0] == "change" else f"{op[1][1]} swap"
                             for op in ops])
        answers: list[Any] = []
        for kind, args in ops:
            try:
                if kind == "change":
                    order_id, change, epoch, expected, swap, at, chained = args
                    answers.append(await super().apply_change(
                        order_id, change, epoch=epoch, expected=expected, swap=swap, at=at,
                        chained=chained))
                else:
                    answers.append(await super().set_swap_status(*args))
            except DexecError as exc:
                answers.append(exc)
        return answers

    async def apply_change(
        self, order_id: str, change: Change, *, epoch: int | None, expected: Order,
        swap: SignedSwap | None = None, at: datetime | None = None, chained: bool = False,
    ) -> tuple[Order, OrderEvent] | None:
        answer: tuple[Order, OrderEvent] | None = await self._writes(
            ("change", (order_id, change, epoch, expected, swap, at, chained)))
        return answer

    async def set_swap_status(self, signature: str, status: str) -> None:
        await self._writes(("status", (signature, status)))


async def test_a_swap_that_landed_on_arrival_is_confirmed_in_the_same_write_as_submitted(
        world: World) -> None:
    """When the send already answered the swap's status, `confirmed` is asked for while
    `submitted` still gathers company, so both go in one write batch (the repository
    writes such a chain as one statement), and the events are still published in order."""
    world.store = BatchingStore(world.calls)
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    assert ["TX_SENT", "confirmed swap", "TX_CONFIRMED"] in world.store.batches
    events = world.store.events()
    assert [e.status for e in events] == [S.PENDING, S.ROUTING, S.BUILDING, S.SUBMITTED,
                                          S.CONFIRMED]
    assert_gapless(events)
    assert world.sink.events == events[1:]


async def test_a_fresh_orders_routing_is_written_with_its_route_chosen(world: World) -> None:
    """`routing` is not written on its own before the quotes: it goes in the same write
    batch as the route chosen and its swap (one statement in the repository), and the
    events are published in order."""
    world.store = BatchingStore(world.calls)
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    assert world.store.batches[0] == ["START_ROUTING", "ROUTE_CHOSEN"]
    routing, building = world.store.events()[1:3]
    assert (routing.status, building.status) == (S.ROUTING, S.BUILDING)
    quoted = world.index(("quote", "raydium"))
    assert quoted < world.index(("apply_change", "start_routing", "1"))
    assert world.sink.events == world.store.events()[1:]


async def test_routing_is_written_while_slow_venues_answer(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Venues slower than ROUTING_WRITE_AFTER_S: `routing` is on record (and published)
    while they are still being asked, alone, before the route is chosen."""
    monkeypatch.setattr(executor_module, "ROUTING_WRITE_AFTER_S", 0.02)
    world.store = BatchingStore(world.calls)
    slow = SlowVenue("slowswap", 160_000_000, world.calls, world.clock)
    order = world.store.create()

    status = await world.executor(slow, world.raydium, quote_timeout_s=0.2).execute(
        order.order_id)

    assert status == S.CONFIRMED
    assert world.store.batches[:2] == [["START_ROUTING"], ["ROUTE_CHOSEN"]]
    assert world.sink.events == world.store.events()[1:]


async def test_a_fresh_order_whose_quotes_fail_has_its_attempt_on_record_before_the_retry(
        world: World) -> None:
    """No route on the first attempt: the unwritten `routing` is written first, so the
    failure counts against the attempt cap as before (attempt 1, then a retry)."""
    world.store = BatchingStore(world.calls)
    world.raydium.quote_failures = [VenueUnavailable("down", venue="raydium")]
    world.meteora.quote_failures = [VenueUnavailable("down", venue="meteora")]
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    assert world.store.batches[0] == ["START_ROUTING"]
    assert [(e.status, e.attempt) for e in world.store.events()][:4] == [
        (S.PENDING, 0), (S.ROUTING, 1), (S.ROUTING, 2), (S.BUILDING, 2)]


async def test_a_route_chosen_refused_only_because_its_start_went_first_is_asked_again(
        world: World) -> None:
    """A batch split put `routing` in one write and the chained route chosen in the next,
    which refuses a chained change: it is asked for again from the order as written, and
    the order completes with one swap, recorded before it was sent."""
    world.store.outages[("apply_change", "route_chosen")] = [
        LeaseLost("order order-1: the change it follows is not in this statement")]
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    assert len(world.raydium.built) == 1 and len(world.raydium.sent) == 1
    assert world.store.statuses() == [S.PENDING, S.ROUTING, S.BUILDING, S.SUBMITTED,
                                      S.CONFIRMED]


async def test_a_confirmation_refused_as_chained_is_written_after_submitted(
        world: World) -> None:
    world.store.outages[("apply_change", "tx_confirmed")] = [
        LeaseLost("order order-1: the change it follows is not in this statement")]
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    assert world.store.statuses() == [S.PENDING, S.ROUTING, S.BUILDING, S.SUBMITTED,
                                      S.CONFIRMED]
    assert len(world.raydium.sent) == 1


async def test_a_swap_still_on_its_way_is_confirmed_after_submitted_is_written(
        world: World) -> None:
    """Not landed at the first lookup: nothing is predicted; `confirmed` follows later."""
    world.store = BatchingStore(world.calls)
    world.raydium.land_after_polls = 2
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    [sent] = [b for b in world.store.batches if "TX_SENT" in b]
    assert "TX_CONFIRMED" not in sent
    assert_gapless(world.store.events())
    assert world.sink.events == world.store.events()[1:]


@pytest.mark.parametrize(("own", "deployment"), [(True, False), (False, True)])
async def test_a_dry_run_is_built_and_simulated_but_never_sent_nor_recorded(
        world: World, own: bool, deployment: bool) -> None:
    order = world.store.create(dry_run=own)

    status = await world.executor(dry_run=deployment).execute(order.order_id)

    assert status == S.SIMULATED
    assert world.store.statuses() == [S.PENDING, S.ROUTING, S.BUILDING, S.SIMULATED]
    (swap, _), = world.raydium.built
    assert ("simulate", swap.signature) in world.calls
    assert world.raydium.sent == [] and world.meteora.sent == []
    assert world.store.swap_status == {}  # nothing that could land is on record
    final = world.store.rows[order.order_id]
    assert final.amount_out == 150_000_000 and final.price == Decimal(150)


@pytest.mark.parametrize(("cap", "final"), [(Decimal(100), S.FAILED), (Decimal(200),
                                                                        S.CONFIRMED)])
async def test_an_order_worth_more_than_the_usd_cap_fails_before_anything_is_signed(
        world: World, cap: Decimal, final: S) -> None:
    order = world.store.create()  # 1 SOL for about 150 USDC
    world.raydium.per_input = Fraction(150_000_000, ONE_SOL)
    world.meteora.per_input = Fraction(149_500_000, ONE_SOL)

    status = await world.executor(max_order_usd=cap).execute(order.order_id)

    assert status == final
    if final is S.FAILED:
        assert world.raydium.built == [] and world.meteora.built == []
        assert "per-order cap is 100 USD" in (world.store.rows[order.order_id].failure_reason
                                              or "")


async def test_a_token_without_a_stablecoin_pool_is_priced_through_sol(world: World) -> None:
    """Selling RAY for SOL under a USD cap: no venue quotes RAY -> USDC, so a thousandth
    of the order is priced RAY -> SOL -> USDC."""
    ray = TokenRegistry().resolve("RAY").mint
    order = replace(world.store.create(), input_mint=ray, output_mint=SOL)
    world.store.rows[order.order_id] = order
    for venue in (world.raydium, world.meteora):
        venue.no_pool = {(ray, USDC)}
        venue.per_input = Fraction(1, 100)  # 1 RAY (1e6) -> 1e4 lamports; 1e4 -> 100 units

    status = await world.executor(max_order_usd=Decimal(1)).execute(order.order_id)

    priced = [c for c in world.calls if c[0] == "quote"]
    assert status == S.CONFIRMED, world.store.rows[order.order_id].failure_reason
    assert len(priced) >= 6  # the order's two quotes, then RAY->USDC, RAY->SOL, SOL->USDC


async def test_a_thin_pool_does_not_make_a_large_order_look_small(world: World) -> None:
    """Priced before impact: the fakes pay 1 USDC for any amount, so the whole order (1 SOL)
    quotes 1 USD, but a thousandth of it quotes 1 USDC too: the order is worth 1,000 USD."""
    order = world.store.create()
    world.raydium.amount_out = world.meteora.amount_out = 1_000_000

    status = await world.executor(max_order_usd=Decimal(100)).execute(order.order_id)

    assert status == S.FAILED
    assert world.raydium.built == [] and world.meteora.built == []


async def test_a_dry_run_whose_simulation_fails_fails_with_its_reason(world: World) -> None:
    order = world.store.create(dry_run=True)
    world.raydium.simulate_failures = [SlippageExceeded("exceeded slippage: 6005")]

    status = await world.executor().execute(order.order_id)

    assert status == S.FAILED
    assert world.raydium.sent == []
    assert "6005" in (world.store.rows[order.order_id].failure_reason or "")


async def test_all_quotes_are_recorded_and_the_best_one_chosen(world: World) -> None:
    world.meteora.amount_out = 151_000_000  # now meteora pays more
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    recorded = world.store.quotes[order.order_id]
    assert {key: q.amount_out for key, q in recorded.items()} == {
        (1, "raydium"): 150_000_000, (1, "meteora"): 151_000_000,
    }
    assert world.store.rows[order.order_id].venue == "meteora"
    assert world.store.rows[order.order_id].amount_out == 151_000_000
    assert world.raydium.built == []
    assert len(world.meteora.built) == 1


async def test_one_venue_failing_to_quote_leaves_the_other(world: World) -> None:
    world.raydium.quote_failures = [VenueUnavailable("raydium answered 503", venue="raydium")]
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    building = world.store.events()[2]
    assert building.venue == "meteora"
    assert building.quotes is not None
    assert [q["venue"] for q in building.quotes] == ["meteora"]
    assert world.store.rows[order.order_id].attempt == 1
    assert world.raydium.built == []
    assert world.policy.seen == []  # nothing failed as far as the order is concerned


async def test_a_venue_raising_a_library_error_is_skipped(world: World) -> None:
    world.raydium.quote_failures = [RuntimeError("connection reset")]
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED
    assert world.store.rows[order.order_id].venue == "meteora"


# --- a fresh order handed over: quoted while its lease is taken ---------------------------


async def handed_over(world: World, lease: GatedLease, stored: Order
                      ) -> tuple[OrderExecutor, asyncio.Future[str | None]]:
    """Start executing `stored`'s order, handed over as `stored`, under `lease`; return the
    executor and its run once the lease is asked for and what started beside it had its turn."""
    executor = OrderExecutor(
        world.store, [world.raydium, world.meteora], world.sink, TokenRegistry(),
        policy=world.policy, quote_timeout_s=1.0, confirm_poll_s=0.25, sleep=world.clock.sleep,
        clock=world.clock, rng=random.Random(0), leases=lease)
    running = asyncio.ensure_future(executor.execute(stored.order_id, stored))
    await lease.asked.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    return executor, running


async def test_a_fresh_order_handed_over_is_quoted_while_its_lease_is_taken(
        world: World) -> None:
    order = world.store.create()
    lease = GatedLease()
    _, running = await handed_over(world, lease, order)
    # Both venues are asked before the lease is granted; nothing is signed or written yet.
    assert sorted(c for c in world.calls if c[0] == "quote") == [
        ("quote", "meteora"), ("quote", "raydium")]
    assert not [c for c in world.calls if c[0] in ("build_swap", "apply_change", "send")]
    assert world.store.rows[order.order_id].status is S.PENDING

    lease.gate.set()
    assert await running == S.CONFIRMED
    # The quotes asked for early are the attempt's quotes: no venue is asked twice.
    assert len([c for c in world.calls if c[0] == "quote"]) == 2
    assert_trail(world.store.events(), [(S.PENDING, 0), (S.ROUTING, 1), (S.BUILDING, 1),
                                        (S.SUBMITTED, 1), (S.CONFIRMED, 1)])
    assert lease.released


async def test_early_quotes_are_dropped_when_the_lease_finds_the_order_moved_on(
        world: World) -> None:
    order = world.store.create()
    lease = GatedLease()
    _, running = await handed_over(world, lease, order)
    # Cancelled by its owner while the worker waited for the lease.
    await world.store.apply_change(order.order_id, Change(Trigger.CANCEL, 0, error="cancel"),
                                   epoch=None, expected=order)
    lease.gate.set()

    assert await running == S.CANCELLED
    assert not [c for c in world.calls if c[0] in ("build_swap", "send")]
    assert [e.status for e in world.store.events()] == [S.PENDING, S.CANCELLED]


async def test_early_quotes_are_dropped_when_another_executor_holds_the_order(
        world: World) -> None:
    order = world.store.create()
    lease = GatedLease(busy=True)
    executor, running = await handed_over(world, lease, order)
    assert [c for c in world.calls if c[0] == "quote"]  # asked for while the lease was taken
    lease.gate.set()

    assert await running == executor_module.BUSY
    assert not [c for c in world.calls if c[0] in ("build_swap", "apply_change", "send")]
    assert world.store.rows[order.order_id].status is S.PENDING
    # The early quoting is over, its answer dropped: nothing left running or held for it.
    assert not executor._early
    assert not [t for t in asyncio.all_tasks()
                if getattr(t.get_coro(), "__qualname__", "") == "OrderExecutor._quotes"
                and not t.done()]


class WindingDownVenue(FakeVenue):
    """A venue whose quote never answers and, once cancelled, ends only when `ended_may` is set."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked, self.cancelled, self.ended_may, self.ended = (
            asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event())

    async def quote(self, input_mint: str, output_mint: str, amount_in: int) -> Quote:
        self.asked.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            await self.ended_may.wait()
            self.ended.set()
            raise
        raise AssertionError("unreachable")


async def test_an_executor_cancelled_while_its_unused_early_quotes_wind_down_is_cancelled(
        world: World) -> None:
    venue = WindingDownVenue("raydium", 150_000_000, world.calls, world.clock)
    order = world.store.create()
    lease = GatedLease(busy=True)
    executor = OrderExecutor(
        world.store, [venue], world.sink, TokenRegistry(), policy=world.policy,
        quote_timeout_s=60.0, confirm_poll_s=0.25, sleep=world.clock.sleep, clock=world.clock,
        rng=random.Random(0), leases=lease)
    running = asyncio.ensure_future(executor.execute(order.order_id, order))
    await venue.asked.wait()
    lease.gate.set()  # another executor holds the order: the early quotes are dropped
    await venue.cancelled.wait()

    running.cancel()  # e.g. the worker shutting down, while the quote winds down
    await asyncio.wait({running}, timeout=5.0)
    # Cancelled at once, not swallowed into a BUSY answer once the quote has ended.
    assert running.cancelled()
    venue.ended_may.set()
    await asyncio.wait_for(venue.ended.wait(), 5.0)  # the dropped quote did wind down
    assert not executor._early
    assert not [c for c in world.calls if c[0] in ("build_swap", "apply_change", "send")]


async def test_an_order_handed_over_with_no_copy_or_not_fresh_is_quoted_after_its_lease(
        world: World) -> None:
    order = world.store.create()
    lease = GatedLease()
    _, running = await handed_over(world, lease, replace(order, status=S.OPEN))
    assert not [c for c in world.calls if c[0] == "quote"]
    lease.gate.set()
    assert await running == S.CONFIRMED


# --- retries -------------------------------------------------------------------------------


async def test_all_venues_failing_once_is_retried_and_confirms_on_attempt_two(
    world: World,
) -> None:
    world.raydium.quote_failures = [VenueTimeout("raydium timed out", venue="raydium")]
    world.meteora.quote_failures = [VenueUnavailable("meteora is down", venue="meteora")]
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    events = world.store.events()
    assert_trail(events, [
        (S.PENDING, 0), (S.ROUTING, 1), (S.ROUTING, 2), (S.BUILDING, 2), (S.SUBMITTED, 2),
        (S.CONFIRMED, 2),
    ])
    retry = events[2]
    assert retry.error is not None
    assert "no venue answered with a quote" in retry.error
    assert retry.error_class == "retryable"
    assert isinstance(world.policy.seen[0], NoRoute)
    assert world.store.rows[order.order_id].attempt == 2
    # One backoff, inside the jitter band of the first delay.
    assert len(world.clock.sleeps) == 1
    assert 0.1 <= world.clock.sleeps[0] <= 0.3


async def test_retryable_errors_every_time_fail_after_three_attempts(world: World) -> None:
    world.raydium.always_fail_quote = VenueUnavailable("raydium answered 503", venue="raydium")
    world.meteora.always_fail_quote = VenueTimeout("meteora timed out", venue="meteora")
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.FAILED

    events = world.store.events()
    assert_trail(events, [
        (S.PENDING, 0), (S.ROUTING, 1), (S.ROUTING, 2), (S.ROUTING, 3), (S.FAILED, 3),
    ])
    final = world.store.rows[order.order_id]
    assert final.attempt == 3
    assert final.failure_reason is not None
    assert "no venue answered with a quote" in final.failure_reason
    assert "raydium answered 503" in final.failure_reason
    assert events[-1].error == final.failure_reason
    assert events[-1].error_class == "retryable"
    assert world.calls.count(("quote", "raydium")) == 3
    assert world.calls.count(("quote", "meteora")) == 3
    assert world.raydium.built == [] and world.meteora.built == []
    # Two backoffs, the second from the doubled band.
    first, second = world.clock.sleeps
    assert 0.1 <= first <= 0.3
    assert 0.2 <= second <= 0.6


async def test_a_failed_build_is_retried_with_a_fresh_quote(world: World) -> None:
    world.raydium.build_failures = [VenueUnavailable("signer busy", venue="raydium")]
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    # Nothing was signed in attempt 1, so it never reached `building`.
    assert_trail(world.store.events(), [
        (S.PENDING, 0), (S.ROUTING, 1), (S.ROUTING, 2), (S.BUILDING, 2),
        (S.SUBMITTED, 2), (S.CONFIRMED, 2),
    ])
    assert world.calls.count(("quote", "raydium")) == 2


async def test_a_swap_refused_at_build_fails_naming_the_route_it_had_chosen(
        world: World) -> None:
    world.raydium.build_failures = [InvalidInput("refused to sign the venue's transaction")]
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.FAILED

    # Nothing was signed, so nothing reached `building`; the failure keeps the route's record.
    assert world.store.statuses() == [S.PENDING, S.ROUTING, S.FAILED]
    failed = world.store.events()[-1]
    assert failed.venue == "raydium" and failed.quotes is not None
    assert sorted(q["venue"] for q in failed.quotes) == ["meteora", "raydium"]
    assert world.store.rows[order.order_id].venue == "raydium"
    assert world.store.swaps[order.order_id] == [] and world.raydium.sent == []


async def test_every_venue_refusing_for_good_fails_at_once(world: World) -> None:
    world.raydium.always_fail_quote = InsufficientLiquidity("pool too shallow", venue="raydium")
    world.meteora.always_fail_quote = InsufficientLiquidity("bins empty", venue="meteora")
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.FAILED

    final = world.store.rows[order.order_id]
    assert final.attempt == 1
    assert final.failure_reason is not None
    assert "no venue can fill this order" in final.failure_reason
    assert world.clock.sleeps == []


async def test_an_order_the_wallet_cannot_pay_for_fails_at_once_without_quotes(
        world: World) -> None:
    world.raydium.funds = ONE_SOL - 1
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.FAILED

    final = world.store.rows[order.order_id]
    assert final.attempt == 1 and final.failure_reason is not None
    assert "the wallet holds" in final.failure_reason
    assert not [c for c in world.calls if c[0] == "quote"]  # no venue was asked
    assert world.clock.sleeps == []  # and nothing was retried


async def test_the_funds_are_checked_once_per_attempt(world: World) -> None:
    order = world.store.create()
    assert await world.executor().execute(order.order_id) == S.CONFIRMED
    assert world.raydium.funds_checked == 1


# --- chain failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        ("slippage_exceeded", SlippageExceeded),
        ("insufficient_funds", InsufficientFunds),
        ("insufficient_liquidity", InsufficientLiquidity),
        ("something_else", TerminalError),
    ],
)
async def test_a_transaction_failing_on_chain_fails_the_order_at_once(
    world: World, code: str, error_type: type[DexecError]
) -> None:
    message = f"{code.replace('_', ' ')}: pool pays 149000000, minimum 149250000"
    world.raydium.chain_error = (message, code)
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.FAILED

    events = world.store.events()
    assert [e.status for e in events] == [S.PENDING, S.ROUTING, S.BUILDING, S.SUBMITTED,
                                          S.FAILED]
    assert_gapless(events)
    final = world.store.rows[order.order_id]
    assert final.attempt == 1
    assert final.failure_reason == message
    assert events[-1].error_class == "terminal"
    assert type(world.policy.seen[-1]) is error_type
    assert world.policy.seen[-1].venue == "raydium"
    (swap, _), = world.raydium.built
    assert world.store.swap_status == {swap.signature: "failed"}
    assert world.raydium.sent == [swap.signature]
    assert world.clock.sleeps == []


async def test_slippage_exceeded_names_the_reason(world: World) -> None:
    world.raydium.chain_error = ("slippage exceeded: pool pays 149000000, minimum 149250000",
                                 "slippage_exceeded")
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.FAILED

    reason = world.store.rows[order.order_id].failure_reason
    assert reason is not None
    assert "slippage exceeded" in reason
    assert isinstance(world.policy.seen[-1], SlippageExceeded)
    assert len(world.raydium.built) == 1  # never re-signed at a worse price


async def test_send_refused_for_good_marks_the_swap_rejected_and_fails(world: World) -> None:
    world.raydium.send_failures = [InvalidInput("transaction rejected: bad signature")]
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.FAILED

    (swap, _), = world.raydium.built
    assert world.store.swap_status == {swap.signature: "rejected"}
    assert S.SUBMITTED not in world.store.statuses()
    assert world.store.rows[order.order_id].failure_reason == "transaction rejected: bad signature"


# --- exactly once ---------------------------------------------------------------------------


async def test_the_swap_is_recorded_before_it_is_sent(world: World) -> None:
    order = world.store.create()

    await world.executor().execute(order.order_id)

    (swap, _), = world.raydium.built
    assert world.index(("record_swap", swap.signature)) < world.index(("send", swap.signature))
    # ...in the very write that says which venue was chosen (one statement in the repository).
    assert world.index(("apply_change", "route_chosen", "1")) + 1 == world.index(
        ("record_swap", swap.signature))


async def test_a_swap_whose_write_is_refused_is_never_sent(world: World) -> None:
    # A cancel (or a newer lease) won while the swap was being signed: the write that would
    # have recorded it with the route is refused, so nothing of it is stored or sent. (Twice:
    # a change refused right after its chained start was written is asked once more, in
    # case only a batch split refused it; a real concurrent change refuses that too.)
    world.store.outages[("apply_change", "route_chosen")] = [
        LeaseLost("order order-1 changed concurrently"),
        LeaseLost("order order-1 changed concurrently")]
    order = world.store.create()

    with pytest.raises(LeaseLost):
        await world.executor().execute(order.order_id)

    assert len(world.raydium.built) == 1  # it was signed...
    assert world.store.swaps[order.order_id] == []  # ...never recorded...
    assert world.raydium.sent == [] and world.meteora.sent == []  # ...and never sent
    assert world.store.statuses() == [S.PENDING, S.ROUTING]


async def test_resumed_submitted_order_polls_the_recorded_signature(world: World) -> None:
    swap = recorded_swap(START_HEIGHT)
    world.raydium.landed[swap.signature] = TxStatus(swap.signature, True, START_HEIGHT + 3,
                                                    149_800_000)
    order = await submitted_order(world, swap)

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    assert ("statuses", swap.signature) in world.calls
    assert world.raydium.built == [] and world.meteora.built == []
    assert not [c for c in world.calls if c[0] == "quote"]
    final = world.store.rows[order.order_id]
    assert final.signature == swap.signature
    assert final.amount_out == 149_800_000
    assert final.attempt == 1
    assert world.store.statuses()[-2:] == [S.SUBMITTED, S.CONFIRMED]
    assert_gapless(world.store.events())
    assert world.store.swap_status[swap.signature] == "confirmed"


async def test_resumed_swap_not_yet_seen_is_resent_with_the_same_bytes(world: World) -> None:
    swap = recorded_swap(START_HEIGHT)
    order = await submitted_order(world, swap)

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    assert world.raydium.built == []
    assert world.raydium.sent == [swap.signature]
    assert world.store.rows[order.order_id].signature == swap.signature
    # It looked before sending again.
    assert world.index(("statuses", swap.signature)) < world.index(("send", swap.signature))


async def test_resumed_order_signed_but_never_sent_sends_the_recorded_swap(world: World) -> None:
    swap = recorded_swap(START_HEIGHT)
    order = await submitted_order(world, swap, status=S.BUILDING)

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    assert world.raydium.built == []
    assert world.raydium.sent == [swap.signature]
    events = world.store.events()
    assert_gapless(events)
    assert [e.status for e in events] == [S.PENDING, S.ROUTING, S.BUILDING, S.SUBMITTED,
                                          S.CONFIRMED]
    assert events[3].signature == swap.signature


async def test_expired_and_absent_swap_leads_to_a_new_attempt(world: World) -> None:
    world.clock.now = 200 * BLOCK_TIME_S  # 200 blocks later: the recorded swap expired
    swap = recorded_swap(START_HEIGHT)
    order = await submitted_order(world, swap)

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    assert swap.signature not in world.raydium.sent  # expired bytes are never sent
    (new_swap, memo), = world.raydium.built
    assert new_swap.signature != swap.signature
    assert memo.endswith("2") and order.order_id in memo
    assert ("quote", "raydium") in world.calls  # re-quoted
    assert world.store.swap_status == {swap.signature: "expired",
                                       new_swap.signature: "confirmed"}
    events = world.store.events()
    assert_gapless(events)
    assert [(e.status, e.attempt) for e in events[-5:]] == [
        (S.SUBMITTED, 1), (S.ROUTING, 2), (S.BUILDING, 2), (S.SUBMITTED, 2), (S.CONFIRMED, 2),
    ]
    assert events[-4].error is not None and "expired" in events[-4].error
    assert world.store.rows[order.order_id].signature == new_swap.signature


async def test_a_swap_seen_but_unconfirmed_after_expiry_is_never_signed_anew(
        world: World) -> None:
    """`processed` is not absence: a swap the cluster has seen may still land, however late."""
    world.clock.now = 200 * BLOCK_TIME_S  # the recorded swap's blockhash expired long ago
    swap = recorded_swap(START_HEIGHT)
    world.raydium.pending_polls[swap.signature] = 5
    world.raydium.pending_swaps[swap.signature] = swap
    order = await submitted_order(world, swap)

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    assert world.raydium.built == []  # nothing was signed anew
    assert world.store.swap_status == {swap.signature: "confirmed"}
    assert world.store.rows[order.order_id].signature == swap.signature


async def test_a_swap_that_never_lands_expires_then_is_retried(world: World) -> None:
    world.raydium.never_land_next_builds = 1
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    (first, _), (second, _) = world.raydium.built
    # The first transaction was re-sent (same bytes) while it could still land...
    assert world.raydium.sent.count(first.signature) > 1
    assert set(world.raydium.sent) == {first.signature, second.signature}
    # ...and only given up once the chain was past its last valid block height.
    assert world.raydium.height() > first.last_valid_block_height
    assert world.store.swap_status == {first.signature: "expired",
                                       second.signature: "confirmed"}
    final = world.store.rows[order.order_id]
    assert final.attempt == 2
    assert final.signature == second.signature
    assert_gapless(world.store.events())


async def test_send_failing_retryably_reconciles_by_signature(world: World) -> None:
    world.raydium.send_failures = [VenueTimeout("send timed out", venue="raydium")]
    world.raydium.land_despite_send_failure = True  # the bytes got through before the timeout
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    (swap, _), = world.raydium.built
    assert world.raydium.sent == [swap.signature]
    assert ("statuses", swap.signature) in world.calls
    final = world.store.rows[order.order_id]
    assert final.attempt == 1
    assert final.signature == swap.signature
    assert S.SUBMITTED in world.store.statuses()
    assert world.policy.seen == []


async def test_send_failing_retryably_resends_the_same_bytes_not_a_new_swap(
    world: World,
) -> None:
    world.raydium.send_failures = [VenueUnavailable("503", venue="raydium")]  # nothing landed
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    (swap, _), = world.raydium.built
    assert world.raydium.sent == [swap.signature, swap.signature]
    assert world.store.rows[order.order_id].attempt == 1
    # The resend waited for the resend interval, polling in between.
    assert world.clock.now >= 2.0


async def test_send_refused_as_expired_is_not_reported_submitted(world: World) -> None:
    world.raydium.refuse_as_expired = {"raydium-sig-1"}
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    # The chain refused the bytes: nothing was submitted for attempt 1, and the swap is
    # marked expired at once rather than polled until its blockhash runs out.
    assert world.store.swap_status["raydium-sig-1"] == "expired"
    assert world.raydium.sent.count("raydium-sig-1") == 1
    assert (S.SUBMITTED, 1) not in [(e.status, e.attempt) for e in world.store.events()]
    assert world.store.rows[order.order_id].attempt == 2


async def test_a_failed_block_height_lookup_does_not_sign_a_second_swap(world: World) -> None:
    world.raydium.land_after_polls = 3  # the swap is in flight for a few polls
    world.raydium.height_failures = [VenueUnavailable("rpc answered 503", venue="raydium")]
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    # The first transaction may still land: the order must keep reconciling it.
    assert len(world.raydium.built) == 1, "signed a second swap while the first was in flight"
    assert len(world.raydium.executed()) == 1
    assert world.store.rows[order.order_id].attempt == 1


@pytest.mark.parametrize("failing_write", [
    pytest.param(("set_swap_status", "confirmed"), id="after_confirmation"),
    # The bytes were sent before the write failed; they were recorded, so settle them.
    pytest.param(("apply_change", "tx_sent"), id="recording_the_send"),
])
async def test_a_database_blip_does_not_sign_a_second_swap(
    world: World, failing_write: tuple[str, str],
) -> None:
    world.store.outages[failing_write] = [
        TransientDatabaseError("database unavailable: connection lost")]
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    assert len(world.raydium.built) == 1, "signed a second swap after the first one landed"
    swap = world.raydium.built[0][0]
    assert world.raydium.executed() == [swap.signature]
    assert world.store.rows[order.order_id].signature == swap.signature


async def test_a_database_blip_on_the_route_write_signs_anew_and_sends_only_that(
        world: World) -> None:
    # The write that would have recorded the first swap failed: it was never stored, so it
    # was never sent, and the next attempt signs its own.
    world.store.outages[("apply_change", "route_chosen")] = [
        TransientDatabaseError("database unavailable: connection lost")]
    order = world.store.create()

    assert await world.executor().execute(order.order_id) == S.CONFIRMED

    first, second = (swap for swap, _ in world.raydium.built)
    assert world.raydium.sent == [second.signature]
    assert world.raydium.executed() == [second.signature]
    assert [s.signature for s, _ in world.store.swaps[order.order_id]] == [second.signature]
    assert first.signature != second.signature


# --- nothing to do --------------------------------------------------------------------------


async def test_terminal_and_unknown_orders_are_left_alone(world: World) -> None:
    order = world.store.create()
    await world.store.apply_change(order.order_id, Change(Trigger.FAIL, 0, error="cancelled"),
                                   epoch=None, expected=order)
    world.calls.clear()

    assert await world.executor().execute(order.order_id) == S.FAILED
    assert await world.executor().execute("no-such-order") is None
    # Nothing is written or asked of a venue; only the last event is pushed again, in case
    # the worker that wrote it died before pushing it (streams dedupe by seq).
    assert [(e.seq, e.status) for e in world.sink.events] == [(2, S.FAILED)]
    assert world.calls == []


async def test_executing_a_confirmed_order_again_only_repeats_its_last_event(world: World) -> None:
    order = world.store.create()
    executor = world.executor()
    assert await executor.execute(order.order_id) == S.CONFIRMED
    published = len(world.sink.events)

    assert await executor.execute(order.order_id) == S.CONFIRMED
    assert len(world.sink.events) == published + 1
    assert world.sink.events[-1] == world.sink.events[published - 1]  # the terminal event again
    assert len(world.raydium.built) == 1


# --- a slow venue ---------------------------------------------------------------------------


async def test_a_slow_venue_does_not_hold_up_the_order(world: World) -> None:
    slow = SlowVenue("slowswap", 160_000_000, world.calls, world.clock)
    order = world.store.create()

    status = await world.executor(slow, world.raydium, quote_timeout_s=0.05).execute(
        order.order_id)

    assert status == S.CONFIRMED
    assert world.store.rows[order.order_id].venue == "raydium"


# -- found in review: outcome-unknown paths must reconcile, never re-sign --------------------


async def test_status_lookup_failing_at_expiry_does_not_sign_a_second_swap(world: World) -> None:
    venue = world.raydium
    venue.land_after_polls = 10_000  # the first transaction lands only after many polls
    original = venue.statuses
    landed = {"done": False}

    async def flaky(signatures: list[str]) -> list[Any]:
        answer = await original(signatures)
        if venue.height() > START_HEIGHT + 20 and not landed["done"]:
            for signature, (swap, _) in list(venue.in_flight.items()):
                del venue.in_flight[signature]
                venue.execute_swap(swap)  # it lands just as the status RPC starts failing
            landed["done"] = True
        if landed["done"] and world.clock.now < 10_000:
            raise VenueUnavailable("rpc 503", venue="raydium")
        return answer

    venue.statuses = flaky  # type: ignore[method-assign]
    order = world.store.create()
    status = await world.executor(venue).execute(order.order_id)
    assert len(venue.executed()) == 1
    assert status == "confirmed"


async def test_outcome_unknown_on_send_reconciles_instead_of_failing(world: World) -> None:
    world.raydium.send_failures = [OutcomeUnknownError("AlreadyProcessed", venue="raydium")]
    world.raydium.land_despite_send_failure = True
    order = world.store.create()
    status = await world.executor(world.raydium).execute(order.order_id)
    assert len(world.raydium.executed()) == 1
    assert status == "confirmed"


async def test_an_untranslated_library_error_is_bounded_by_the_attempt_cap(world: World) -> None:
    world.raydium.build_failures = [struct.error("argument out of range")] * 10
    order = world.store.create()
    status = await world.executor(world.raydium).execute(order.order_id)
    assert status == "failed"
    assert world.store.rows[order.order_id].attempt == 3
    assert "argument out of range" in (world.store.rows[order.order_id].failure_reason or "")


# --- waiting for swaps to land through the shared LandingWatcher ----------------------------


async def _sent_swaps(world: World, prefix: str, count: int, *, land_after_polls: int
                      ) -> list[SignedSwap]:
    """Send `count` swaps to raydium that land after that many status polls; forget the calls."""
    world.raydium.land_after_polls = land_after_polls
    swaps = [SignedSwap("raydium", f"{prefix}-{i}", b"bytes", 10**12, 1) for i in range(count)]
    for swap in swaps:
        await world.raydium.send(swap)
    world.calls.clear()
    return swaps


async def test_landing_watcher_asks_once_per_venue_for_every_pending_signature(
    world: World,
) -> None:
    venue = world.raydium
    swaps = await _sent_swaps(world, "sig", 50, land_after_polls=3)
    watcher = LandingWatcher(poll_s=0.001)

    statuses = await asyncio.gather(*(watcher.wait(venue, s.signature, 5.0) for s in swaps))

    assert all(s is not None and s.confirmed for s in statuses)
    polls = [c for c in world.calls if c[0] == "statuses"]
    assert len(polls) == 3, "one call per round, not one per signature"
    assert sorted(polls[0][1:]) == sorted(s.signature for s in swaps)
    assert watcher.watched == 0


async def test_landing_watcher_gives_up_after_the_wait_and_survives_failed_lookups(
    world: World,
) -> None:
    venue = world.raydium
    venue.land_after_polls = 10**6  # never within this test
    swap = SignedSwap("raydium", "sig-slow", b"bytes", 10**12, 1)
    await venue.send(swap)
    original = venue.statuses
    failures = [VenueUnavailable("rpc answered 503", venue="raydium")]

    async def flaky(signatures: list[str]) -> list[TxStatus | None]:
        if failures:
            raise failures.pop()
        return await original(signatures)

    venue.statuses = flaky  # type: ignore[method-assign]
    watcher = LandingWatcher(poll_s=0.001)

    assert await watcher.wait(venue, swap.signature, 0.05) is None
    assert not failures, "the failed round was tolerated and polling went on"
    assert watcher.watched == 0


async def test_executor_with_a_landing_watcher_confirms_a_swap_that_lands_later(
    world: World,
) -> None:
    world.raydium.land_after_polls = 5
    order = world.store.create()
    executor = OrderExecutor(
        world.store, [world.raydium, world.meteora], world.sink, TokenRegistry(),
        policy=world.policy, quote_timeout_s=1.0, confirm_poll_s=0.25,
        resend_interval_s=2.0, sleep=world.clock.sleep, clock=world.clock,
        rng=random.Random(0), landing=LandingWatcher(poll_s=0.001), recheck_s=5.0,
    )

    assert await executor.execute(order.order_id) == S.CONFIRMED
    assert len(world.raydium.built) == 1
    assert world.raydium.sent == [world.raydium.built[0][0].signature]
    assert world.clock.sleeps == [], "waiting for the landing is the watcher's, not a poll loop"


async def test_landing_watcher_asks_for_at_most_256_signatures_a_call(world: World) -> None:
    venue = world.raydium
    swaps = await _sent_swaps(world, "many", 300, land_after_polls=1)
    watcher = LandingWatcher(poll_s=0.001)

    await asyncio.gather(*(watcher.wait(venue, s.signature, 5.0) for s in swaps))

    sizes = sorted(len(c) - 1 for c in world.calls if c[0] == "statuses")
    assert sizes == [44, 256]


# --- limit and stop orders -------------------------------------------------------------------


def conditional(world: World, limit: str, *, tif: TimeInForce = TimeInForce.GTC,
                order_type: OrderType = OrderType.LIMIT, expires_at: datetime | None = None,
                ) -> Order:
    """A pending limit order selling 1 SOL for USDC (the venues pay 150 and 149.5)."""
    order = world.store.create()
    order = replace(order, order_type=order_type, limit_price=Decimal(limit),
                    time_in_force=tif, expires_at=expires_at)
    world.store.rows[order.order_id] = order
    return order


async def triggered(world: World, order: Order) -> Order:
    """The order as the price watcher leaves it: rested, then set off."""
    for change in (Change(Trigger.REST, 0), Change(Trigger.PRICE_REACHED, 1)):
        result = await world.store.apply_change(order.order_id, change, epoch=None,
                                                expected=order)
        assert result is not None
        order = result[0]
    return order


async def test_ioc_expires_when_the_best_quote_misses_its_limit(world: World) -> None:
    order = conditional(world, "150.01", tif=TimeInForce.IOC)
    assert await world.executor().execute(order.order_id) == S.EXPIRED
    final = world.store.rows[order.order_id]
    assert world.store.statuses() == [S.PENDING, S.ROUTING, S.EXPIRED]
    assert final.failure_reason is not None and "ioc" in final.failure_reason
    assert "150.01" in final.failure_reason
    last = world.store.events()[-1]
    assert last.price == Decimal(150) and last.quotes is not None  # what it was tried against
    assert world.raydium.built == [] and world.meteora.built == []


async def test_a_limit_sets_the_swaps_least_output(world: World) -> None:
    order = conditional(world, "149.9", tif=TimeInForce.IOC)
    assert await world.executor().execute(order.order_id) == S.CONFIRMED
    (swap, _), = world.raydium.built
    # 50 bps of slippage would allow 149.25; the limit allows no less than 149.9.
    assert swap.min_amount_out == 149_900_000 > min_amount_out(150_000_000, 50)


async def test_a_set_off_order_rests_again_when_its_own_quote_misses(world: World) -> None:
    order = await triggered(world, conditional(world, "150.5"))
    assert await world.executor().execute(order.order_id) == S.OPEN
    assert world.store.statuses() == [S.PENDING, S.OPEN, S.ROUTING, S.OPEN]
    assert world.raydium.built == []


async def test_a_resting_order_refused_for_slippage_rests_instead_of_failing(
    world: World,
) -> None:
    order = await triggered(world, conditional(world, "149"))
    world.raydium.chain_error = ("slippage exceeded", "slippage_exceeded")
    assert await world.executor().execute(order.order_id) == S.OPEN
    assert_trail(world.store.events(), [
        (S.PENDING, 0), (S.OPEN, 0), (S.ROUTING, 1), (S.BUILDING, 1), (S.SUBMITTED, 1),
        (S.ROUTING, 2), (S.OPEN, 2)])
    assert world.store.events()[-1].error == "slippage exceeded"
    assert world.store.rows[order.order_id].failure_reason is None


async def test_nothing_is_built_for_an_order_past_its_time(world: World) -> None:
    order = conditional(world, "1", tif=TimeInForce.GTT,
                        expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert await world.executor().execute(order.order_id) == S.EXPIRED
    assert world.store.statuses() == [S.PENDING, S.EXPIRED]
    order = await triggered(world, conditional(world, "1", tif=TimeInForce.GTT,
                                               expires_at=datetime.now(UTC) + timedelta(
                                                   milliseconds=1)))
    await asyncio.sleep(0.01)
    assert await world.executor().execute(order.order_id) == S.EXPIRED
    assert world.raydium.built == [] and world.meteora.built == []


async def test_a_resting_order_resumed_past_its_attempts_rests_instead_of_failing(
    world: World,
) -> None:
    order = conditional(world, "149")
    for change in (Change(Trigger.REST, 0), Change(Trigger.PRICE_REACHED, 3),
                   Change(Trigger.ROUTE_CHOSEN, 3, venue="raydium")):
        result = await world.store.apply_change(order.order_id, change, epoch=None,
                                                expected=order)
        assert result is not None
        order = result[0]
    # Interrupted after routing, at the attempt cap, with nothing signed.
    assert await world.executor().execute(order.order_id) == S.OPEN
    assert world.store.statuses()[-2:] == [S.ROUTING, S.OPEN]
    assert world.raydium.built == []
