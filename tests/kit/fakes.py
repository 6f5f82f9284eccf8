"""Fakes of the engine's ports that several test modules share."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from fractions import Fraction
from typing import Any

from actors.wire import WireServer
from core.errors import BlockhashExpired, InsufficientFunds, NoRoute
from core.quotes import Quote, SignedSwap, TxStatus
from tests.kit.clock import FakeClock

# The toy chain behind FakeVenue: its height counts blocks of the clock's time.
START_HEIGHT = 1_000
BLOCK_TIME_S = 0.4
VALID_BLOCKS = 150

Call = tuple[str, ...]  # what a fake was asked, in the order it was asked: ("send", signature)


class ActorMethod:
    """One method of a fake actor handle: `.remote(...)` records the call and answers
    through `answer` (an async function), as a Ray actor method's `.remote` would."""

    def __init__(self, answer: Callable[..., Awaitable[Any]]) -> None:
        self.answer = answer
        self.calls: list[tuple[Any, ...]] = []

    def remote(self, *args: Any) -> Awaitable[Any]:
        self.calls.append(args)
        return self.answer(*args)


class FakeWire:
    """A fake actor's loopback wire: the named ActorMethods of `owner` served on a real
    WireServer from the first `address` call (its `wire_address`), each call over it
    recorded in `served`."""

    def __init__(self, owner: Any, node: str, methods: Iterable[str]) -> None:
        self._owner = owner
        self._node = node
        self._methods = tuple(methods)
        self.served: list[str] = []
        self.server: WireServer | None = None
        self._port = 0
        self._token = b""

    async def address(self) -> tuple[str, int, bytes]:
        if self.server is None:
            def serving(name: str, method: ActorMethod) -> Callable[..., Awaitable[Any]]:
                async def serve(*args: Any) -> Any:
                    self.served.append(name)
                    return await method.answer(*args)
                return serve

            self._token = secrets.token_bytes(32)
            self.server = WireServer({name: serving(name, getattr(self._owner, name))
                                      for name in self._methods}, self._token)
            self._port = await self.server.start()
        return self._node, self._port, self._token

    async def close(self) -> None:
        """The actor's process is gone: its wire closes; the next address is a new one."""
        if self.server is not None:
            await self.server.close()
            self.server = None


