"""Executing one order: route, build, record, send, confirm, retry; plain and testable."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol, TypeVar

from actors.landing import LandingWatcher
from actors.tasks import cancel_and_wait
from actors.telemetry import Metrics, NullMetrics, order_log
from core.errors import (
    BlockhashExpired,
    DexecError,
    IllegalTransition,
    InsufficientFunds,
    InsufficientLiquidity,
    LeaseLost,
    LimitExceeded,
    NoRoute,
    OutcomeUnknownError,
    RetryableError,
    SlippageExceeded,
    TerminalError,
    reason,
)
from core.orders import Change, Order, OrderEvent, OrderStatus, OrderType, TimeInForce, Trigger
from core.quotes import (
    Quote,
    SignedSwap,
    SwapStatus,
    TxStatus,
    choose_best,
    execution_price,
    min_amount_out,
)
from core.retry import RetryPolicy
from core.tokens import USD_SYMBOLS, TokenRegistry
from gateways.base import VenueGateway
from gateways.quotes import collect_quotes

log = logging.getLogger(__name__)
T = TypeVar("T")

_CHAIN_ERRORS: dict[str, type[DexecError]] = {
    "slippage_exceeded": SlippageExceeded,
    "insufficient_funds": InsufficientFunds,
    "insufficient_liquidity": InsufficientLiquidity,
}


class OrderStore(Protocol):
    """What the executor reads and writes (actors.order_store.BatchedStore in a worker)."""

    async def get_order(self, order_id: str) -> Order | None:
        """Return the order as stored, without its history (None: unknown)."""
        ...

    async def events_since(self, order_id: str, since_seq: int) -> list[OrderEvent]: ...

    async def apply_change(
        self, order_id: str, change: Change, *, epoch: int | None, expected: Order,
        swap: SignedSwap | None = None, at: datetime | None = None, chained: bool = False,
    ) -> tuple[Order, OrderEvent] | None:
        """Apply the change to `expected` (the order as this executor knows it) and write it
        only if the stored order is still that one and `epoch` its newest lease; None: the
        change was a repeat, nothing written. `swap`, signed for this change, is persisted
        with it, atomically (the exactly-once rule: recorded before it is sent). `at`: when
        the change happened (None: now). `chained`: `expected` is the order as a change
        asked for just before leaves it; written only in the same statement as that one,
        refused otherwise."""
        ...

    async def set_swap_status(self, signature: str, status: SwapStatus) -> None: ...

    async def swaps_for_order(self, order_id: str
                              ) -> list[tuple[SignedSwap, int, SwapStatus]]: ...


class MintSource(Protocol):
    """Learns the tokens of mints on no list (gateways.solana.mints.MintLookup)."""

    async def ensure(self, refs: Iterable[str]) -> None: ...


class EventSink(Protocol):
    def publish(self, event: OrderEvent) -> None: ...


async def token_price(tokens: TokenRegistry, mints: MintSource | None, input_mint: str,
                      output_mint: str, amount_in: int, amount_out: int) -> Decimal | None:
    """Output per input in token units, learning the mints no list names (`mints`); None
    when a token's decimals are unknown. Raises the DexecError a failed lookup raised."""
    refs = [input_mint, output_mint]
    if mints is not None and not all(tokens.knows(m) for m in refs):
        await mints.ensure(refs)
    if not all(tokens.knows(m) for m in refs):
        return None
    return execution_price(amount_in, tokens.by_mint(input_mint).decimals, amount_out,
                           tokens.by_mint(output_mint).decimals)


class Lease(Protocol):
    """The right to execute one order; passed to every step that touches the order."""

    @property
    def valid(self) -> bool: ...

    @property
    def epoch(self) -> int | None:
        """The order's lease epoch; the store refuses writes made under an older one."""
        ...

    @property
    def order(self) -> Order | None:
        """The order as it stood when the lease was taken (None: read it)."""
        ...

    async def release(self) -> None: ...


class LeaseProvider(Protocol):
    """Grants one executor at a time the right to work on an order."""

    async def try_acquire(self, order_id: str) -> Lease | None: ...


class _Unshared:
    """The lease of a single-process set-up: always granted, never lost."""

    valid = True
    epoch = None
    order = None

    async def try_acquire(self, order_id: str) -> _Unshared:
        return self

    async def release(self) -> None:
        return None


BUSY = "busy"  # another executor holds the order's lease
# A fresh order's `routing` is written with its next change, or after this long if the
# venues have not all answered by then (see OrderExecutor._attempt).
ROUTING_WRITE_AFTER_S = 0.25
# A swap in one of these may still decide the order's attempt: it can land (signed), or it
# landed and its outcome is not applied to the order yet.
_OUTCOME_PENDING = frozenset({SwapStatus.SIGNED, SwapStatus.CONFIRMED, SwapStatus.FAILED})
Checkpoint = Callable[[str, str], Awaitable[None]]  # (point, order_id); fault injection


async def _no_checkpoint(point: str, order_id: str) -> None:
    return None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _same_request(a: Order, b: Order) -> bool:
    """Whether two versions of an order ask the venues for the same quotes."""
    return (a.order_id, a.input_mint, a.output_mint, a.amount_in) == (
        b.order_id, b.input_mint, b.output_mint, b.amount_in)


async def _alongside(write: Awaitable[Order], work: Awaitable[T]) -> tuple[Order, T]:
    """Run a status write and work that need not wait for it, at once. Both finish before
    this answers; the write's failure wins (the order is not this executor's to go on with),
    then the work's, handled with the write's outcome on record."""
    written, done = await asyncio.gather(write, work, return_exceptions=True)
    if isinstance(written, BaseException):
        raise written
    if isinstance(done, BaseException):
        raise done
    return written, done