class FakeVenue:
    """A VenueGateway over a toy chain: sent bytes land at once unless told otherwise."""

    def __init__(self, name: str, amount_out: int, calls: list[Call], clock: FakeClock) -> None:
        self.name = name
        self.amount_out = amount_out
        self.calls = calls
        self.clock = clock
        self.per_input: Fraction | None = None  # set: quotes pay this per input unit instead
        self.quote_failures: list[Exception] = []  # raised by the next quote calls
        self.always_fail_quote: Exception | None = None
        self.no_pool: set[tuple[str, str]] = set()  # (input, output) pairs it cannot quote
        self.build_failures: list[Exception] = []
        self.simulate_failures: list[Exception] = []
        self.send_failures: list[Exception] = []  # raised by the next send calls
        self.land_despite_send_failure = False  # the bytes reached the chain anyway
        self.chain_error: tuple[str, str] | None = None  # (message, error_code) of a failed tx
        self.never_land_next_builds = 0  # these swaps are never executed, however often sent
        self.refuse_as_expired: set[str] = set()  # send says the blockhash expired
        self.height_failures: list[Exception] = []  # raised by the next block_height calls
        self.land_after_polls = 0  # accepted swaps become visible after this many polls
        self.in_flight: dict[str, tuple[SignedSwap, int]] = {}  # accepted, polls to go
        self.built: list[tuple[SignedSwap, str]] = []
        self.sent: list[str] = []
        self.landed: dict[str, TxStatus] = {}
        self._doomed: set[str] = set()
        self.funds: int | None = None  # the wallet's balance of any input; None: unlimited
        # Seen but unconfirmed for this many status calls, then landing (a slow confirmation).
        self.pending_polls: dict[str, int] = {}
        self.pending_swaps: dict[str, SignedSwap] = {}
        self.funds_checked = 0

    def height(self) -> int:
        return START_HEIGHT + int(self.clock.now / BLOCK_TIME_S)

    async def quote(self, input_mint: str, output_mint: str, amount_in: int) -> Quote:
        self.calls.append(("quote", self.name))
        if self.quote_failures:
            raise self.quote_failures.pop(0)
        if self.always_fail_quote is not None:
            raise self.always_fail_quote
        if (input_mint, output_mint) in self.no_pool:
            raise NoRoute(f"{self.name} has no pool for this pair", venue=self.name)
        return Quote(
            venue=self.name, pool=f"{self.name}-pool", input_mint=input_mint,
            output_mint=output_mint, amount_in=amount_in,
            amount_out=self.amount_out if self.per_input is None
            else int(amount_in * self.per_input),
            fee=amount_in // 400, fee_bps=Decimal(25), price_impact_bps=2,
            payload=f"route:{self.name}",
        )

    async def check_funds(self, input_mint: str, amount_in: int) -> None:
        self.funds_checked += 1  # not in `calls`: those list the venue traffic
        if self.funds is not None and amount_in > self.funds:
            raise InsufficientFunds(f"the wallet holds {self.funds}, the order needs {amount_in}")

    async def build_swap(self, quote: Quote, min_amount_out: int, memo: str) -> SignedSwap:
        self.calls.append(("build_swap", self.name))
        if self.build_failures:
            raise self.build_failures.pop(0)
        assert quote.venue == self.name
        assert quote.payload == f"route:{self.name}"
        signature = f"{self.name}-sig-{len(self.built) + 1}"
        swap = SignedSwap(self.name, signature, f"{signature}|{memo}".encode(),
                          self.height() + VALID_BLOCKS, min_amount_out)
        self.built.append((swap, memo))
        if self.never_land_next_builds > 0:
            self.never_land_next_builds -= 1
            self._doomed.add(signature)
        return swap

    async def simulate(self, swap: SignedSwap) -> None:
        self.calls.append(("simulate", swap.signature))
        if self.simulate_failures:
            raise self.simulate_failures.pop(0)

    async def send(self, swap: SignedSwap) -> None:
        self.calls.append(("send", swap.signature))
        self.sent.append(swap.signature)
        if swap.signature in self.refuse_as_expired:
            raise BlockhashExpired("blockhash not found", venue=self.name)
        if self.send_failures:
            error = self.send_failures.pop(0)
            if self.land_despite_send_failure:
                self._land(swap)
            raise error
        self._land(swap)

    def _land(self, swap: SignedSwap) -> None:
        if swap.signature in self.landed or swap.signature in self._doomed:
            return  # the same bytes execute once
        if swap.signature in self.in_flight:
            return
        if self.land_after_polls:
            self.in_flight[swap.signature] = (swap, self.land_after_polls)
            return
        self.execute_swap(swap)

    def execute_swap(self, swap: SignedSwap) -> None:
        if self.height() > swap.last_valid_block_height:
            return
        if self.chain_error is not None:
            message, code = self.chain_error
            status = TxStatus(swap.signature, False, self.height(), 0, message, code)
        else:
            status = TxStatus(swap.signature, True, self.height(), self.amount_out)
        self.landed[swap.signature] = status

    async def statuses(self, signatures: list[str]) -> list[TxStatus | None]:
        self.calls.append(("statuses", *signatures))
        for signature, (swap, polls) in list(self.in_flight.items()):
            if polls <= 1:
                del self.in_flight[signature]
                self.execute_swap(swap)
            else:
                self.in_flight[signature] = (swap, polls - 1)
        answers: list[TxStatus | None] = []
        for s in signatures:
            polls = self.pending_polls.get(s, 0)
            if polls > 0 and s not in self.landed:  # seen at `processed`, not confirmed yet
                self.pending_polls[s] = polls - 1
                if polls == 1:  # it was in a block before expiry: it confirms, however late
                    self.pending_polls.pop(s)
                    self.pending_swaps.pop(s)
                    self.landed[s] = TxStatus(s, True, self.height(), self.amount_out)
                answers.append(TxStatus(s, False, self.height(), pending=True))
            else:
                answers.append(self.landed.get(s))
        return answers

    def executed(self) -> list[str]:
        """Return the signatures that executed a swap, once everything in flight landed."""
        for swap, _ in list(self.in_flight.values()):
            del self.in_flight[swap.signature]
            self.execute_swap(swap)
        return [s for s, status in self.landed.items() if status.confirmed]

    async def block_height(self) -> int:
        if self.height_failures:
            raise self.height_failures.pop(0)
        return self.height()


class SlowVenue(FakeVenue):
    """A venue whose quotes never come back."""

    async def quote(self, input_mint: str, output_mint: str, amount_in: int) -> Quote:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