class OrderExecutor:
    """Take an order from wherever it stands to a terminal status, exactly once."""

    def __init__(
        self,
        store: OrderStore,
        gateways: Sequence[VenueGateway],
        events: EventSink,
        tokens: TokenRegistry,
        *,
        policy: RetryPolicy,
        quote_timeout_s: float,
        confirm_poll_s: float,
        resend_interval_s: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        leases: LeaseProvider | None = None,
        checkpoint: Checkpoint = _no_checkpoint,
        metrics: Metrics | None = None,
        landing: LandingWatcher | None = None,
        recheck_s: float = 1.0,
        dry_run: bool = False,
        max_order_usd: Decimal | None = None,
        mints: MintSource | None = None,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        # With a LandingWatcher, a pending swap is checked for expiry and resent every
        # `recheck_s` and otherwise waits for the shared poll; without, it polls on its own.
        self._landing = landing
        self._recheck = recheck_s
        self._metrics: Metrics = metrics or NullMetrics()
        self._store = store
        self._leases: LeaseProvider = leases or _Unshared()
        self._checkpoint = checkpoint
        self._gateways = {g.name: g for g in gateways}
        self._events = events
        self._tokens = tokens
        self._dry_run = dry_run  # DEXEC_DRY_RUN: no order is ever sent
        self._max_usd = max_order_usd
        self._mints = mints  # learns the tokens of an order's mints that no list names
        self._usd = sorted(t.mint for t in tokens.tokens if t.symbol in USD_SYMBOLS)
        self._policy = policy
        self._quote_timeout = quote_timeout_s
        self._poll = confirm_poll_s
        self._resend_interval = resend_interval_s
        self._sleep = sleep
        self._clock = clock
        self._now = now  # wall time, for orders that expire
        self._rng = rng or random.Random()  # noqa: S311 - jitter only
        # order id -> (venue, quotes) of an attempt whose swap could not be built
        self._unbuilt: dict[str, tuple[str, tuple[Quote, ...]]] = {}
        # order id -> (the order as stored, the change that starts its first attempt, when):
        # not written yet, see _attempt
        self._unwritten: dict[str, tuple[Order, Change, datetime]] = {}
        # order id -> (the fresh order as handed over, its quotes asked for while the lease
        # is taken, when they were asked for): see execute
        self._early: dict[str, tuple[Order, asyncio.Future[list[Quote]], datetime]] = {}

    async def execute(self, order_id: str, stored: Order | None = None) -> str | None:
        """Drive the order to confirmed or failed and return its final status.

        Returns BUSY, touching nothing, while another executor holds the order's lease, and
        None for an unknown order. Raises LeaseLost if the lease is lost midway.

        `stored`: the order as the manager stored it, when it hands over a fresh one. Its
        quotes are then asked for while the lease is taken, instead of after: a quote reads
        and changes nothing, and what it depends on (the pair, the amount) never changes.
        They are used only if the lease finds the order still pending (see _attempt); nothing
        is signed or written before the lease is held.
        """
        now = self._now()
        if stored is not None and stored.status is OrderStatus.PENDING and not stored.rests \
                and not stored.expired(now):
            self._early[order_id] = (stored, asyncio.ensure_future(self._quotes(stored)), now)
        try:
            lease = await self._leases.try_acquire(order_id)
            if lease is None:
                return BUSY
            try:
                status = await self._execute(order_id, lease)
                return str(status) if status is not None else None
            finally:
                self._unbuilt.pop(order_id, None)
                self._unwritten.pop(order_id, None)
                await lease.release()
        finally:
            early = self._early.pop(order_id, None)
            if early is not None:  # not used: the order was busy, moved, or failed first
                await cancel_and_wait(early[1])

    @staticmethod
    def _guard(lease: Lease) -> None:
        if not lease.valid:
            raise LeaseLost("the order's execution lease was lost; another executor may own it")

    async def _execute(self, order_id: str, lease: Lease) -> OrderStatus | None:
        # The lease may carry the order as it stood when taken: no second read then.
        order = lease.order
        if order is None:
            order = await self._store.get_order(order_id)
        if order is None:
            order_log(order_id).warning("order %s not found", order_id)
            return None
        if order.is_terminal:
            # Dispatched again after finishing: its last event may have died with the worker
            # that wrote it (committed, not yet pushed). Push it again; streams dedupe by seq.
            for event in await self._store.events_since(order_id, order.seq - 1):
                self._events.publish(event)
            return order.status
        if order.status is OrderStatus.OPEN:
            return order.status  # resting: only the price watcher sets it off
        if order.status is OrderStatus.PENDING and order.expired(self._now()):
            return (await self._change(lease, order, Change(
                Trigger.EXPIRE, order.attempt, error="expired before it was routed"))).status
        if order.status is OrderStatus.PENDING and order.rests:
            return (await self._change(lease, order, Change(Trigger.REST, order.attempt))).status
        unknown_outcomes = 0
        while True:
            try:
                swap = await self._unsettled_swap(order)
                if swap is not None:
                    order = await self._settle(lease, order, swap, send_first=True)
                else:
                    order = await self._attempt(lease, order)
                return order.status
            except LeaseLost:
                raise
            except IllegalTransition as err:
                # The stored order moved under us: it is never failed for that. Stop here and
                # let the dispatcher hand it over again, to be resumed from its record.
                raise LeaseLost(f"order {order_id} changed concurrently: {reason(err)}") from None
            except Exception as exc:
                # A library error that no gateway translated still counts against the
                # attempt cap, instead of escaping and being dispatched again forever.
                failure = exc if isinstance(exc, DexecError) else RetryableError(reason(exc))
                await self._write_unwritten(lease, order_id)  # the attempt is on record first
                order = await self._store.get_order(order_id) or order
                if order.status is OrderStatus.PENDING:
                    raise  # no attempt is on record: the dispatcher hands the order over again
                if failure.retryable and await self._unsettled_swap(order) is not None:
                    # A signed transaction may still land: never re-sign, reconcile by its
                    # signature again (settle ends once it landed or provably expired).
                    unknown_outcomes += 1
                    order_log(order_id).info(
                        "order %s: outcome unknown after %s; reconciling",
                        order_id,
                        reason(failure),
                    )
                    await self._sleep(self._policy.delay(min(unknown_outcomes, 5), self._rng))
                    continue
                order = await self._after_failure(lease, order, failure)
                if order.is_terminal or order.status is OrderStatus.OPEN:
                    return order.status

    async def _attempt(self, lease: Lease, order: Order) -> Order:
        if order.status is OrderStatus.PENDING:
            # `routing` is written with the order's next change (the route chosen and its
            # signed swap, or a rest, an expiry, a failure), in the same statement, so a
            # fresh order costs one write and one round trip less. Nothing is signed before
            # that write, so a worker lost meanwhile leaves a pending order, handed over
            # again as if never started. Venues slower than ROUTING_WRITE_AFTER_S get
            # `routing` written while they answer, so that a client learns of it in time.
            # (Measured in an earlier version: writing `routing` while quoting *every* order
            # made p50 worse, 286 against 176 ms at 100/s: the orders of a batch fall out of
            # step, so later batches are smaller.)
            early = self._early.get(order.order_id)
            if early is not None and not _same_request(early[0], order):
                early = None  # never: an order's request does not change (execute drops it)
            start = Change(Trigger.START_ROUTING, attempt=1)
            at = early[2] if early is not None else self._now()  # when routing began
            started = order.apply(start, at)
            if started is None:  # never for a pending order; kept for the type checker
                raise IllegalTransition(f"order {order.order_id} cannot start routing")
            self._unwritten[order.order_id] = (order, start, at)
            order = started[0]
            await self._checkpoint("routing", order.order_id)
            quotes = await self._quotes_meanwhile(
                lease, order, self._early.pop(order.order_id)[1] if early is not None else None)
        else:
            order = await self._resumed(lease, order)
            quotes = await self._quotes(order)
        return await self._chosen(lease, order, quotes)

    async def _quotes_meanwhile(self, lease: Lease, order: Order,
                                quoting: asyncio.Future[list[Quote]] | None = None
                                ) -> list[Quote]:
        """Quote (or wait for `quoting`, asked for already); if the venues take longer than
        ROUTING_WRITE_AFTER_S, write the attempt's start meanwhile."""
        if quoting is None:
            quoting = asyncio.ensure_future(self._quotes(order))
        try:
            done, _ = await asyncio.wait({quoting}, timeout=ROUTING_WRITE_AFTER_S)
            if not done:
                await self._write_unwritten(lease, order.order_id)
            return await quoting
        finally:
            # Also when the quotes have failed already: their error is read, not left to be
            # logged as never retrieved.
            await cancel_and_wait(quoting)

    async def _write_unwritten(self, lease: Lease, order_id: str) -> None:
        """Write the change that started the order's attempt, if it is still unwritten."""
        unwritten = self._unwritten.pop(order_id, None)
        if unwritten is not None:
            stored, start, at = unwritten
            await self._one_change(lease, stored, start, at=at)

    async def _resumed(self, lease: Lease, order: Order) -> Order:
        if order.status is not OrderStatus.ROUTING:
            # Resumed after a crash between routing and sending: nothing was sent, so a
            # fresh attempt is safe (any signed-but-unsent swap is settled before this),
            # within the same attempt cap as every other retry.
            if order.attempt >= self._policy.max_attempts:
                message = f"interrupted during attempt {order.attempt} of" \
                          f" {self._policy.max_attempts}"
                # A resting order past the cap rests again (see _after_failure).
                raise RetryableError(message) if order.rests else TerminalError(message)
            order = await self._change(
                lease,
                order,
                Change(
                    Trigger.RETRY,
                    attempt=order.attempt + 1,
                    error="resumed after interruption",
                    error_class="retryable",
                ),
            )
        return order

    async def _quotes(self, order: Order) -> list[Quote]:
        # One wallet pays on every venue: an order it cannot pay for fails now, terminal,
        # before any retry.
        for gateway in list(self._gateways.values())[:1]:
            await gateway.check_funds(order.input_mint, order.amount_in)
        return await self._route(order)

    async def _chosen(self, lease: Lease, order: Order, quotes: list[Quote]) -> Order:
        best = choose_best(quotes)
        if best is None:  # _route raises before this; kept for the type checker
            raise NoRoute("no venue answered with a quote")
        if order.order_type is not OrderType.MARKET:
            unmet = await self._unmet(lease, order, best)
            if unmet is not None:
                return unmet
        if self._max_usd is not None and not (order.dry_run or self._dry_run):
            await self._check_notional(order, best)
        if order.expired(self._now()):  # checked last: nothing is signed after its time
            return await self._change(lease, order, Change(
                Trigger.EXPIRE, order.attempt, error="expired before a swap was built"))
        gateway = self._gateways[best.venue]
        self._guard(lease)  # never sign a new transaction unless this executor owns the order
        # Signed first, then the route chosen and the signed swap are written in one
        # statement: the order is `building` exactly when its transaction is on record, and
        # nothing is sent before that (a swap whose write is refused is never sent).
        try:
            swap = await gateway.build_swap(
                best,
                max(min_amount_out(best.amount_out, order.slippage_bps), self._limit_out(order)),
                memo=f"dexec:{order.order_id}:{order.attempt}",
            )
        except DexecError:
            # Nothing was signed; if the order fails for it, its record still names the route
            # it had chosen, as `building` would have (see _after_failure).
            self._unbuilt[order.order_id] = (best.venue, tuple(quotes))
            raise
        chosen = Change(Trigger.ROUTE_CHOSEN, order.attempt, venue=best.venue,
                        quotes=tuple(quotes))
        if order.dry_run or self._dry_run:  # simulated, never sent: nothing to record
            order = await self._change(lease, order, chosen)
            return await self._simulated(lease, order, best, swap)
        order = await self._change(lease, order, chosen, swap=swap)
        await self._checkpoint("signed", order.order_id)
        self._guard(lease)
        try:
            await gateway.send(swap)
        except BlockhashExpired:
            # Refused before it could land: this signature never will.
            await self._store.set_swap_status(swap.signature, SwapStatus.EXPIRED)
            raise
        except (RetryableError, OutcomeUnknownError) as err:
            # The bytes may or may not have reached the chain: settle will poll and resend.
            order_log(order.order_id).info(
                "order %s: send of %s failed (%s); will reconcile",
                order.order_id,
                swap.signature,
                err,
            )
        except DexecError:
            await self._store.set_swap_status(swap.signature, SwapStatus.REJECTED)
            raise
        await self._checkpoint("sent", order.order_id)
        return await self._settle(lease, order, swap, send_first=False)

    async def _unmet(self, lease: Lease, order: Order, best: Quote) -> Order | None:
        """For a limit or stop order: None when the best quote for its own amount meets its
        price; otherwise the order, rested again (expired, for ioc) with the quote it saw."""
        price = await self._price(order, best.amount_out)
        if price is None:  # the mint lookup failed for now
            raise RetryableError("the order's tokens have no known decimals yet: its price"
                                 " cannot be checked")
        # The limit is checked in base units, exactly as the swap's minimum output holds it.
        if order.accepts(price) and best.amount_out >= self._limit_out(order):
            return None
        wanted = (f"limit {order.limit_price}" if order.limit_price is not None
                  and (order.order_type is OrderType.LIMIT or order.triggered_at is not None)
                  else f"trigger {order.trigger_price}")
        if order.time_in_force is TimeInForce.IOC:
            return await self._change(lease, order, Change(
                Trigger.EXPIRE, order.attempt, observed=best, observed_price=price,
                error=f"ioc: the best price for this amount was {price}, short of the {wanted}"))
        return await self._change(lease, order, Change(
            Trigger.REST, order.attempt, observed=best, observed_price=price))

    def _limit_out(self, order: Order) -> int:
        """The least output a limit price allows (0: no limit, or decimals unknown)."""
        refs = (order.input_mint, order.output_mint)
        if order.limit_price is None or not all(self._tokens.knows(m) for m in refs):
            return 0
        return order.min_out_for_limit(self._tokens.by_mint(order.input_mint).decimals,
                                       self._tokens.by_mint(order.output_mint).decimals)

    async def _route(self, order: Order) -> list[Quote]:
        quotes, errors = await collect_quotes(
            list(self._gateways.values()),
            order.input_mint,
            order.output_mint,
            order.amount_in,
            self._quote_timeout,
        )
        for name, exc in errors.items():
            order_log(order.order_id).info("order %s: %s skipped: %s", order.order_id, name, exc)
        if quotes:
            return quotes
        detail = "; ".join(f"{n}: {reason(e)}" for n, e in errors.items())
        if errors and all(isinstance(e, TerminalError) for e in errors.values()):
            raise TerminalError(f"no venue can fill this order ({detail})")
        raise NoRoute(f"no venue answered with a quote ({detail})")

    async def _settle(self, lease: Lease, order: Order, swap: SignedSwap, *,
                      send_first: bool) -> Order:
        """Poll the signature until it lands or provably never will; resend the same bytes."""
        gateway = self._gateways[swap.venue]
        last_send = -self._resend_interval if send_first else self._clock()
        if order.status is not OrderStatus.SUBMITTED:
            # The first status lookup need not wait for `submitted` to be written (measured:
            # p50 130-210 against 190-259 ms at 100/s, two back-to-back pairs).
            sent = Change(Trigger.TX_SENT, order.attempt, venue=swap.venue,
                          signature=swap.signature)
            # The lookup starts first: when the venue answers it without a round trip (it
            # has the send's answer), the confirmation is asked for in this same turn of the
            # event loop, and joins the write batch that `submitted` starts.
            lookup = asyncio.ensure_future(self._first_lookup(lease, order, sent, swap, gateway))
            order, (status, confirmed) = await _alongside(self._change(lease, order, sent),
                                                          lookup)
            if confirmed is not None:
                return confirmed
        else:
            status = await self._status(gateway, swap.signature)
        while True:
            if status is not None and status.landed:
                return await self._landed(lease, order, swap, status)
            if status is None and await gateway.block_height() > swap.last_valid_block_height:
                # Expired: ask once more, since it may have landed just before expiry. Only a
                # real "unknown" answer proves absence; a failed lookup propagates, and the
                # caller reconciles this same signature again instead of signing anew. A
                # signature the cluster has seen but not confirmed is not absent: poll on.
                status = (await gateway.statuses([swap.signature]))[0]
                if status is not None and status.landed:
                    return await self._landed(lease, order, swap, status)
                if status is None:
                    await self._store.set_swap_status(swap.signature, SwapStatus.EXPIRED)
                    raise BlockhashExpired(
                        f"transaction {swap.signature} expired without landing")
            if self._clock() - last_send >= self._resend_interval:
                last_send = self._clock()
                try:
                    await gateway.send(swap)
                except DexecError as err:
                    # Whatever a resend says, the bytes sent before may still land: keep
                    # polling until they do or provably cannot (the expiry check decides).
                    order_log(order.order_id).info(
                        "order %s: resend failed: %s", order.order_id, reason(err)
                    )
            status = await self._next_status(gateway, swap.signature)

    async def _first_lookup(self, lease: Lease, order: Order, sent: Change, swap: SignedSwap,
                            gateway: VenueGateway) -> tuple[TxStatus | None, Order | None]:
        """Look the swap up while `submitted` is written; a swap that landed on arrival
        (the send answered its status) is confirmed at once, from the order as `submitted`
        leaves it, so both changes meet in one write batch and the store writes them as one
        statement. If `submitted` is refused, so is the confirmation (it expects the seq
        that write makes), and the caller raises the write's failure."""
        status = await self._status(gateway, swap.signature)
        if status is None or not status.landed or not status.confirmed:
            return status, None
        try:
            predicted = order.apply(sent, self._now())
        except DexecError:
            return status, None  # the write itself answers why
        if predicted is None:
            return status, None
        try:
            return status, await self._landed(lease, predicted[0], swap, status, chained=True)
        except LeaseLost:
            # Refused with `submitted` (the caller raises that write's failure), or because
            # `submitted` went in an earlier batch: then the caller confirms it as usual.
            return status, None

    async def _next_status(self, gateway: VenueGateway, signature: str) -> TxStatus | None:
        if self._landing is not None:
            return await self._landing.wait(gateway, signature, self._recheck)
        await self._sleep(self._poll)
        return await self._status(gateway, signature)

    async def _status(self, gateway: VenueGateway, signature: str) -> TxStatus | None:
        try:
            return (await gateway.statuses([signature]))[0]
        except RetryableError as err:
            log.info("status lookup for %s failed: %s", signature, err)
            return None

    async def _landed(self, lease: Lease, order: Order, swap: SignedSwap, status: TxStatus,
                      *, chained: bool = False) -> Order:
        if not status.confirmed:
            await self._store.set_swap_status(swap.signature, SwapStatus.FAILED)
            error_type = _CHAIN_ERRORS.get(status.error_code or "", TerminalError)
            raise error_type(status.error or "transaction failed", venue=swap.venue)
        price = await self._price(order, status.amount_out)
        # Both at once: a batching store writes them in one statement. If either fails, the
        # order is still SUBMITTED with its landed swap, and is reconciled by its signature.
        _, confirmed = await asyncio.gather(
            self._store.set_swap_status(swap.signature, SwapStatus.CONFIRMED),
            self._one_change(
                lease,
                order,
                Change(
                    Trigger.TX_CONFIRMED,
                    order.attempt,
                    venue=swap.venue,
                    signature=swap.signature,
                    amount_out=status.amount_out,
                    price=price,
                ),
                chained=chained,
            ),
        )
        return confirmed

    async def _price(self, order: Order, amount_out: int) -> Decimal | None:
        """Output per input in token units; None when a token's decimals cannot be known
        (a mint on no list that the chain no longer has): a landed swap is recorded all the
        same, never held back for its price."""
        try:
            return await token_price(self._tokens, self._mints, order.input_mint,
                                     order.output_mint, order.amount_in, amount_out)
        except DexecError as exc:
            order_log(order.order_id).info("order %s: no decimals for its price (%s)",
                                           order.order_id, reason(exc))
            return None

    async def _check_notional(self, order: Order, best: Quote) -> None:
        """Refuse an order worth more than DEXEC_MAX_ORDER_USD. Its worth: the input when it
        is a stablecoin; otherwise the input priced before price impact (a thousandth of it
        quoted for a stablecoin, scaled up) or the quoted stablecoin output, the larger: a
        drained or thin pool must not make a large order look small."""
        if not self._usd:
            raise LimitExceeded("DEXEC_MAX_ORDER_USD is set but this network has no stablecoin")
        if order.input_mint in self._usd:
            # Stablecoins are on the network's list: their decimals need no lookup.
            usd = Decimal(order.amount_in).scaleb(-self._tokens.by_mint(order.input_mint).decimals)
        else:
            stable = order.output_mint if order.output_mint in self._usd else self._usd[0]
            sample = max(order.amount_in // 1000, min(order.amount_in, 10**6))
            priced = await self._sample_price(order.input_mint, stable, sample)
            out = priced * order.amount_in // sample
            if stable == order.output_mint:
                out = max(out, best.amount_out)
            usd = Decimal(out).scaleb(-self._tokens.by_mint(stable).decimals)
        if self._max_usd is not None and usd > self._max_usd:
            raise LimitExceeded(f"the order is worth about {usd:.2f} USD; the per-order cap is"
                                f" {self._max_usd} USD (DEXEC_MAX_ORDER_USD)")

    async def _sample_price(self, mint: str, stable: str, sample: int) -> int:
        """What `sample` of `mint` fetches in `stable`: quoted directly, or through SOL when
        no venue has a direct pool (venues quote one hop)."""
        async def best(a: str, b: str, amount: int) -> int:
            quotes, _ = await collect_quotes(list(self._gateways.values()), a, b, amount,
                                             self._quote_timeout)
            found = choose_best(quotes)
            return found.amount_out if found is not None else 0

        out = await best(mint, stable, sample)
        sol = self._tokens.resolve("SOL").mint
        if out <= 0 and mint != sol and (through := await best(mint, sol, sample)) > 0:
            out = await best(sol, stable, through)
        if out <= 0:
            raise NoRoute("the order cannot be priced in USD for DEXEC_MAX_ORDER_USD")
        return out

    async def _simulated(self, lease: Lease, order: Order, best: Quote, swap: SignedSwap,
                         ) -> Order:
        """A dry run: the signed swap is simulated, never sent (nor recorded: nothing of it
        can land). It ends `simulated` with the quote's output, or fails as a send would."""
        await self._gateways[best.venue].simulate(swap)
        return await self._change(lease, order, Change(
            Trigger.TX_SIMULATED, order.attempt, venue=best.venue, amount_out=best.amount_out,
            price=await self._price(order, best.amount_out)))

    async def _after_failure(self, lease: Lease, order: Order, err: DexecError) -> Order:
        venue, quotes = self._unbuilt.pop(order.order_id, (None, None))
        current = await self._store.get_order(order.order_id) or order
        if current.is_terminal or current.status is OrderStatus.OPEN:
            return current  # ended, or rested already (an answer lost after its commit)
        # A resting order never fails for its price or for a venue's bad moment: a swap refused
        # for slippage met a price below its limit, and a retryable error past the attempt
        # cap leaves it waiting for its price again, as it was before it was set off.
        if current.rests and (isinstance(err, SlippageExceeded) or (
                err.retryable and not self._policy.should_retry(err, current.attempt))):
            return await self._rest_after(lease, current, err)
        if self._policy.should_retry(err, current.attempt):
            delay = self._policy.delay(current.attempt, self._rng)
            order_log(order.order_id).info(
                "order %s: attempt %d failed (%s); retrying in %.2fs",
                order.order_id,
                current.attempt,
                err,
                delay,
            )
            await self._sleep(delay)
            return await self._change(
                lease,
                current,
                Change(
                    Trigger.RETRY,
                    current.attempt + 1,
                    error=reason(err),
                    error_class=str(err.error_class),
                ),
            )
        order_log(order.order_id).info("order %s failed: %s", order.order_id, err)
        return await self._change(
            lease,
            current,
            Change(
                Trigger.FAIL, current.attempt, error=reason(err), error_class=str(err.error_class),
                venue=venue, quotes=quotes,
            ),
        )

    async def _rest_after(self, lease: Lease, order: Order, err: DexecError) -> Order:
        order_log(order.order_id).info("order %s: %s; resting again", order.order_id, err)
        if order.status is not OrderStatus.ROUTING:  # nothing of this attempt can land now
            order = await self._change(lease, order, Change(
                Trigger.RETRY, order.attempt + 1, error=reason(err),
                error_class=str(err.error_class)))
        return await self._change(lease, order, Change(
            Trigger.REST, order.attempt, error=reason(err), error_class=str(err.error_class)))

    async def _unsettled_swap(self, order: Order) -> SignedSwap | None:
        """Return the current attempt's signed swap whose outcome is not applied yet.

        While one exists the order must be reconciled by that signature; only a swap that
        expired unlanded or was refused outright lets a new attempt sign anew.
        """
        # Only BUILDING and SUBMITTED can hold one: ROUTE_CHOSEN precedes every signature,
        # and a RETRY (to ROUTING) starts a new attempt. Skipping the read elsewhere saves a
        # round trip per attempt on the hot path.
        if order.status not in (OrderStatus.BUILDING, OrderStatus.SUBMITTED):
            return None
        for swap, attempt, status in reversed(await self._store.swaps_for_order(order.order_id)):
            if attempt == order.attempt:
                return swap if status in _OUTCOME_PENDING else None
        return None

    async def _change(self, lease: Lease, order: Order, change: Change, *,
                      swap: SignedSwap | None = None) -> Order:
        unwritten = self._unwritten.pop(order.order_id, None)
        if unwritten is None:
            return await self._one_change(lease, order, change, swap=swap)
        # The attempt's start, not written yet, goes with this change: asked for together,
        # they meet in one write batch, which the store writes as one statement (`order`
        # is the order as that start leaves it). If the start is refused, so is this.
        stored, start, at = unwritten
        started, updated = await asyncio.gather(
            self._one_change(lease, stored, start, at=at),
            self._one_change(lease, order, change, swap=swap, chained=True),
            return_exceptions=True)
        if isinstance(started, BaseException):
            raise started  # this change, made from it, was refused with it
        if isinstance(updated, LeaseLost):
            # The start went in an earlier batch (a batch split, or items retried one by
            # one), so this one was refused: ask again, from the order as written.
            return await self._one_change(lease, started, change, swap=swap)
        if isinstance(updated, BaseException):
            raise updated
        return updated

    async def _one_change(self, lease: Lease, order: Order, change: Change, *,
                          swap: SignedSwap | None = None, at: datetime | None = None,
                          chained: bool = False) -> Order:
        self._guard(lease)
        # This executor's copy is the order as stored (it holds the lease and made every
        # change since it read it), or with `chained` as the change asked for just before
        # leaves it, so the store need not read it again to apply the change.
        result = await self._store.apply_change(order.order_id, change, epoch=lease.epoch,
                                                expected=order, swap=swap, at=at,
                                                chained=chained)
        if result is None and swap is not None:
            # A repeat writes nothing, so the swap is not on record: it must never be sent.
            raise IllegalTransition(f"order {order.order_id} was already {order.status}:"
                                    f" swap {swap.signature} not recorded")
        if result is None:
            return await self._store.get_order(order.order_id) or order
        updated, event = result
        self._events.publish(event)
        self._report(order, updated, change)
        return updated

    def _report(self, before: Order, after: Order, change: Change) -> None:
        # The time spent in the status just left; "pending" is the queue wait.
        self._metrics.stage(
            str(before.status), (after.updated_at - before.updated_at).total_seconds()
        )
        if change.trigger is Trigger.RETRY:
            self._metrics.retry(change.error_class or "unknown")
        if after.is_terminal:
            self._metrics.order_finished(
                str(after.status),
                after.venue or "none",
                (after.updated_at - after.created_at).total_seconds(),
            )
